"""The memory of this machine's GPU, for ``gpus_per_run: auto`` on a local run: without torch (the core install
has none), from ``nvidia-smi``, or on an Apple silicon Mac from its unified memory.

A spec's ``resources.gpu_memory_gb`` (default 80, a data-centre GPU) describes a cluster's GPUs; a laptop's GPU has
8 to 24 GB (or a share of unified memory), so a local run that leaves the field unset packs by what is there.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass

# Metal lets a process keep about three quarters of unified memory on the GPU (its recommendedMaxWorkingSetSize on
# Apple silicon with 32 GB or more; less on smaller machines), and the rest is the system's and the CPU side's.
APPLE_GPU_SHARE = 0.75
TIMEOUT_S = 10


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_gb: float  # GiB, like resources.gpu_memory_gb


def local_gpu() -> LocalGpu | None:
    """The first NVIDIA GPU ``nvidia-smi`` lists, else an Apple silicon GPU, else None."""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            name, _, mib = done.stdout.strip().splitlines()[0].rpartition(",")
            try:
                return LocalGpu(name.strip(), float(mib) / 1024)
            except ValueError:
                pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        try:
            memory = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True,
                                        timeout=TIMEOUT_S, check=True).stdout)
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        return LocalGpu("Apple GPU (unified memory)", APPLE_GPU_SHARE * memory / 2**30)
    return None
