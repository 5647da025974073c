"""Which fused Gated DeltaNet kernels a Qwen3.5 run uses, kernel by kernel, as transformers decides it.

transformers' Qwen3.5 declares four functions with a fallback (``use_kernel_func_from_hub_with_fallback``): each
uses its package's kernel when the package imports and has the function, and runs on the inputs' device, else the
reference PyTorch implementation. The packages are independent: flash-linear-attention (``fla``, pure Triton,
pip-installable) without ``causal_conv1d`` (a CUDA extension built for one torch) still speeds up the delta rule.
So a run records how many of the four are fused on its device, not one yes/no for both packages.
"""

from __future__ import annotations

import functools
import importlib

import torch

# (function, package), as modeling_qwen3_5 declares them.
KERNELS = (
    ("causal_conv1d_fn", "causal_conv1d"),
    ("causal_conv1d_update", "causal_conv1d"),
    ("chunk_gated_delta_rule", "fla"),
    ("fused_recurrent_gated_delta_rule", "fla"),
)
# Where a package keeps a function that its root does not export, and the devices its kernels run on: transformers'
# own tables (integrations.hub_kernels) where this transformers has them, else these copies of them.
INTERNAL_PATHS = {"chunk_gated_delta_rule": "ops.gated_delta_rule",
                  "fused_recurrent_gated_delta_rule": "ops.gated_delta_rule"}
SUPPORTED_DEVICES = {"causal_conv1d": ("cuda",), "fla": ("cuda", "xpu", "mlu", "npu")}


def fused_kernels(device: str) -> dict[str, bool]:
    """Per function of ``KERNELS``: whether a model on ``device`` runs the package's fused kernel."""
    device_type = torch.device(device).type
    paths, devices = _tables()
    return {name: device_type in devices.get(package, ()) and _importable(package, paths.get(name), name)
            for name, package in KERNELS}


def _tables() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    try:
        from transformers.integrations import hub_kernels
    except ImportError:
        return INTERNAL_PATHS, SUPPORTED_DEVICES
    return (getattr(hub_kernels, "_KERNELS_INTERNAL_PATH_MAPPINGS", INTERNAL_PATHS),
            getattr(hub_kernels, "_PACKAGE_SUPPORTED_DEVICES", SUPPORTED_DEVICES))


@functools.cache
def _importable(package: str, internal: str | None, name: str) -> bool:
    try:
        module = importlib.import_module(package if internal is None else f"{package}.{internal}")
    except Exception:  # a broken install (a CUDA or torch mismatch) is as unusable as a missing one
        return False
    return callable(getattr(module, name, None))
