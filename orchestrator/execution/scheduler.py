"""What runs next: a queue of attempts, started longest-predicted first whenever the cluster has room for them.

The driver does not hand a wave to Ray all at once (Ray would start it in an order of its own choosing); it keeps
the queue and submits only what fits the capacity that is free, so it decides the order (``costs.py``)
and sees when devices sit idle, which is when a wave's tail can be backfilled (``driver.py``).
Retries go to the front: they are already late.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.execution.events import Job

EPS = 1e-9


@dataclass(order=True)
class Queued:
    rank: tuple[int, float, int]  # (0 for a retry else 1, -predicted seconds, arrival): smallest first
    job: Job = field(compare=False)
    number: int = field(compare=False)  # the attempt it will be
    alone: bool = field(compare=False)


class Scheduler:
    """Submits queued attempts to ``attempts`` (``attempts.py``) while they fit the free capacity.

    ``capacity``: (GPUs, CPUs) the runs may take; GPUs 0 means runs take CPUs only. Idle capacity is integrated
    over time in device-seconds of ``unit`` (GPU, or CPU without GPUs) and collected by ``take_idle``."""

    def __init__(self, attempts: Any, capacity: tuple[float, float]):
        self.attempts = attempts
        self.gpus, self.cpus = capacity
        self.unit = "GPU" if self.gpus > 0 else "CPU"
        self.total = self.gpus if self.gpus > 0 else self.cpus
        self.queue: list[Queued] = []
        self._arrivals = 0
        self._idle_s = 0.0
        self._clock = time.monotonic()

    def add(self, job: Job, predicted_s: float, *, number: int = 1, alone: bool = False) -> None:
        self._arrivals += 1
        self.queue.append(Queued((0 if number > 1 else 1, -predicted_s, self._arrivals), job, number, alone))

    def reorder(self, predict) -> None:
        """Re-rank the first attempts in the queue by a new prediction (the cost model learnt from finished runs)."""
        for item in self.queue:
            if item.number == 1:
                item.rank = (1, -predict(item.job), item.rank[2])

    def fill(self) -> int:
        """Submit queued attempts, best rank first, while they fit; a large one that does not fit yet (a retry that
        needs a whole GPU) lets smaller ones past it rather than leave devices idle. Returns how many started."""
        self.queue.sort()
        used_gpus, used_cpus = self.attempts.used()
        started, waiting = 0, []
        for item in self.queue:
            gpus, cpus = self.attempts.request(item.job, item.alone)
            if used_gpus + gpus <= self.gpus + EPS and used_cpus + cpus <= self.cpus + EPS:
                self.attempts.submit(item.job, item.number, item.alone)
                used_gpus, used_cpus, started = used_gpus + gpus, used_cpus + cpus, started + 1
            else:
                waiting.append(item)
        if not self.attempts.live and waiting:
            # Nothing runs and nothing fits: the accounting disagrees with the cluster (e.g. a node was added or
            # removed). Submit the first anyway; Ray queues it until it can place it.
            item = waiting.pop(0)
            self.attempts.submit(item.job, item.number, item.alone)
            started += 1
        self.queue = waiting
        return started

    def free(self) -> float:
        """Capacity not held by live attempts, in ``unit``s."""
        used_gpus, used_cpus = self.attempts.used()
        return (self.gpus - used_gpus) if self.gpus > 0 else (self.cpus - used_cpus)

    def tick(self, free: float | None = None) -> None:
        """Count the idle capacity since the last tick: ``free`` if given (what was free during that time), else
        what is free now. Call it before every change to what runs, so each interval is counted at its state."""
        now = time.monotonic()
        self._idle_s += max(0.0, self.free() if free is None else free) * (now - self._clock)
        self._clock = now

    def take_idle(self) -> float:
        """Idle device-seconds counted since the last call."""
        self.tick()
        idle, self._idle_s = self._idle_s, 0.0
        return idle
