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
import math
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

from .data import IGNORE_INDEX, encode_for_training, encode_prompts, exact_match, load_examples
from .models import LoadedModel, load_model_and_tokenizer, peak_memory_mb, reset_peak_memory, resolve_dtype, warm_cache
from .tiny import SIZES, build_tokenizer

MODES = ("decode", "throughput")
COMMON: dict[str, object] = {
    "mode": "decode",
    "model": "tiny",
    "dtype": "auto",
    "seed": None,  # None: the run's ctx.seed
    "base_seed": None,  # None: seed. Only tiny base models depend on it (their random initialisation)
    "adapter": None,
    "batch_size": 16,
    "max_new_tokens": None,  # None: decode: from the reference answers; throughput: THROUGHPUT_NEW_TOKENS
}
DECODE: dict[str, object] = {
    "dataset": "arithmetic",
    "dataset_config": None,
    "split": "test",
    "n_eval": 64,
    "chat": None,  # None: False for tiny names (trained without the template, see data.py), True otherwise
    "enable_thinking": False,
    "temperature": 0.0,  # 0: greedy
    "top_p": 1.0,
    "top_k": 0,  # 0: off
    "presence_penalty": 0.0,
}
THROUGHPUT: dict[str, object] = {"prompt_len": 32, "n_batches": 5}
PARAMS_OF_MODE = {"decode": DECODE, "throughput": THROUGHPUT}
PARAMS = {**COMMON, **DECODE, **THROUGHPUT}  # every name a spec may give (each mode takes its own and COMMON)
THROUGHPUT_NEW_TOKENS = 64
# OpenAI's and vLLM's range for presence_penalty.
MAX_PRESENCE_PENALTY = 2.0
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
    ``tokens_per_s`` (those tokens per second inside ``generate``) and ``peak_mem_mb``, and reports
    ``exact_match_so_far`` after every batch (step: the number of batches done). throughput returns ``tokens_per_s``
    (every generated token, all rows being the same length), ``latency_p50_s`` and ``latency_p95_s`` (per batch) and
    ``peak_mem_mb`` (see ``models.peak_memory_mb``). Both add ``load_s`` (seconds to get the model and adapter in this
    run), ``warm`` (1.0 when the base model came from the warm cache without loading) and ``fast_kernels`` (1.0 when
    the fused Gated DeltaNet kernels import).
    """
    p = resolve_params(params, ctx.seed, ctx.device)
    torch.set_num_threads(ctx.num_cpus)
    with _opened_model(p, ctx) as opened:
        measure = _decode if p["mode"] == "decode" else _throughput
        metrics = measure(opened, p, ctx)
    return {
        **metrics,
        "load_s": opened.load_s,
        "warm": float(opened.warm),
        "fast_kernels": float(opened.fast_kernels),
    }


# --- params ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    path: str  # absolute
    kind: Literal["lora", "full"]


def resolve_params(params: dict, ctx_seed: int, device: str) -> dict:
    """``params`` over the defaults of their mode, validated, with numbers coerced: YAML and sweeps hand over
    ``16.0`` for 16 and ``"1e-3"`` for 0.001. ``adapter`` becomes an ``Adapter`` (or stays None)."""
    valid = {**COMMON, **DECODE, **THROUGHPUT}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown param(s) {', '.join(map(repr, unknown))}; valid params: {', '.join(valid)}")
    mode = params.get("mode", COMMON["mode"])
    if mode not in MODES:
        raise ValueError(f"param 'mode' must be one of {', '.join(MODES)}, got {mode!r}")
    # A parameter of the other mode would be ignored: a sweep over it would repeat one measurement.
    misplaced = sorted(set(params) - set(COMMON) - set(PARAMS_OF_MODE[mode]))
    if misplaced:
        raise ValueError(f"param(s) {', '.join(map(repr, misplaced))} do not apply to mode {mode!r}")
    p = {**COMMON, **PARAMS_OF_MODE[mode], **params}

    p["model"] = _text("model", p["model"])
    resolve_dtype(p["dtype"], device)  # raises for a bad dtype, naming the param
    p["seed"] = ctx_seed if p["seed"] is None else _number("seed", p["seed"], integer=True)
    p["base_seed"] = p["seed"] if p["base_seed"] is None else _number("base_seed", p["base_seed"], integer=True)
    p["adapter"] = None if p["adapter"] is None else _adapter(p["adapter"])
    for name in ("batch_size", "max_new_tokens", "n_eval", "prompt_len", "n_batches"):
        if p.get(name) is not None:
            p[name] = _number(name, p[name], integer=True)
            _require(name, p[name], p[name] >= 1, "an integer >= 1")
    if mode == "throughput":
        p["max_new_tokens"] = p["max_new_tokens"] or THROUGHPUT_NEW_TOKENS
    else:
        _resolve_decode(p)
    return p


def _resolve_decode(p: dict) -> None:
    for name in ("dataset", "split"):
        p[name] = _text(name, p[name])
    if p["dataset_config"] is not None:
        p["dataset_config"] = _text("dataset_config", p["dataset_config"])
    if p["chat"] is None:
        p["chat"] = p["model"] not in SIZES
    for name in ("chat", "enable_thinking"):
        _require(name, p[name], isinstance(p[name], bool), "true or false")
    if p["enable_thinking"] and p["max_new_tokens"] is None:
        raise ValueError(
            "param 'max_new_tokens' must be given with enable_thinking: its default, from the reference answers, "
            "leaves no room for the reasoning"
        )
    for name in ("temperature", "top_p", "presence_penalty"):
        p[name] = _number(name, p[name], integer=False)
    p["top_k"] = _number("top_k", p["top_k"], integer=True)
    _require("temperature", p["temperature"], p["temperature"] >= 0, ">= 0 (0: greedy)")
    _require("top_p", p["top_p"], 0 < p["top_p"] <= 1, "in (0, 1]")
    _require("top_k", p["top_k"], p["top_k"] >= 0, "an integer >= 0 (0: off)")
    _require(
        "presence_penalty",
        p["presence_penalty"],
        abs(p["presence_penalty"]) <= MAX_PRESENCE_PENALTY,
        f"in [-{MAX_PRESENCE_PENALTY:g}, {MAX_PRESENCE_PENALTY:g}]",
    )


def _adapter(value: object) -> Adapter:
    path = os.path.abspath(os.path.expanduser(_text("adapter", value)))
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


def _number(name: str, value: object, *, integer: bool) -> int | float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"param {name!r} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"param {name!r} must be a finite number, got {value!r}")
    if not integer:
        return number
    # A fractional value is an error in the spec, not something to round silently.
    if not number.is_integer():
        raise ValueError(f"param {name!r} must be an integer, got {value!r}")
    return int(number)


def _text(name: str, value: object) -> str:
    _require(name, value, isinstance(value, str) and value != "", "a non-empty string")
    return value  # type: ignore[return-value]


def _require(name: str, value: object, ok: bool, constraint: str) -> None:
    if not ok:
        raise ValueError(f"param {name!r} must be {constraint}, got {value!r}")


# --- the model ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opened:
    network: torch.nn.Module  # the base model, the PeftModel around it, or a full fine-tuned model
    tokenizer: PreTrainedTokenizerBase
    load_s: float
    warm: bool
    fast_kernels: bool


@contextmanager
def _opened_model(p: dict, ctx: RunContext) -> Iterator[_Opened]:
    """The model to generate with. After the body succeeds, a LoRA adapter is unloaded and a warm base model is
    checked back into the cache; after a failure it is not, so the cache loads the next run's base afresh."""
    started = time.perf_counter()
    adapter: Adapter | None = p["adapter"]
    if adapter is not None and adapter.kind == "full":
        loaded = _load_full_model(adapter.path, p["model"], p["dtype"], ctx.device)
        yield _Opened(loaded.model, loaded.tokenizer, time.perf_counter() - started, False, loaded.info.fast_kernels)
        return
    base, warm = _base_model(p, ctx)
    network = base.model if adapter is None else PeftModel.from_pretrained(base.model, adapter.path).eval()
    yield _Opened(network, base.tokenizer, time.perf_counter() - started, warm, base.info.fast_kernels)
    if adapter is not None:
        network.unload()  # never merge: that would change the base weights the cache hands to the next run
    if ctx.warm_reuse:
        warm_cache().check_unchanged(base)


def _base_model(p: dict, ctx: RunContext) -> tuple[LoadedModel, bool]:
    """The base model, and whether it came from the warm cache without loading."""
    if not ctx.warm_reuse:
        return load_model_and_tokenizer(p["model"], device=ctx.device, dtype=p["dtype"], seed=p["base_seed"]), False
    cache = warm_cache()
    loaded = cache.get(p["model"], device=ctx.device, dtype=p["dtype"], seed=p["base_seed"])
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
    tokenizer, device = opened.tokenizer, ctx.device
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
    records, seconds = [], 0.0
    for index, start in enumerate(range(0, len(examples), p["batch_size"]), start=1):
        chunk = examples[start : start + p["batch_size"]]
        batch = encode_prompts(
            tokenizer, [e["question"] for e in chunk], chat=p["chat"], enable_thinking=p["enable_thinking"]
        )
        new_tokens, elapsed = _generate(opened.network, batch, config, _penalty(p, batch), device)
        seconds += elapsed
        for example, row in zip(chunk, new_tokens):
            records.append(_record(example, row, eos_ids, tokenizer))
        ctx.report(index, exact_match_so_far=sum(r["correct"] for r in records) / len(records))
    _save_predictions(ctx.artifact_dir, records)
    generated = sum(r["new_tokens"] for r in records)
    return {
        "exact_match": sum(r["correct"] for r in records) / len(records),
        "mean_new_tokens": generated / len(records),
        "tokens_per_s": generated / seconds,
        "peak_mem_mb": peak_memory_mb(device),
    }


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
    started = time.perf_counter()
    with torch.no_grad():
        output = network.generate(**inputs, generation_config=config, logits_processor=processors)
    _synchronize(device)
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
    device, new_tokens = ctx.device, p["max_new_tokens"]
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


# --- device ------------------------------------------------------------------------------------------------------


def _synchronize(device: str) -> None:
    # CUDA kernels run asynchronously: without this, a timer would stop before the GPU has finished.
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
