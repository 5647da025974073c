"""Reading memory and waiting on the device: peak memory per phase of a run, the process's resident memory, and the
synchronisation that makes a clock read after GPU work mean what it says."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


class PeakMemory:
    """Peak memory per phase of a run (``train``, ``eval``), in MB: each ``phase(name)`` block restarts the device's
    peak and folds what it reached into its phase's maximum, so phases that alternate are kept apart."""

    def __init__(self, device: str):
        self.device = device
        self.mb: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        reset_peak_memory(self.device)
        try:
            yield
        finally:
            synchronize(self.device)
            peak = peak_memory_mb(self.device)
            self.mb[name] = max(self.mb.get(name, peak), peak)


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels: GPUs run them asynchronously, so a clock read without this stops
    before the GPU has finished."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's peak resident memory (VmHWM, reset
    through ``/proc/self/clear_refs``; where that cannot be written the peak stays the process's lifetime's)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    if kind == "mps":
        return  # MPS keeps no peak: see peak_memory_mb
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # "5" resets the peak RSS (man 5 proc)
    except OSError:
        pass


def peak_memory_mb(device: str) -> float:
    """CUDA: the most memory tensors held on the device since ``reset_peak_memory`` (weights included).

    MPS: what the Metal driver holds for this process when read (PyTorch keeps no peak for Apple GPUs), so the
    figure of a phase is read at its end. CPU: the process's peak resident memory (VmHWM) since
    ``reset_peak_memory``: everything the process holds, the Python interpreter and libraries included. NaN where
    ``/proc/self/status`` does not exist.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if kind == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass
    return math.nan


def rss_bytes() -> int | None:
    """The process's resident memory now (VmRSS); None where ``/proc/self/status`` does not exist."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None
