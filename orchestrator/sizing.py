"""GPU sizing: how much of a GPU a run needs (``execution/packing.py`` checks the requests against the nodes).

Several small runs can share a GPU (Ray's fractional ``num_gpus``) while a large one gets a GPU alone. The share
comes from a memory estimate per model size and method, calibrated on Qwen3.5 bf16 figures (LoRA: 0.8B ~3 GB,
2B ~5 GB, 4B ~10 GB, 9B ~22 GB):

- weights: 2 bytes per parameter in bf16;
- LoRA / inference: weights x 1.2 (activations, adapter, its optimizer state, allocator slack) + 1 GB (CUDA
  context and kernels);
- full fine-tuning with AdamW: 16 bytes per parameter (fp32 master weights and gradients, and the two fp32 moments:
  what ``experiments/qwen35/precision.py`` keeps; the bf16 copies autocast makes are transient) x 1.2 + 1 GB.

These are planning figures without activations, which grow with batch x sequence length (``bench/real_size.py``
measures a run against them; docs/benchmarks.md has the figures): a run that needs more raises CUDA out-of-memory,
which the executor retries alone on a whole GPU.

A share is a power-of-two fraction (1, 1/2, 1/4, 1/8: fractions that tile a GPU exactly, so Ray never strands a
sliver) with 10% of the memory kept free; a run that needs more than a quarter of a GPU's memory gets it alone:
two large runs on one GPU contend for compute and bandwidth, and each takes about twice as long.

With ``resources.gpus_per_run: auto`` each run asks for the share of its own estimate (:func:`run_request`), from
``resources.memory_gb_per_run`` or else its ``model`` param and its ``method`` param (``resources.memory_method``
when it has none); waves are sized by the mean share over the model levels and nodes checked against the largest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from orchestrator.errors import SpecError


class SpecFields(Protocol):
    """What packing reads of a study spec (``orchestrator.spec.Spec`` has it). A protocol, not an import: the spec
    imports this module to validate ``gpus_per_run: auto``, and the layering keeps that arrow one-way."""

    resources: Any
    factors: Mapping[str, Any]
    fixed: Mapping[str, Any]

Method = Literal["lora", "full", "inference"]
GIB = 1024**3
CONTEXT_GB = 1.0
SLACK = 1.2
BYTES_PER_PARAM = {"lora": 2.0, "inference": 2.0, "full": 16.0}
MAX_SHARE = 8  # runs per GPU at most: beyond it, kernel launches and context switches dominate
ALONE_ABOVE = 0.25  # of a GPU's memory
USABLE = 0.9  # of a GPU's memory


def params_of(model: str) -> float:
    """Parameter count from a model name such as ``Qwen/Qwen3.5-0.8B`` or ``qwen3.5-9b-base`` (the ``...B`` part)."""
    match = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model.split("/")[-1])
    if not match:
        raise ValueError(f"model {model!r}: no parameter count in its name (like '0.8B' or '9B'); give the memory "
                         "estimate instead")
    return float(match.group(1)) * 1e9


def memory_gb(model: str, method: Method = "lora") -> float:
    """Estimated peak GPU memory of one run, in GB (see the module docstring for the formula)."""
    if method not in BYTES_PER_PARAM:
        raise ValueError(f"method must be one of {sorted(BYTES_PER_PARAM)}; got {method!r}")
    return params_of(model) * BYTES_PER_PARAM[method] * SLACK / 1e9 + CONTEXT_GB


def gpu_share(estimate_gb: float, gpu_memory_gb: float) -> float:
    """The fraction of one GPU to request (Ray ``num_gpus``) for a run needing ``estimate_gb``."""
    if not estimate_gb > 0 or not gpu_memory_gb > 0:
        raise ValueError(f"memory figures must be > 0; got estimate {estimate_gb} GB, GPU {gpu_memory_gb} GB")
    if estimate_gb > USABLE * gpu_memory_gb:
        raise ValueError(f"a run needing ~{estimate_gb:.1f} GB does not fit a {gpu_memory_gb:g} GB GPU "
                         f"({USABLE:.0%} usable); shard it or use a larger GPU")
    if estimate_gb > ALONE_ABOVE * gpu_memory_gb:
        return 1.0
    fits = math.floor(USABLE * gpu_memory_gb / estimate_gb)
    share = 1
    while share * 2 <= min(fits, MAX_SHARE):
        share *= 2
    return 1.0 / share


AUTO_NEEDS = ("auto needs a 'model' param whose name gives its size (like Qwen/Qwen3.5-0.8B) or "
              "resources.memory_gb_per_run")
METHODS = "one of 'lora', 'full' or 'inference' for resources.gpus_per_run: auto"


def run_request(spec: SpecFields, params: Mapping[str, Any]) -> float:
    """The GPUs (Ray ``num_gpus``) one run asks for; ``params`` are its full params (fixed merged with its levels).

    Raises a SpecError naming the param when auto cannot size the run; :func:`auto_problems` refuses such specs
    up front, so this only fires for params that did not come from the validated spec.
    """
    res = spec.resources
    if res.gpus_per_run != "auto":
        return float(res.gpus_per_run)
    if res.memory_gb_per_run is not None:
        estimate, method, field, value = (res.memory_gb_per_run, None, "resources.memory_gb_per_run",
                                          res.memory_gb_per_run)
    else:
        if "model" not in params:
            raise SpecError([("resources.gpus_per_run", AUTO_NEEDS, "auto")])
        model, method = params["model"], params.get("method", res.memory_method)
        if not _is_method(method):
            raise SpecError([(_where(spec, "method", method), f"must be {METHODS}", method)])
        if not _has_size(model):
            raise SpecError([(_where(spec, "model", model), _NO_SIZE, model)])
        estimate, field, value = memory_gb(model, method), _where(spec, "model", model), model
    if not _fits(estimate, res.gpu_memory_gb):
        raise SpecError([(field, _too_big(estimate, res.gpu_memory_gb, method), value)])
    return gpu_share(estimate, res.gpu_memory_gb)


def auto_problems(spec: SpecFields) -> list[tuple[str, str, Any]]:
    """Why ``gpus_per_run: auto`` cannot size every run of the spec, as SpecError problems (empty when it can)."""
    res = spec.resources
    if res.gpus_per_run != "auto":
        return []
    if res.memory_gb_per_run is not None:
        if not _fits(res.memory_gb_per_run, res.gpu_memory_gb):
            return [("resources.memory_gb_per_run", _too_big(res.memory_gb_per_run, res.gpu_memory_gb, None),
                     res.memory_gb_per_run)]
        return []
    models = param_values(spec, "model")
    if not models:
        return [("resources.gpus_per_run", AUTO_NEEDS, "auto")]
    methods = param_values(spec, "method")
    problems = [(path, f"must be {METHODS}", method) for path, method in methods if not _is_method(method)]
    # Without a 'method' param every run uses resources.memory_method, which pydantic already checked.
    valid_methods = dict.fromkeys(m for _, m in methods if _is_method(m)) if methods else [res.memory_method]
    for path, model in models:
        if not _has_size(model):
            problems.append((path, _NO_SIZE, model))
            continue
        for method in valid_methods:
            estimate = memory_gb(model, method)
            if not _fits(estimate, res.gpu_memory_gb):
                problems.append((path, _too_big(estimate, res.gpu_memory_gb, method), model))
    return problems


_NO_SIZE = ("gives no parameter count in its name (like '0.8B' or '9B') for resources.gpus_per_run: auto; "
            "rename it or set resources.memory_gb_per_run")


def _too_big(estimate: float, gpu_memory_gb: float, method: Any) -> str:
    run = f"a {method} run" if _is_method(method) else "a run"
    return (f"{run} needs ~{estimate:.1f} GB, more than a {gpu_memory_gb:g} GB GPU holds ({USABLE:.0%} usable; "
            "resources.gpu_memory_gb); shard it or use a larger GPU")


def _fits(estimate_gb: float, gpu_memory_gb: float) -> bool:
    try:
        gpu_share(estimate_gb, gpu_memory_gb)
    except ValueError:
        return False
    return True


def _is_method(value: Any) -> bool:
    return isinstance(value, str) and value in BYTES_PER_PARAM


def _has_size(model: Any) -> bool:
    if not isinstance(model, str):
        return False
    try:
        params_of(model)
    except ValueError:
        return False
    return True


def _where(spec: SpecFields, name: str, value: Any) -> str:
    """The spec field that gave run param ``name`` its ``value``, for error messages."""
    return next((path for path, v in param_values(spec, name) if v == value), f"params.{name}")


def param_values(spec: SpecFields, name: str) -> list[tuple[str, Any]]:
    """(field path, value) of each value run param ``name`` takes: its factor's levels, or its fixed value."""
    if name in spec.factors:
        return [(f"factors.{name}.levels[{i}]", v) for i, v in enumerate(spec.factors[name].levels)]
    if name in spec.fixed:
        return [(f"fixed.{name}", spec.fixed[name])]
    return []
