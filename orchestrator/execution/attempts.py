"""The live attempts of a study on Ray: submitted, followed (events, heartbeats, timeouts) and ended.

What follows a failure is decided by the rules of ``retry.py``: a retried attempt comes back as a
:class:`Retry` event and the driver's scheduler queues the next one (it decides when and where capacity allows). A
timeout or a lost heartbeat kills the attempt's worker process (``ray.cancel(force=True)``), which frees its GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.execution.events import Event, Finished, Job, Progress, Retry, Started
from orchestrator.execution.retry import alone_request, decide, status_of
from orchestrator.run_record import RunResult, RunStatus

if TYPE_CHECKING:
    from orchestrator.spec import Spec


@dataclass
class Attempt:
    job: Job
    number: int
    gpus: float
    cpus: float
    started: float | None = None  # time.monotonic() when the driver saw it start
    last_beat: float = 0.0  # time.monotonic() of its last heartbeat (or of its start)
    started_at: datetime | None = None
    host: str | None = None
    device: str | None = None
    pruned: float | None = None  # time.monotonic() when the driver pruned it
    batches: int = 0  # batches of its points drained from the inbox


class Attempts:
    """The live attempts of a study: submits them, follows their events and heartbeats, ends them.

    ``use_gpus``: whether runs take GPUs at all (a cluster without GPUs runs them on CPUs, whatever they ask)."""

    def __init__(self, spec: Spec, use_gpus: bool, inboxes: Any):
        self.spec, self.res, self.use_gpus, self.inboxes = spec, spec.resources, use_gpus, inboxes
        self.live: dict[Any, Attempt] = {}  # Ray object ref -> attempt
        self.current: dict[str, Attempt] = {}  # cell key -> its live attempt
        # A run with no heartbeat for the grace period is lost; beat a few times within it.
        self.heartbeat_s = min(5.0, self.res.heartbeat_grace_s / 4)
        # A pruned run stops at its next ctx.report; one that does not (a long evaluation, or it caught Pruned and
        # went on) has its worker killed this long after the decision, so its GPU does not wait on it.
        self.prune_grace_s = max(10.0, 4 * self.heartbeat_s)
        self._drained_at = 0.0  # time.monotonic() of the last inbox drain

    def request(self, job: Job, alone: bool) -> tuple[float, float]:
        """(num_gpus, num_cpus) of an attempt of ``job``; ``alone``: a retry with nothing beside it."""
        gpus = job.gpus if self.use_gpus else 0.0
        if alone:
            return alone_request(gpus, self.res.cpus_per_run, _largest_node_cpus())
        return gpus, self.res.cpus_per_run

    def submit(self, job: Job, number: int, alone: bool) -> None:
        from orchestrator.execution.ray_tasks import run_cell_task

        res = self.res
        gpus, cpus = self.request(job, alone)
        # max_calls: how many runs one worker process serves before Ray replaces it. Ray's default for GPU tasks
        # is 1 (a fresh process per run); warm reuse needs the process, and the model it loaded, to live on. A run
        # retried alone gets a fresh process: memory an earlier run left behind may be what it ran out of.
        warm = res.warm_reuse and not alone
        task = run_cell_task(res.max_runs_per_worker if warm else 1).options(num_cpus=cpus, num_gpus=gpus,
                                                                            max_retries=0)
        payload = {
            "study": self.spec.study, "experiment": self.spec.experiment, "cell_key": job.cell.key,
            "seed": job.cell.seed, "params": job.params, "response": self.spec.response.metric,
            "artifact_dir": job.artifact_dir, "num_cpus": max(1, int(cpus)), "gpus": gpus, "warm_reuse": warm,
            "attempt": number, "heartbeat_s": self.heartbeat_s, "inputs": job.inputs,
        }
        attempt = Attempt(job, number, gpus, cpus)
        self.live[task.remote(payload, self.inboxes.handles())] = attempt
        self.current[job.cell.key] = attempt

    def prune(self, key: str) -> None:
        """Stop the live attempt of ``key``: its next ``ctx.report`` raises ``Pruned`` (the inbox's reply says so),
        and ``watch`` kills it if it has not ended ``prune_grace_s`` later."""
        attempt = self.current.get(key)
        if attempt is not None and attempt.pruned is None:
            attempt.pruned = time.monotonic()
            self.inboxes.stop(key, attempt.number)

    def drain(self) -> Iterator[Event]:
        batches, beats = self.inboxes.drain()
        now = self._drained_at = time.monotonic()
        for key, number in beats:
            if (attempt := self._attempt(key, number)) is not None:
                attempt.last_beat = now
        yield from self._events(batches, now)

    def _events(self, batches: list[tuple[str, int, list[tuple[str, Any]]]], now: float) -> Iterator[Event]:
        """Started and Progress events out of batches of attempts' events (drained, or the tail a result carried), in
        order; the points of consecutive batches go in one Progress."""
        points: list[tuple[str, int, dict[str, float]]] = []
        for key, number, items in batches:
            attempt = self._attempt(key, number)
            if attempt is None:
                continue  # sent by an attempt that was killed (timeout, lost): its run has moved on
            attempt.batches += any(kind != "started" for kind, _ in items)
            for kind, data in items:
                if kind != "started":
                    points.append((key, *data))
                    continue
                if attempt.started is not None:
                    continue  # already taken from its result (a tail that carried its start: the inbox had died)
                if points:
                    yield Progress(points)
                    points = []
                attempt.started = attempt.last_beat = now
                attempt.started_at, attempt.host, attempt.device = data["started_at"], data["host"], data["device"]
                yield Started(**data, attempt=number, gpus=attempt.gpus)
        if points:
            yield Progress(points)

    def watch(self) -> Iterator[Event]:
        """Kill the attempts past resources.timeout_s, or without a heartbeat for heartbeat_grace_s (after a drain:
        what they sent before is kept)."""
        import ray

        now, timeout, grace = time.monotonic(), self.res.timeout_s, self.res.heartbeat_grace_s
        kills = []
        for ref, attempt in list(self.live.items()):
            if attempt.started is None:
                continue  # queued: Ray has not started it, so neither clock runs
            if attempt.pruned is not None and now - attempt.pruned > self.prune_grace_s:
                kind, message = "pruned", (f"pruned; it did not stop at a ctx.report within {self.prune_grace_s:g} s "
                                           "of the decision, so its worker was killed")
            elif timeout is not None and now - attempt.started > timeout:
                kind, message = "timeout", f"ran past resources.timeout_s = {timeout:g} s; its worker was killed"
            elif now - attempt.last_beat > grace:
                kind, message = "lost", (f"no heartbeat for {now - attempt.last_beat:.0f} s (resources."
                                         f"heartbeat_grace_s = {grace:g}): its worker froze or died unreported; "
                                         "killed")
            else:
                continue
            kills.append((ref, attempt, kind, message))
        if kills:
            yield from self.drain()
        for ref, attempt, kind, message in kills:
            ray.cancel(ref, force=True)  # force: kill the worker process, which frees its GPU for the next run
            yield from self.end(ref, self._failure(attempt, kind, message))

    def end(self, ref: Any, result: RunResult) -> Iterator[Event]:
        attempt = self.live.pop(ref)
        key = attempt.job.cell.key
        del self.current[key]
        decision = decide(result.error_kind, attempt.number, self.res.max_retries)
        if result.status != RunStatus.COMPLETE and decision.retry:
            yield Retry(key, result, attempt.number, decision.alone)  # the scheduler queues the next attempt
        else:
            yield Finished(key, result)

    def result(self, ref: Any) -> tuple[RunResult, list, int | None]:
        """The attempt's result, the events it had not sent yet (they came back with it), and how many batches it
        had sent to the inbox (None: unknown, its worker died)."""
        import ray

        try:
            raw = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # our task wrapper raised: a bug, not a crash
            return self._failure(self.live[ref], "exception", f"{type(exc).__name__}: {exc}", str(exc)), [], None
        except ray.exceptions.OutOfMemoryError as exc:  # Ray's memory monitor killed it: the node ran out of RAM
            return self._failure(self.live[ref], "oom", f"{type(exc).__name__}: {exc}"), [], None
        except ray.exceptions.RayError as exc:
            # The experiment's own exceptions are caught in the worker; reaching here means the worker process or
            # node died (SIGKILL, the kernel's OOM killer, preemption, a segfault in a kernel).
            return self._failure(self.live[ref], "worker_died", f"{type(exc).__name__}: {exc}"), [], None
        tail, sent = raw.pop("tail", []), raw.pop("batches", 0)
        return RunResult(**raw), tail, sent

    def step(self, poll: Callable[[], None] | None = None, wait_s: float = 0.5) -> Iterator[Event]:
        """Wait up to ``wait_s`` for an attempt to end, and yield what happened meanwhile (``poll`` is called
        first): every attempt that has ended by then, not only the first. The inbox is drained at least every
        ``wait_s``, and before a result whose run sent batches not drained yet (its events come before its end)."""
        import ray

        if poll is not None:
            poll()
        if not self.live:
            time.sleep(0.05)  # nothing runs: the driver is about to submit or to stop
            return
        ready, rest = ray.wait(list(self.live), num_returns=1, timeout=wait_s)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        ended = [(ref, *self.result(ref)) for ref in ready]
        behind = any(sent is None or sent > self.live[ref].batches for ref, _, _, sent in ended)
        if behind or time.monotonic() - self._drained_at >= wait_s:
            yield from self.drain()
        now = time.monotonic()
        for ref, result, tail, _ in ended:
            attempt = self.live[ref]
            if attempt.started is None and result.started_at is not None:
                # Its "started" batch is in the inbox, not drained yet (nothing else was): the result says the same.
                attempt.started, attempt.started_at = now, result.started_at
                attempt.host, attempt.device = result.host, result.device
                yield Started(attempt.job.cell.key, result.host, result.device, result.started_at, attempt.number,
                              attempt.gpus)
            yield from self._events([(attempt.job.cell.key, attempt.number, tail)], now)
            yield from self.end(ref, result)
        yield from self.watch()

    def used(self) -> tuple[float, float]:
        """(GPUs, CPUs) the live attempts hold (or wait for, when Ray has queued them)."""
        return sum(a.gpus for a in self.live.values()), sum(a.cpus for a in self.live.values())

    def running_for(self, key: str) -> float | None:
        """Seconds since the live attempt of cell ``key`` started; None if it has not started or is not live."""
        attempt = self.current.get(key)
        return time.monotonic() - attempt.started if attempt is not None and attempt.started is not None else None

    def cancel_all(self) -> None:
        import ray

        for ref in self.live:
            ray.cancel(ref, force=True)

    def _attempt(self, key: str, number: int) -> Attempt | None:
        attempt = self.current.get(key)
        return attempt if attempt is not None and attempt.number == number else None

    def _failure(self, attempt: Attempt, kind: str, message: str, traceback: str | None = None) -> RunResult:
        """The result of an attempt that did not return one: killed by us, or its worker died."""
        now = datetime.now(UTC)
        wall = time.monotonic() - attempt.started if attempt.started is not None else None
        metrics = {"wall_s": wall, "gpu_s": wall * attempt.gpus} if wall is not None else {}
        return RunResult(status=status_of(kind), metrics=metrics, started_at=attempt.started_at, finished_at=now,
                         wall_s=wall, host=attempt.host, device=attempt.device, error_kind=kind,
                         error_message=message[:2000], traceback=traceback)


def _largest_node_cpus() -> float:
    import ray

    return max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")), default=1.0)
