"""LoRA target presets for Qwen3.5, applied with PEFT.

Qwen3.5 text models interleave three Gated DeltaNet layers (``linear_attn``) with one full-attention layer
(``self_attn``). A target list copied from Qwen3 (``q_proj, k_proj, v_proj, o_proj``) matches only the
full-attention layers, so it silently leaves three of every four token mixers without adapters. The presets here
name the DeltaNet projections too, and resolve to explicit full module names inside the language model's decoder
layers, so PEFT wraps exactly those and nothing in a vision tower.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# Module paths relative to a decoder layer. The parent is part of the name so that a leaf name alone (``out_proj``,
# ``gate_proj``) cannot match a module somewhere else. Not targeted in the DeltaNet layers: ``conv1d`` (its forward
# reads ``conv1d.weight`` directly, so a LoRA wrapper there would be bypassed), ``norm``, ``A_log`` and ``dt_bias``
# (gains and per-head decay rates, not projections).
KINDS: dict[str, tuple[str, ...]] = {
    "attention": tuple(f"self_attn.{name}" for name in ("q_proj", "k_proj", "v_proj", "o_proj")),
    "deltanet": tuple(
        f"linear_attn.{name}" for name in ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")
    ),
    "mlp": tuple(f"mlp.{name}" for name in ("gate_proj", "up_proj", "down_proj")),
}
PRESETS: dict[str, tuple[str, ...]] = {**KINDS, "all": tuple(path for paths in KINDS.values() for path in paths)}
_KIND_OF = {path: kind for kind, paths in KINDS.items() for path in paths}

# The language model's decoder layers: under ``model.layers`` in Qwen3_5ForCausalLM, under
# ``model.language_model.layers`` in Qwen3_5ForConditionalGeneration (whose vision tower is ``model.visual``).
_DECODER_LAYER_MODULE = re.compile(r"model\.(?:language_model\.)?layers\.\d+\.(?P<path>.+)")

# Where apply_lora records which base parameters were trainable: PEFT freezes them all, and unload() leaves them
# frozen, which would silently turn a warm-reused base model's next full fine-tune into a no-op.
_BASE_TRAINABLE = "_wavesweep_base_trainable"


def target_modules(model: torch.nn.Module, spec: str) -> list[str]:
    """The full names of the modules in ``model``'s language decoder layers that preset ``spec`` selects.

    ``spec`` is a preset name or several joined with ``+`` (``attention+deltanet``). Raises ``ValueError`` for an
    unknown preset, or when nothing in ``model`` matches.
    """
    paths = _preset_paths(spec)
    names = [
        name
        for name, _ in model.named_modules()
        if (match := _DECODER_LAYER_MODULE.fullmatch(name)) and match["path"] in paths
    ]
    if not names:
        raise ValueError(
            f"lora_targets {spec!r} matches no module of {type(model).__name__}: it looks for "
            f"{', '.join(sorted(paths))} in decoder layers under model.layers or model.language_model.layers"
        )
    return names


def apply_lora(
    model: torch.nn.Module, *, rank: int, alpha: float, dropout: float, targets: str, seed: int
) -> PeftModel:
    """Wrap the modules that preset ``targets`` selects with LoRA adapters; only adapter parameters are trainable.

    Modifies ``model`` in place (``remove_lora`` undoes it). Seeds torch's global RNG with ``seed`` before PEFT
    initialises the adapters, so the same seed gives the same adapters, and the RNG stream that LoRA dropout draws
    from afterwards depends on ``seed`` alone, not on what ran in this process before (warm reuse).
    """
    _validate(rank, alpha, dropout)
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules(model, targets),
    )
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    setattr(peft_model, _BASE_TRAINABLE, trainable)
    return peft_model


def count_wrapped(peft_model: PeftModel) -> dict[str, int]:
    """How many modules of each kind (``attention``, ``deltanet``, ``mlp``) carry a LoRA adapter."""
    counts = dict.fromkeys(KINDS, 0)
    for name, module in peft_model.get_base_model().named_modules():
        match = _DECODER_LAYER_MODULE.fullmatch(name)
        if isinstance(module, LoraLayer) and match and match["path"] in _KIND_OF:
            counts[_KIND_OF[match["path"]]] += 1
    return counts


def remove_lora(peft_model: PeftModel) -> torch.nn.Module:
    """The base model of a PeftModel from ``apply_lora``, adapters removed without merging.

    Its weights are the original tensors, bit for bit, and the parameters that were trainable before ``apply_lora``
    are trainable again, so a worker can reuse the loaded model for its next run.
    """
    trainable = getattr(peft_model, _BASE_TRAINABLE)
    base = peft_model.unload()
    for name, param in base.named_parameters():
        param.requires_grad_(name in trainable)
    return base


# Decoder-layer paths of the text-only class and of the released vision-language class, as module names (target
# lists) and inside saved adapter keys ("base_model.model." + module name + ".lora_A.weight").
TEXT_LAYERS, VL_LAYERS = "model.layers.", "model.language_model.layers."
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
SAVED = "base_model.model."  # PEFT's prefix of a saved adapter's keys


def save_adapter(peft_model: PeftModel, directory: str, *, vl_checkpoint: bool) -> None:
    """Save the adapter; one trained on the language model of a released (vision-language) checkpoint is saved under
    that class's module names (``model.language_model.layers...``), so that it loads onto the checkpoint as
    released (``Qwen3_5ForConditionalGeneration``, what serving stacks load), not only onto the text-only class it
    was trained in. Its ``target_modules`` then lists those modules by full name: PEFT shortens a long list to leaf
    names (``q_proj``...), which would also match any module of that name in the vision tower."""
    peft_model.save_pretrained(directory)
    if vl_checkpoint:
        wrapped = sorted(name for name, module in peft_model.get_base_model().named_modules()
                         if isinstance(module, LoraLayer))
        _rename_layers(directory, directory, TEXT_LAYERS, VL_LAYERS, targets=wrapped)


@contextmanager
def loadable_adapter(model: torch.nn.Module, directory: str) -> Iterator[str]:
    """``directory``, or a renamed copy of it whose module names are ``model``'s: an adapter saved under the
    vision-language class's names is applied to a text-only model under the text names (and the reverse)."""
    with safe_open(os.path.join(directory, ADAPTER_WEIGHTS), framework="pt") as weights:
        keys = list(weights.keys())  # the names only: the tensors are read once, by PEFT
    vl_adapter = any(key.startswith(SAVED + VL_LAYERS) for key in keys)
    text_adapter = any(key.startswith(SAVED + TEXT_LAYERS) for key in keys)
    vl_model = any(name.startswith(VL_LAYERS) for name, _ in model.named_modules())
    if vl_adapter == vl_model or not (vl_adapter or text_adapter):
        yield directory
        return
    old, new = (VL_LAYERS, TEXT_LAYERS) if vl_adapter else (TEXT_LAYERS, VL_LAYERS)
    with tempfile.TemporaryDirectory(prefix="wavesweep-adapter-") as copy:
        _rename_layers(directory, copy, old, new)
        yield copy


def _rename_layers(source: str, target: str, old: str, new: str, *, targets: list[str] | None = None) -> None:
    """Copy the adapter in ``source`` to ``target`` (which may be the same) with module paths starting ``old``
    starting ``new``, in its weights and its target list (``targets``, when given, replaces that list first)."""
    with open(os.path.join(source, ADAPTER_CONFIG)) as file:
        config = json.load(file)
    if targets is not None:
        config["target_modules"] = targets
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = [_renamed(name, old, new) for name in config["target_modules"]]
    weights = {SAVED + _renamed(key.removeprefix(SAVED), old, new): value
               for key, value in load_file(os.path.join(source, ADAPTER_WEIGHTS)).items()}
    if source != target:
        for name in os.listdir(source):  # the README and anything else PEFT wrote, unchanged
            if name not in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                shutil.copy2(os.path.join(source, name), os.path.join(target, name))
    save_file(weights, os.path.join(target, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(target, ADAPTER_CONFIG), "w") as file:
        json.dump(config, file, indent=2, sort_keys=True)


def _renamed(name: str, old: str, new: str) -> str:
    return new + name[len(old):] if name.startswith(old) else name


def _preset_paths(spec: str) -> set[str]:
    if not isinstance(spec, str):
        raise ValueError(f"param 'lora_targets' must be a string, got {spec!r}")
    paths: set[str] = set()
    for part in spec.split("+"):
        preset = part.strip()
        if preset not in PRESETS:
            raise ValueError(
                f"param 'lora_targets': unknown preset {preset!r} in {spec!r}; valid presets: "
                f"{', '.join(PRESETS)} (combine with '+', e.g. 'attention+deltanet')"
            )
        paths.update(PRESETS[preset])
    return paths


def _validate(rank: int, alpha: float, dropout: float) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"param 'lora_rank' must be an integer >= 1, got {rank!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"param 'lora_alpha' must be a finite number > 0, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"param 'lora_dropout' must be in [0, 1), got {dropout!r}")
