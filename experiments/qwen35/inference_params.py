"""The inference experiment's params: the ones every mode takes, those of ``decode`` and of ``throughput``, and how
a spec's values become a run's (``resolve_params``), ``adapter`` included."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from .models import resolve_dtype
from .params import Param, resolve_declared
from .tiny import SIZES

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


@dataclass(frozen=True)
class Adapter:
    path: str  # absolute
    kind: Literal["lora", "full"]


def resolve_params(params: dict, ctx_seed: int, device: str) -> dict:
    """``params`` over the defaults of their mode, validated and coerced (see ``params.py``); ``adapter`` becomes
    an ``Adapter`` (or stays None)."""
    mode = resolve_declared({"mode": params.get("mode", "decode")}, {"mode": COMMON["mode"]}, seed=ctx_seed)["mode"]
    # A parameter of the other mode would be ignored: a sweep over it would repeat one measurement.
    misplaced = sorted(set(params) & (set(PARAMS) - set(COMMON) - set(PARAMS_OF_MODE[mode])))
    if misplaced:
        raise ValueError(f"param(s) {', '.join(map(repr, misplaced))} do not apply to mode {mode!r}")
    p = resolve_declared(params, {**COMMON, **PARAMS_OF_MODE[mode]}, seed=ctx_seed)
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
