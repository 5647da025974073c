"""Runs cells on Ray, one task per attempt, and turns what happens into events for the driver.

Workers never touch the store. They send "started" and learning-curve events in batches, and a heartbeat, to a small
inbox actor that the driver drains; final results come back as task return values, with the events not yet sent.
The driver writes the events to the store.
The live attempts of a study (timeouts, lost heartbeats, failures judged by ``retry.py``) are followed
in ``attempts.py``; what runs when is decided by the driver's scheduler (``scheduler.py``);
the events are in ``events.py``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from orchestrator.errors import WavesweepError
from orchestrator.execution.events import Event, Finished, Job, Progress, Retry, Started

if TYPE_CHECKING:
    from orchestrator.execution.attempts import Attempts
    from orchestrator.execution.packing import Node
    from orchestrator.spec import Spec

__all__ = ["Event", "Finished", "Job", "Progress", "RayExecutor", "Retry", "Started"]


class RayExecutor:
    """Joins a Ray cluster (``address``, ``$RAY_ADDRESS``, or the one ``ray job submit`` runs under) or starts a
    local one declaring ``num_gpus`` GPUs (logical ones are fine: Ray only counts them)."""

    def __init__(self, *, address: str | None = None, num_gpus: int | None = None, num_cpus: int | None = None):
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self._started_ray = False
        self._artifacts_seen: set[str] = set()  # artifacts locations every node was seen to reach

    def __enter__(self) -> Self:
        import ray

        if ray.is_initialized():
            return self
        runtime_env = _runtime_env()
        if self.address or os.environ.get("RAY_ADDRESS"):
            if self.num_gpus is not None:
                raise WavesweepError("--gpus declares GPUs of a local Ray; a cluster reports its own (drop --gpus)")
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=self.num_cpus, num_gpus=self.num_gpus or 0, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)
            self._started_ray = True
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._started_ray:
            ray.shutdown()

    def resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def nodes(self) -> list[Node]:
        """The cluster's alive nodes, with their GPUs and CPUs."""
        import ray

        from orchestrator.execution.packing import nodes_from_ray

        return nodes_from_ray(ray.nodes())

    def check_fits(self, spec: Spec) -> None:
        """Refuse a per-run request that no node can hold (Ray would queue it forever), naming it and the capacity."""
        from orchestrator.execution.packing import check_fits, largest_request

        check_fits(largest_request(spec), spec.resources.cpus_per_run, self.nodes())

    def check_artifacts(self, spec: Spec) -> None:
        """On a cluster of several nodes, refuse an artifacts path that some node cannot see (a node-local disk):
        one probe task per node looks for a file the driver just wrote there (``orchestrator/artifacts.py``)."""
        import ray

        from orchestrator.artifacts import check_visible

        if spec.artifacts in self._artifacts_seen:
            return  # `run` checks before the store exists and run_study again: one probe of the nodes is enough
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) > 1:
            check_visible(spec.artifacts, lambda marker: _nodes_seeing(alive, marker))
        self._artifacts_seen.add(spec.artifacts)

    def slots(self, spec: Spec) -> int:
        """Runs that fit at once: GPUs / GPUs per run (the mean share with ``gpus_per_run: auto``), or CPUs /
        cpus_per_run on a cluster without GPUs."""
        from orchestrator.execution.packing import typical_request

        total = self.resources()
        gpus = typical_request(spec)
        if total.get("GPU", 0) > 0 and gpus > 0:
            return max(1, math.floor(total["GPU"] / gpus + 1e-9))
        return max(1, math.floor(total.get("CPU", 1) / spec.resources.cpus_per_run + 1e-9))

    def capacity(self, spec: Spec) -> tuple[float, float]:
        """(GPUs, CPUs) of the cluster that runs may take: GPUs are 0 when runs take none (no GPUs, or 0 asked)."""
        from orchestrator.execution.packing import typical_request

        total = self.resources()
        gpus = total.get("GPU", 0.0) if typical_request(spec) > 0 else 0.0
        return gpus, total.get("CPU", 0.0)

    @contextmanager
    def session(self, spec: Spec) -> Iterator[Attempts]:
        """The study's live attempts on Ray, across waves; every attempt still queued or running when the session
        ends (an error, a lost lease) is cancelled."""
        from orchestrator.execution.attempts import Attempts
        from orchestrator.execution.ray_tasks import Inboxes

        inboxes = Inboxes()
        attempts = Attempts(spec, self.capacity(spec)[0] > 0, inboxes)
        try:
            yield attempts
        finally:
            attempts.cancel_all()
            inboxes.close()


def _runtime_env() -> dict | None:
    """Put the current directory on the workers' PYTHONPATH: experiment modules next to the spec must import there.

    Under ``ray job submit`` Ray merges this with the job's runtime env per variable and refuses a variable both
    set, so a job whose runtime env sets PYTHONPATH keeps its own (its working_dir is on the workers' path anyway).
    """
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    if "PYTHONPATH" in ((job.get("runtime_env") or {}).get("env_vars") or {}):
        return None
    pythonpath = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": pythonpath}}


def _nodes_seeing(nodes: list[dict], marker: str) -> dict[str, bool]:
    """Whether ``marker`` exists on each node, by one zero-CPU task pinned there."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(os.path.exists)
    refs = {f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})":
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker)
            for n in nodes}
    return {name: bool(ok) for name, ok in zip(refs, ray.get(list(refs.values()), timeout=120))}
