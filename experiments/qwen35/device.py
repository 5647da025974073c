"""The device a run computes on: the GPU Ray granted, as far as PyTorch can use it.

``RunContext.device`` says what Ray granted (``cuda`` when the run holds a GPU id) without importing torch. Here
PyTorch decides: a CUDA GPU where it sees one; an Apple GPU (``mps``) where it sees that instead, which is how a
laptop run gets it (Ray does not detect Apple GPUs, so ``wavesweep run --gpus 1`` declares it, and the one run
that holds it computes on it); otherwise the CPU, with one warning, rather than every run failing in a CUDA call.
"""

from __future__ import annotations

import functools
import warnings

import torch

from orchestrator.context import RunContext

UNUSABLE_GPU_WARNING = (
    "Ray granted this run GPU {ids}, but PyTorch sees neither a CUDA nor an Apple (MPS) GPU (torch {version}, "
    "CUDA build {cuda}): the run computes on the CPU. Install a torch build for this GPU, or run without --gpus."
)


def run_device(ctx: RunContext) -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"``: where this run's tensors go."""
    if not ctx.gpu_ids:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if mps_available():
        return "mps"
    _warn_unusable(tuple(ctx.gpu_ids))
    return "cpu"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@functools.cache
def _warn_unusable(ids: tuple[int, ...]) -> None:
    """Once per process: each run of a Ray worker would repeat it."""
    warnings.warn(UNUSABLE_GPU_WARNING.format(ids=", ".join(map(str, ids)), version=torch.__version__,
                                              cuda=torch.version.cuda or "none"), RuntimeWarning)
