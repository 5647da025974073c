"""Runs cells on Ray, one task per attempt, and turns what happens into events for the driver.

Workers never touch the store. They send "started" and learning-curve events, and a heartbeat, to a small inbox actor
that the driver drains; final results come back as task return values. The driver writes the events to the store.
The attempts of a wave (retries by the rules of ``orchestrator/retry.py``, timeouts, lost heartbeats) are followed
in ``orchestrator/attempts.py``; the events are in ``orchestrator/events.py``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Self

from orchestrator.errors import WavesweepError
from orchestrator.events import Event, Finished, Job, Progress, Retry, Started

if TYPE_CHECKING:
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

    def __enter__(self) -> Self:
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

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._started_ray:
            ray.shutdown()

    def resources(self) -> dict[str, float]:
        import ray

        return dict(ray.cluster_resources())

    def check_fits(self, spec: Spec) -> None:
        """Refuse a per-run request that no node can hold (Ray would queue it forever), naming it and the capacity."""
        import ray

        from orchestrator.packing import check_fits, nodes_from_ray

        check_fits(spec.resources.gpus_per_run, spec.resources.cpus_per_run, nodes_from_ray(ray.nodes()))

    def slots(self, spec: Spec) -> int:
        """Runs that fit at once: GPUs / gpus_per_run, or CPUs / cpus_per_run on a cluster without GPUs."""
        total = self.resources()
        res = spec.resources
        if total.get("GPU", 0) > 0 and res.gpus_per_run > 0:
            return max(1, math.floor(total["GPU"] / res.gpus_per_run + 1e-9))
        return max(1, math.floor(total.get("CPU", 1) / res.cpus_per_run + 1e-9))

    def run(self, spec: Spec, jobs: list[Job], poll: Callable[[], None] | None = None) -> Iterator[Event]:
        """Submit every job of a wave at once (Ray queues what does not fit) and yield events until all end.

        ``poll`` is called about every 0.5 s (the driver checks its study lease there); what it raises ends the
        wave, and every attempt still queued or running is cancelled."""
        import ray

        from orchestrator.attempts import WaveAttempts
        from orchestrator.ray_tasks import Inbox

        res = spec.resources
        gpus = res.gpus_per_run if self.resources().get("GPU", 0) > 0 and res.gpus_per_run > 0 else 0.0
        inbox = Inbox.options(num_cpus=0).remote()
        wave = WaveAttempts(spec, gpus, inbox)
        try:
            for job in jobs:
                wave.submit(job, number=1, alone=False)
            while wave.live:
                if poll is not None:
                    poll()
                ready, _ = ray.wait(list(wave.live), num_returns=1, timeout=0.5)
                # Drain after wait: a task's events are all in the inbox before its result is ready.
                yield from wave.drain()
                for ref in ready:
                    yield from wave.end(ref, wave.result(ref))
                yield from wave.watch()
        finally:
            for ref in wave.live:
                ray.cancel(ref, force=True)
            ray.kill(inbox)
