"""Decoding sweeps and generation throughput for Qwen3.5: the wavesweep ``run(params, ctx)``.

Two modes:

- ``decode`` (default): generate answers for ``n_eval`` examples of a data set with the given decoding settings
  (greedy, or sampling with temperature / top-p / top-k, and an OpenAI-style presence penalty) and score them with
  ``data.exact_match``. Greedy decoding (``temperature: 0``) ignores top-p and top-k; the presence penalty applies
  to both. Writes ``predictions.jsonl`` into ``ctx.artifact_dir`` when the run has one.
- ``throughput``: time fixed-length generation from synthetic prompts, batch by batch.

The model is a base model (``model``: a tiny size name, a local directory or a hub id, see ``models.py``),
optionally with ``adapter``: a directory holding either

- a PEFT LoRA adapter (``adapter_config.json``, as ``PeftModel.save_pretrained`` writes it), applied on top of the
  base model and removed again (never merged) after the run, so that a warm base model can serve the next run; or
- a full saved model (``config.json`` and safetensors, from full fine-tuning), which then replaces the base model:
  it is loaded fresh in every run, since the warm cache holds base models only.

Either way the tokenizer is the base model's: a fine-tuning run need not save one.

A tiny base model is randomly initialised from ``base_seed`` (default: ``seed``). Its LoRA adapter only fits the
base it was trained on, so evaluating a tiny fine-tuning run's adapter needs that run's seed as ``base_seed``.

The params and their checks are ``inference_params.py``'s; getting the model (warm base, adapter, full model) and
handing the base back is ``inference_model.py``'s. Generation, scoring and timing stay here.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from orchestrator.context import RunContext

from .data import IGNORE_INDEX, encode_for_training, encode_prompts, exact_match, load_examples
from .device import run_device
from .inference_model import Opened, opened_model
from .inference_params import PARAMS as PARAMS  # orchestrator.spec checks specs against the PARAMS of run's module
from .inference_params import resolve_params
from .memory import peak_memory_mb, reset_peak_memory, synchronize

# Fixed, so that every run of a study is scored on the same questions whatever its (sampling) seed. With the
# synthetic tasks' test split this is finetune.py's eval set.
DATA_SEED = 0
WARMUP_BATCHES = 1  # throughput: batches run first and not timed (allocator, caches, lazy initialisation)
PREDICTIONS_FILE = "predictions.jsonl"


def run(params: dict, ctx: RunContext) -> dict[str, float]:
    """Decode and score (``mode: decode``) or time generation (``mode: throughput``); see the module docstring.

    ``params`` override ``COMMON`` and the mode's defaults (``DECODE`` or ``THROUGHPUT``, in ``inference_params``);
    an unknown name, a parameter of the other mode or a bad value raises ``ValueError``.

    decode returns ``exact_match``, ``mean_new_tokens`` (per example, up to and including its EOS),
    ``tokens_per_s`` (those tokens per second inside ``generate``, over the batches after the first, which carries
    the start-up: CUDA context, kernel compilation) and ``peak_mem_mb``, and reports
    ``exact_match_so_far`` after every batch (step: the number of batches done). throughput returns ``tokens_per_s``
    (every generated token, all rows being the same length), ``latency_p50_s`` and ``latency_p95_s`` (per batch) and
    ``peak_mem_mb`` (see ``memory.peak_memory_mb``). Both add ``load_s`` (seconds to get the model and adapter in this
    run), ``warm`` (true when the base model came from the warm cache without loading) and ``fast_kernels`` (how many of
    the four Gated DeltaNet kernels run fused on this device: ``kernels.fused_kernels``; 0 on the CPU).
    """
    device = run_device(ctx)
    p = resolve_params(params, ctx.seed, device)
    torch.set_num_threads(ctx.num_cpus)
    with opened_model(p, ctx, device) as opened:
        measure = _decode if p["mode"] == "decode" else _throughput
        metrics = measure(opened, p, ctx)
    return {
        **metrics,
        "load_s": opened.load_s,
        "warm": bool(opened.warm),
        "fast_kernels": float(opened.fast_kernels),
    }


# --- decode ------------------------------------------------------------------------------------------------------


class PresencePenaltyLogitsProcessor(LogitsProcessor):
    """Subtracts ``penalty`` from the logit of every token that already occurs in a row's generated part.

    OpenAI's and vLLM's presence penalty: once per token however often it occurs (unlike a frequency penalty), and
    the prompt does not count (unlike transformers' multiplicative ``repetition_penalty``). A negative penalty
    favours repeats. Listed as a custom processor, it acts on the raw logits, before temperature, top-k and top-p,
    which is where vLLM applies its penalties too.
    """

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty = penalty
        self.prompt_len = prompt_len  # the prompts' padded width: generated tokens start there in every row

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len :]
        present = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return torch.where(present, scores - self.penalty, scores)


def _decode(opened: Opened, p: dict, ctx: RunContext) -> dict[str, float]:
    tokenizer, device = opened.tokenizer, opened.device
    examples = load_examples(
        p["dataset"], split=p["split"], limit=p["n_eval"], seed=DATA_SEED, config=p["dataset_config"]
    )
    if not examples:
        raise ValueError(f"param 'dataset': {p['dataset']!r} (split {p['split']!r}) has no examples")
    max_new_tokens = p["max_new_tokens"] or _reference_budget(tokenizer, examples, p["chat"], p["enable_thinking"])
    config = _decoding_config(p, max_new_tokens, tokenizer)
    eos_ids = _eos_ids(opened.network, tokenizer)

    reset_peak_memory(device)
    # After loading: a tiny model's initialisation reseeds torch, and a warm run skips it, so only seeding here gives
    # a warm run the samples of a cold one.
    torch.manual_seed(p["seed"])
    records, seconds, timed_tokens = [], 0.0, 0
    batches = range(0, len(examples), p["batch_size"])
    for index, start in enumerate(batches, start=1):
        chunk = examples[start : start + p["batch_size"]]
        batch = encode_prompts(
            tokenizer, [e["question"] for e in chunk], chat=p["chat"], enable_thinking=p["enable_thinking"]
        )
        new_tokens, elapsed = _generate(opened.network, batch, config, _penalty(p, batch), device)
        chunk_records = [_record(example, row, eos_ids, tokenizer) for example, row in zip(chunk, new_tokens)]
        records += chunk_records
        if index > 1 or len(batches) == 1:  # the first batch carries the start-up, unless it is the only one
            seconds += elapsed
            timed_tokens += sum(r["new_tokens"] for r in chunk_records)
        ctx.report(index, exact_match_so_far=sum(r["correct"] for r in records) / len(records))
    _save_predictions(ctx.artifact_dir, records)
    generated = sum(r["new_tokens"] for r in records)
    return {
        "exact_match": sum(r["correct"] for r in records) / len(records),
        "mean_new_tokens": generated / len(records),
        "tokens_per_s": timed_tokens / seconds,
        "peak_mem_mb": peak_memory_mb(device),
    }


def greedy_exact_match(
    network: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, str]],
    *,
    chat: bool,
    enable_thinking: bool,
    batch_size: int,
    device: str,
) -> float:
    """Exact match of greedy answers under the decode mode's settings at ``temperature: 0`` (its token budget, its
    EOS ids, its pinned repetition penalty). Fine-tuning scores with this, so a fine-tuning run's ``exact_match`` and
    a decode run of the model it saved agree."""
    config = _decoding_config({"temperature": 0.0}, _reference_budget(tokenizer, examples, chat, enable_thinking),
                              tokenizer)
    eos_ids = _eos_ids(network, tokenizer)
    correct = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = encode_prompts(tokenizer, [e["question"] for e in chunk], chat=chat, enable_thinking=enable_thinking)
        new_tokens, _ = _generate(network, batch, config, None, device)
        correct += sum(_record(e, row, eos_ids, tokenizer)["correct"] for e, row in zip(chunk, new_tokens))
    return correct / len(examples)


def _reference_budget(
    tokenizer: PreTrainedTokenizerBase, examples: list[dict[str, str]], chat: bool, enable_thinking: bool
) -> int:
    """Tokens for the longest reference completion: its answer, what the chat template writes after it, and EOS
    (exactly what ``encode_for_training`` labels)."""
    labels = encode_for_training(tokenizer, examples, chat=chat, enable_thinking=enable_thinking)["labels"]
    return int((labels != IGNORE_INDEX).sum(dim=1).max())


def _decoding_config(p: dict, max_new_tokens: int, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """The sweep's decoding settings. ``generate`` fills what is left unset from the checkpoint's generation config,
    so everything that would change the tokens is set here: a released checkpoint's recommended sampling
    (temperature, top-k, top-p, repetition penalty) must not leak into the cells of a sweep. Its EOS ids do come
    from there: a chat model stops at the end of its turn, which the tokenizer's EOS need not be."""
    settings = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "repetition_penalty": 1.0,
        "do_sample": p["temperature"] > 0,
    }
    if settings["do_sample"]:
        # Greedy decoding ignores these; setting them for it only draws transformers' "flags ignored" warning.
        settings.update(temperature=p["temperature"], top_p=p["top_p"], top_k=p["top_k"], min_p=0.0)
    return GenerationConfig(**settings)


def _penalty(p: dict, batch: dict[str, torch.Tensor]) -> LogitsProcessorList | None:
    if not p["presence_penalty"]:
        return None
    return LogitsProcessorList([PresencePenaltyLogitsProcessor(p["presence_penalty"], batch["input_ids"].shape[1])])


def _generate(
    network: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: GenerationConfig,
    processors: LogitsProcessorList | None,
    device: str,
) -> tuple[torch.Tensor, float]:
    """The generated part of every row (EOS and padding after it included), and the seconds it took."""
    inputs = {name: tensor.to(device) for name, tensor in batch.items()}
    synchronize(device)
    started = time.perf_counter()
    with torch.no_grad():
        output = network.generate(**inputs, generation_config=config, logits_processor=processors)
    synchronize(device)
    return output[:, inputs["input_ids"].shape[1] :].cpu(), time.perf_counter() - started


def _eos_ids(network: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos = network.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos)


def _record(
    example: dict[str, str], row: torch.Tensor, eos_ids: list[int], tokenizer: PreTrainedTokenizerBase
) -> dict:
    # A row that ends early is padded up to the longest; its tokens are those up to and including its first EOS.
    ends = torch.isin(row, torch.tensor(eos_ids)).nonzero()
    count = int(ends[0, 0]) + 1 if len(ends) else len(row)
    prediction = tokenizer.decode(row[:count], skip_special_tokens=True)
    return {
        "question": example["question"],
        "reference": example["answer"],
        "prediction": prediction,
        "correct": exact_match(prediction, example["answer"]),
        "new_tokens": count,
    }


def _save_predictions(artifact_dir: str, records: list[dict]) -> None:
    if not artifact_dir:
        return
    os.makedirs(artifact_dir, exist_ok=True)
    with open(os.path.join(artifact_dir, PREDICTIONS_FILE), "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")


# --- throughput --------------------------------------------------------------------------------------------------


def _throughput(opened: Opened, p: dict, ctx: RunContext) -> dict[str, float]:
    device, new_tokens = opened.device, p["max_new_tokens"]
    # Random token ids: what the prompts say does not change the cost of generating from them.
    vocab = min(len(opened.tokenizer), opened.network.config.vocab_size)
    generator = torch.Generator().manual_seed(p["seed"])
    input_ids = torch.randint(vocab, (p["batch_size"], p["prompt_len"]), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    # Greedy, and at least as many tokens as at most: every batch does the same work, EOS or not.
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        repetition_penalty=1.0,
        pad_token_id=opened.tokenizer.pad_token_id,
    )
    for _ in range(WARMUP_BATCHES):
        _generate(opened.network, batch, config, None, device)
    reset_peak_memory(device)
    latencies, tokens = [], 0
    for _ in range(p["n_batches"]):
        generated, seconds = _generate(opened.network, batch, config, None, device)
        latencies.append(seconds)
        tokens += generated.numel()
    return {
        "tokens_per_s": tokens / sum(latencies),
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "peak_mem_mb": peak_memory_mb(device),
    }
