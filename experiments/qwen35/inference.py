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
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoTokenizer, GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from orchestrator.context import RunContext

from .device import run_device
from .lora import loadable_adapter
from .data import IGNORE_INDEX, encode_for_training, encode_prompts, exact_match, load_examples
from .models import (
    LoadedModel,
    load_model_and_tokenizer,
    peak_memory_mb,
    reset_peak_memory,
    resolve_dtype,
    synchronize,
    warm_cache,
)
from .params import Param
from .params import resolve_params as resolve_params_of
from .tiny import SIZES, build_tokenizer

MODES = ("decode", "throughput")
COMMON = {
    "mode": Param("decode", str, "decode | throughput", choices=MODES),
    "model": Param("tiny", str, "a tiny size name, a local directory or a hub id"),
    "dtype": Param("auto", str, "auto: bfloat16 on CUDA and Apple GPUs, float32 on CPU"),
    "seed": Param(None, int, "sampling and synthetic-prompt seed; default: the run's seed"),
    "base_seed": Param(None, int, "initialisation of a tiny base model; default: seed"),
    "adapter": Param(None, str, "a LoRA adapter or full saved model directory (e.g. store:<study>:best)"),
    "batch_size": Param(16, int, "prompts per generate call", low=1),
    "max_new_tokens": Param(None, int, "decode: default from the reference answers; throughput: 64", low=1),
}
DECODE = {
    "dataset": Param("arithmetic", str, "synthetic task, HF datasets id, local .jsonl or directory"),
    "dataset_config": Param(None, str, "HF datasets config"),
    "split": Param("test", str, "split to evaluate on"),
    "n_eval": Param(64, int, "questions", low=1),
    "chat": Param(None, bool, "chat template; default off for tiny models (trained without it), on otherwise"),
    "enable_thinking": Param(False, bool, "Qwen3.5 thinking block in the chat template"),
    "temperature": Param(0.0, float, "0: greedy", low=0.0),
    "top_p": Param(1.0, float, "nucleus sampling", low=0.0, low_open=True, high=1.0, high_closed=True),
    "top_k": Param(0, int, "0: off", low=0),
    # OpenAI's and vLLM's range.
    "presence_penalty": Param(0.0, float, "subtracted from the logits of tokens already generated",
                              low=-2.0, high=2.0, high_closed=True),
}
THROUGHPUT = {
    "prompt_len": Param(32, int, "tokens per synthetic prompt", low=1),
    "n_batches": Param(5, int, "timed batches, after one warm-up batch", low=1),
}
PARAMS_OF_MODE = {"decode": DECODE, "throughput": THROUGHPUT}
PARAMS = {**COMMON, **DECODE, **THROUGHPUT}  # every name a spec may give (each mode takes its own and COMMON)
THROUGHPUT_NEW_TOKENS = 64
# Fixed, so that every run of a study is scored on the same questions whatever its (sampling) seed. With the
# synthetic tasks' test split this is finetune.py's eval set.
DATA_SEED = 0
WARMUP_BATCHES = 1  # throughput: batches run first and not timed (allocator, caches, lazy initialisation)
# A full saved model's files, linked into the directory it is loaded from (see _load_full_model).
MODEL_FILES = ("config.json", "generation_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
PREDICTIONS_FILE = "predictions.jsonl"


def run(params: dict, ctx: RunContext) -> dict[str, float]:
    """Decode and score (``mode: decode``) or time generation (``mode: throughput``); see the module docstring.

    ``params`` override ``COMMON`` and the mode's defaults (``DECODE`` or ``THROUGHPUT``); an unknown name, a
    parameter of the other mode or a bad value raises ``ValueError``.

    decode returns ``exact_match``, ``mean_new_tokens`` (per example, up to and including its EOS),
    ``tokens_per_s`` (those tokens per second inside ``generate``, over the batches after the first, which carries
    the start-up: CUDA context, kernel compilation) and ``peak_mem_mb``, and reports
    ``exact_match_so_far`` after every batch (step: the number of batches done). throughput returns ``tokens_per_s``
    (every generated token, all rows being the same length), ``latency_p50_s`` and ``latency_p95_s`` (per batch) and
    ``peak_mem_mb`` (see ``models.peak_memory_mb``). Both add ``load_s`` (seconds to get the model and adapter in this
    run), ``warm`` (true when the base model came from the warm cache without loading) and ``fast_kernels`` (how many of
    the four Gated DeltaNet kernels run fused on this device: ``kernels.fused_kernels``; 0 on the CPU).
    """
    device = run_device(ctx)
    p = resolve_params(params, ctx.seed, device)
    torch.set_num_threads(ctx.num_cpus)
    with _opened_model(p, ctx, device) as opened:
        measure = _decode if p["mode"] == "decode" else _throughput
        metrics = measure(opened, p, ctx)
    return {
        **metrics,
        "load_s": opened.load_s,
        "warm": bool(opened.warm),
        "fast_kernels": float(opened.fast_kernels),
    }


# --- params ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    path: str  # absolute
    kind: Literal["lora", "full"]


def resolve_params(params: dict, ctx_seed: int, device: str) -> dict:
    """``params`` over the defaults of their mode, validated and coerced (see ``params.py``); ``adapter`` becomes
    an ``Adapter`` (or stays None)."""
    mode = resolve_params_of({"mode": params.get("mode", "decode")}, {"mode": COMMON["mode"]}, seed=ctx_seed)["mode"]
    # A parameter of the other mode would be ignored: a sweep over it would repeat one measurement.
    misplaced = sorted(set(params) & (set(PARAMS) - set(COMMON) - set(PARAMS_OF_MODE[mode])))
    if misplaced:
        raise ValueError(f"param(s) {', '.join(map(repr, misplaced))} do not apply to mode {mode!r}")
    p = resolve_params_of(params, {**COMMON, **PARAMS_OF_MODE[mode]}, seed=ctx_seed)
    resolve_dtype(p["dtype"], device)  # raises for a bad dtype, naming the param
    p["base_seed"] = p["seed"] if p["base_seed"] is None else p["base_seed"]
    p["adapter"] = None if p["adapter"] is None else _adapter(p["adapter"])
    if mode == "throughput":
        p["max_new_tokens"] = p["max_new_tokens"] or THROUGHPUT_NEW_TOKENS
        return p
    if p["chat"] is None:
        p["chat"] = p["model"] not in SIZES
    if p["enable_thinking"] and p["max_new_tokens"] is None:
        raise ValueError(
            "param 'max_new_tokens' must be given with enable_thinking: its default, from the reference answers, "
            "leaves no room for the reasoning"
        )
    return p


def _adapter(value: str) -> Adapter:
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isdir(path):
        hint = " (store: references are resolved by the driver)" if str(value).startswith("store:") else ""
        raise FileNotFoundError(f"param 'adapter': {value!r} is not a directory{hint}")
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        return Adapter(path, "lora")
    if os.path.isfile(os.path.join(path, "config.json")):
        return Adapter(path, "full")
    raise ValueError(
        f"param 'adapter': {path} holds neither a PEFT adapter (adapter_config.json) nor a saved model "
        f"(config.json); it holds: {', '.join(sorted(os.listdir(path))) or 'nothing'}"
    )


# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    network: torch.nn.Module  # the base model, the PeftModel around it, or a full fine-tuned model
    tokenizer: PreTrainedTokenizerBase
    load_s: float
    warm: bool
    fast_kernels: int
    device: str  # where the run computes (device.run_device)


@contextmanager
def _opened_model(p: dict, ctx: RunContext, device: str) -> Iterator[_Opened]:
    """The model to generate with. After the body succeeds, a LoRA adapter is unloaded and a warm base model is
    checked back into the cache; after a failure it is not, so the cache loads the next run's base afresh."""
    started = time.perf_counter()
    adapter: Adapter | None = p["adapter"]
    if adapter is not None and adapter.kind == "full":
        loaded = _load_full_model(adapter.path, p["model"], p["dtype"], device)
        yield _Opened(loaded.model, loaded.tokenizer, time.perf_counter() - started, False, loaded.info.fast_kernels,
                      device)
        return
    base, warm = _base_model(p, ctx, device)
    if adapter is None:
        network = base.model
    else:
        with loadable_adapter(base.model, adapter.path) as path:
            network = PeftModel.from_pretrained(base.model, path).eval()
    yield _Opened(network, base.tokenizer, time.perf_counter() - started, warm, base.info.fast_kernels, device)
    if adapter is not None:
        network.unload()  # never merge: that would change the base weights the cache hands to the next run
    if ctx.warm_reuse:
        warm_cache().check_unchanged(base)


def _base_model(p: dict, ctx: RunContext, device: str) -> tuple[LoadedModel, bool]:
    """The base model, and whether it came from the warm cache without loading."""
    if not ctx.warm_reuse:
        return load_model_and_tokenizer(p["model"], device=device, dtype=p["dtype"], seed=p["base_seed"]), False
    cache = warm_cache()
    loaded = cache.get(p["model"], device=device, dtype=p["dtype"], seed=p["base_seed"])
    return loaded, cache.last_hit


def _load_full_model(path: str, base: str, dtype: str, device: str) -> LoadedModel:
    """A full saved model from ``path`` with the tokenizer of ``base``.

    ``load_model_and_tokenizer`` (which checks that the checkpoint is Qwen3.5 and that its weights are complete)
    wants the tokenizer in the same directory, and a fine-tuning run need not save one. So the model's files are
    linked into a temporary directory beside the base tokenizer's: nothing is written into the run's artifacts, and
    the tokenizer files are written, not linked, so no write can go through a link into them.
    """
    # The cache holds one base model at most because a GPU could not hold two; it would not hold this one as well.
    warm_cache().clear()
    tokenizer = _base_tokenizer(base)
    with tempfile.TemporaryDirectory(prefix="wavesweep-model-") as view:
        for name in os.listdir(path):
            if name in MODEL_FILES or name.endswith(WEIGHT_SUFFIXES):
                os.symlink(os.path.join(path, name), os.path.join(view, name))
        tokenizer.save_pretrained(view)
        loaded = load_model_and_tokenizer(view, device=device, dtype=dtype)
    return LoadedModel(loaded.model, tokenizer, loaded.info)


def _base_tokenizer(model: str) -> PreTrainedTokenizerBase:
    # Without loading the base model's weights, which may be as large as the fine-tuned model's.
    return build_tokenizer() if model in SIZES else AutoTokenizer.from_pretrained(os.path.expanduser(model))


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


def _decode(opened: _Opened, p: dict, ctx: RunContext) -> dict[str, float]:
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


def _throughput(opened: _Opened, p: dict, ctx: RunContext) -> dict[str, float]:
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

