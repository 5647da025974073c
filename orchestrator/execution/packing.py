"""GPU packing: what a study's runs ask for in all (waves are sized by the typical request) and whether the largest
request fits any node at all. How much one run needs is :mod:`orchestrator.sizing`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import SpecError
from orchestrator.sizing import SpecFields, param_values, run_request


def typical_request(spec: SpecFields) -> float:
    """GPUs per run for sizing waves (how many runs fit at once): the mean request over the model (and method)
    levels. Each level appears equally often in the full factorial, so this is also the mean over its cells."""
    requests = [run_request(spec, p) for p in _level_params(spec)]
    return sum(requests) / len(requests)


def largest_request(spec: SpecFields) -> float:
    """The largest request over the model (and method) levels: what some node must hold (:func:`check_fits`)."""
    return max(run_request(spec, p) for p in _level_params(spec))


def _level_params(spec: SpecFields) -> list[dict[str, Any]]:
    """The params that decide a run's request, once per combination of their values (one empty dict if none)."""
    options = [[{name: v} for _, v in param_values(spec, name)] or [{}] for name in ("model", "method")]
    return [{**a, **b} for a, b in itertools.product(*options)]


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
