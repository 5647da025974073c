"""Parameters and LoRA trainable parameters of the released Qwen3.5 sizes, counted on the meta device.

The meta device holds shapes without storage, so every size (9B included) is built in about a second with no
memory, from ``released.py``'s configs: the counts are those of the real ``Qwen3_5ForCausalLM`` and of PEFT's real
adapters, not of a formula that could drift from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Qwen3_5ForCausalLM

from .lora import PRESETS, apply_lora
from .released import HUB_PREFIX, RELEASED, released_config


@dataclass(frozen=True)
class SizeCounts:
    model: str  # the hub id
    params: int  # the language model's (no vision tower, no MTP head); tied embeddings once
    lora: dict[str, int]  # trainable parameters per LoRA preset at the given rank


def size_counts(model: str, rank: int = 16) -> SizeCounts:
    """Counts for released ``model`` (a hub id such as ``Qwen/Qwen3.5-4B``) with LoRA adapters of ``rank``."""
    config = released_config(model)
    lora = {}
    for preset in PRESETS:
        with torch.device("meta"):
            network = Qwen3_5ForCausalLM(config)
        params = sum(p.numel() for p in network.parameters())
        adapted = apply_lora(network, rank=rank, alpha=2.0 * rank, dropout=0.0, targets=preset, seed=0)
        lora[preset] = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    return SizeCounts(model, params, lora)


def released_counts(rank: int = 16) -> list[SizeCounts]:
    return [size_counts(HUB_PREFIX + size, rank) for size in RELEASED]
