"""The model an inference run generates with: the base model (warm from the cache or loaded), a LoRA adapter on top
of it, or a full fine-tuned model in its place; and giving a warm base model back to the cache after the run."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from orchestrator.context import RunContext

from .inference_params import Adapter
from .lora import loadable_adapter
from .models import LoadedModel, load_model_and_tokenizer, warm_cache
from .tiny import SIZES, build_tokenizer

# A full saved model's files, linked into the directory it is loaded from (see _load_full_model).
MODEL_FILES = ("config.json", "generation_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


@dataclass(frozen=True)
class Opened:
    network: torch.nn.Module  # the base model, the PeftModel around it, or a full fine-tuned model
    tokenizer: PreTrainedTokenizerBase
    load_s: float
    warm: bool
    fast_kernels: int
    device: str  # where the run computes (device.run_device)


@contextmanager
def opened_model(p: dict, ctx: RunContext, device: str) -> Iterator[Opened]:
    """The model to generate with. After the body succeeds, a LoRA adapter is unloaded and a warm base model is
    checked back into the cache; after a failure it is not, so the cache loads the next run's base afresh."""
    started = time.perf_counter()
    adapter: Adapter | None = p["adapter"]
    if adapter is not None and adapter.kind == "full":
        loaded = _load_full_model(adapter.path, p["model"], p["dtype"], device)
        yield Opened(loaded.model, loaded.tokenizer, time.perf_counter() - started, False, loaded.info.fast_kernels,
                     device)
        return
    base, warm = _base_model(p, ctx, device)
    if adapter is None:
        network = base.model
    else:
        with loadable_adapter(base.model, adapter.path) as path:
            network = PeftModel.from_pretrained(base.model, path).eval()
    yield Opened(network, base.tokenizer, time.perf_counter() - started, warm, base.info.fast_kernels, device)
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

