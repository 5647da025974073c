"""Runs cells on Ray, one task per run, and turns what happens into events for the driver.

Workers never touch the store. They send "started" and learning-curve events to a small inbox actor that the
driver drains; final results come back as task return values. The driver writes both to the store.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from orchestrator.errors import WavesweepError
from orchestrator.status import RunStatus
from orchestrator.store.store import RunResult

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.spec import Spec


@dataclass(frozen=True)
class Job:
    """A cell as the executor runs it: the run's full params (references resolved) and its artifact directory."""

    cell: Cell
    params: dict[str, Any]
    artifact_dir: str


@dataclass(frozen=True)
class Started:
    cell_key: str
    host: str
    device: str
    started_at: datetime


@dataclass(frozen=True)
class Progress:
    points: list[tuple[str, int, dict[str, float]]]  # (cell key, step, {metric: value})


@dataclass(frozen=True)
class Finished:
    cell_key: str
    result: RunResult


Event = Started | Progress | Finished


class RayExecutor:
    """Joins a Ray cluster (``address``, ``$RAY_ADDRESS``, or the one ``ray job submit`` runs under) or starts a
    local one declaring ``num_gpus`` GPUs (logical ones are fine: Ray only counts them)."""

    def __init__(self, *, address: str | None = None, num_gpus: int | None = None, num_cpus: int | None = None):
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self._started_ray = False

    def __enter__(self) -> RayExecutor:
        import ray

        if ray.is_initialized():
            return self
        # User experiment modules next to the spec (the current directory) must import on workers too.
        pythonpath = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
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

    def __exit__(self, *exc: Any) -> None:
        import ray

        if self._started_ray:
            ray.shutdown()

    def resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def slots(self, spec: Spec) -> int:
        """Runs that fit at once: GPUs / gpus_per_run, or CPUs / cpus_per_run on a cluster without GPUs."""
        total = self.resources()
        res = spec.resources
        if total.get("GPU", 0) > 0 and res.gpus_per_run > 0:
            return max(1, math.floor(total["GPU"] / res.gpus_per_run + 1e-9))
        return max(1, math.floor(total.get("CPU", 1) / res.cpus_per_run + 1e-9))

    def run(self, spec: Spec, jobs: list[Job]) -> Iterator[Event]:
        """Submit every job of a wave at once (Ray queues what does not fit) and yield events until all end."""
        import ray

        from orchestrator.ray_tasks import Inbox, run_cell_task

        res = spec.resources
        gpus = res.gpus_per_run if self.resources().get("GPU", 0) > 0 and res.gpus_per_run > 0 else 0.0
        inbox = Inbox.options(num_cpus=0).remote()
        # max_calls: how many runs one worker process serves before Ray replaces it. Ray's default for GPU tasks
        # is 1 (a fresh process per run); warm reuse needs the process, and the model it loaded, to live on.
        max_calls = res.max_runs_per_worker if res.warm_reuse else 1
        task = run_cell_task(max_calls).options(num_cpus=res.cpus_per_run, num_gpus=gpus, max_retries=0)
        pending = {}
        for job in jobs:
            payload = {
                "study": spec.study, "experiment": spec.experiment, "cell_key": job.cell.key, "seed": job.cell.seed,
                "params": job.params, "response": spec.response.metric, "artifact_dir": job.artifact_dir,
                "num_cpus": max(1, int(res.cpus_per_run)), "gpus": gpus, "warm_reuse": res.warm_reuse,
            }
            pending[task.remote(payload, inbox)] = job.cell.key
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                # Drain after wait: a task's events are all in the inbox before its result is ready.
                yield from _events(ray.get(inbox.drain.remote()))
                for ref in ready:
                    yield Finished(pending.pop(ref), _result(ref))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            ray.kill(inbox)


def _events(items: list[tuple[str, Any]]) -> Iterator[Event]:
    points = []
    for kind, data in items:
        if kind == "started":
            if points:
                yield Progress(points)
                points = []
            yield Started(**data)
        else:
            points.append(data)
    if points:
        yield Progress(points)


def _result(ref: Any) -> RunResult:
    import ray

    try:
        raw = ray.get(ref)
    except ray.exceptions.RayError as exc:
        # The experiment's own exceptions are caught in the worker; reaching here means the worker process or
        # node died (OOM killer, preemption, segfault in a kernel).
        return RunResult(status=RunStatus.FAILED, metrics={}, error_kind="worker_died",
                         error_message=f"{type(exc).__name__}: {exc}"[:2000], finished_at=datetime.now(timezone.utc))
    return RunResult(**raw)
