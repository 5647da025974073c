"""GPU packing: how much of a GPU a run needs, and whether a request fits any node at all.

Several small runs can share a GPU (Ray's fractional ``num_gpus``) while a large one gets a GPU alone. The share
comes from a memory estimate per model size and method, calibrated on Qwen3.5 bf16 figures (LoRA: 0.8B ~3 GB,
2B ~5 GB, 4B ~10 GB, 9B ~22 GB):

- weights: 2 bytes per parameter in bf16;
- LoRA / inference: weights x 1.2 (activations, adapter, its optimizer state, allocator slack) + 1 GB (CUDA
  context and kernels);
- full fine-tuning with AdamW: 16 bytes per parameter (bf16 weights and gradients, fp32 master weights and the two
  moments) x 1.2 + 1 GB.

These are planning figures, not measurements (no GPU was lent to the task that wrote them): a run that needs
more raises CUDA out-of-memory, which the executor retries alone on a whole GPU.

A share is a power-of-two fraction (1, 1/2, 1/4, 1/8: fractions that tile a GPU exactly, so Ray never strands a
sliver) with 10% of the memory kept free; a run that needs more than a quarter of a GPU's memory gets it alone:
two large runs on one GPU contend for compute and bandwidth, and each takes about twice as long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from orchestrator.errors import SpecError

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


@dataclass(frozen=True)
class Node:
    name: str
    gpus: float
    cpus: float


def nodes_from_ray(raw: Iterable[Mapping]) -> list[Node]:
    """Alive nodes from ``ray.nodes()``: their GPU and CPU totals."""
    return [Node(str(n.get("NodeManagerAddress") or n.get("NodeID", "?")), float(n["Resources"].get("GPU", 0.0)),
                 float(n["Resources"].get("CPU", 0.0)))
            for n in raw if n.get("Alive", True)]


def check_fits(gpus_per_run: float, cpus_per_run: float, nodes: list[Node]) -> None:
    """Refuse a per-run request that no single node can hold, naming the request and the capacity.

    Ray would queue such a task forever (a run cannot span nodes); failing before anything is written is the only
    useful answer. On a cluster without GPUs, ``gpus_per_run`` is ignored (runs take CPUs), as the executor does.
    """
    if not nodes:
        raise SpecError([("resources", "the cluster has no alive node", 0)])
    any_gpu = any(n.gpus > 0 for n in nodes)
    problems = []
    if any_gpu and gpus_per_run > 0 and not any(n.gpus >= gpus_per_run for n in nodes):
        largest = f"{max(n.gpus for n in nodes):g} GPUs on {_largest(nodes, 'gpus')}"
        problems.append(("resources.gpus_per_run",
                         f"more GPUs than any node has (largest: {largest}; a run cannot span nodes)", gpus_per_run))
    gpu_nodes = [n for n in nodes if n.gpus >= gpus_per_run] if any_gpu and gpus_per_run > 0 else nodes
    if gpu_nodes and not any(n.cpus >= cpus_per_run for n in gpu_nodes):
        where = "any node with the GPUs it asks for" if gpu_nodes is not nodes else "any node"
        largest = f"{max(n.cpus for n in gpu_nodes):g} CPUs on {_largest(gpu_nodes, 'cpus')}"
        problems.append(("resources.cpus_per_run", f"more CPUs than {where} has (largest: {largest})",
                         cpus_per_run))
    if problems:
        raise SpecError(problems)


def _largest(nodes: list[Node], attr: str) -> str:
    return max(nodes, key=lambda n: getattr(n, attr)).name
