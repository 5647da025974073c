"""The Ray remote functions and actors; imported only where Ray is (the executor and its workers)."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import ray

from orchestrator.execution.worker import run_cell

PRUNE_CHECK_S = 0.05  # how often a reporting run looks whether it was pruned (a look costs a non-blocking ray.wait)


@ray.remote
class Inbox:
    """Collects worker events (run started, learning-curve points) and heartbeats until the driver drains them.

    Every event and heartbeat carries its (cell key, attempt), so the driver can drop what a killed attempt sent late.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, int, str, Any]] = []
        self._beats: set[tuple[str, int]] = set()
        self._stop: set[tuple[str, int]] = set()

    def put(self, item: tuple[str, int, str, Any]) -> bool:
        """Take an event; the reply says whether the driver has pruned the attempt that sent it."""
        self._items.append(item)
        return (item[0], item[1]) in self._stop

    def stop(self, cell_key: str, attempt: int) -> None:
        """The driver pruned this attempt: its next report learns it from the reply to its put."""
        self._stop.add((cell_key, attempt))

    def beat(self, cell_key: str, attempt: int) -> None:
        self._beats.add((cell_key, attempt))

    def drain(self) -> tuple[list[tuple[str, int, str, Any]], set[tuple[str, int]]]:
        """(events in order, the attempts that sent a heartbeat) since the last drain."""
        items, self._items = self._items, []
        beats, self._beats = self._beats, set()
        return items, beats


@functools.cache
def run_cell_task(max_calls: int) -> Any:
    """The remote run function with this ``max_calls`` (Ray only takes it at decoration, not in .options())."""
    return ray.remote(max_calls=max_calls)(_run_cell)


def _run_cell(payload: dict[str, Any], inbox: Any) -> dict[str, Any]:
    key, attempt = payload["cell_key"], payload["attempt"]
    last: list[Any] = []
    probe: dict[str, Any] = {"ref": None, "at": 0.0, "stop": False}

    def sink(kind: str, data: Any) -> bool:
        # Fire and forget keeps ctx.report cheap; calls from one worker to an actor run in order.
        last[:] = [inbox.put.remote((key, attempt, kind, data))]
        if kind == "started":
            # Wait for this one: the driver's heartbeat and timeout clocks start with it, and a process that froze
            # right after sending it (before Ray's I/O thread flushed the call) would otherwise never be noticed.
            ray.get(last[0])
        # The reply to a put says whether the driver pruned the run: one reply is looked at, without waiting, at
        # most every PRUNE_CHECK_S; once it has come, the next put's reply is the one to look at.
        now = time.monotonic()
        if probe["ref"] is None:
            probe["ref"] = last[0]
        elif not probe["stop"] and now - probe["at"] >= PRUNE_CHECK_S:
            probe["at"] = now
            ready, _ = ray.wait([probe["ref"]], timeout=0)
            if ready:
                probe["stop"], probe["ref"] = bool(ray.get(ready[0])), last[0]
        return probe["stop"]

    # The heartbeat comes from a thread of its own, so it needs nothing from the experiment (which may never call
    # ctx.report). It stops when the process dies or is frozen, which is what the driver watches for.
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(payload["heartbeat_s"]):
            inbox.beat.remote(key, attempt)

    threading.Thread(target=beat, name="wavesweep-heartbeat", daemon=True).start()
    try:
        gpu_ids = tuple(int(g) for g in ray.get_gpu_ids())
        result = run_cell(payload, sink, gpu_ids)
        if last:
            ray.get(last[0])  # every event is in the inbox before the result is: the driver drains after ray.wait
    finally:
        stop.set()
    return result
