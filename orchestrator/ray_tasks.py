"""The Ray remote functions and actors; imported only where Ray is (the executor and its workers)."""

from __future__ import annotations

import functools
from typing import Any

import ray

from orchestrator.worker import run_cell


@ray.remote
class Inbox:
    """Collects worker events (run started, learning-curve points) until the driver drains them."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Any]] = []

    def put(self, item: tuple[str, Any]) -> None:
        self._items.append(item)

    def drain(self) -> list[tuple[str, Any]]:
        items, self._items = self._items, []
        return items


@functools.cache
def run_cell_task(max_calls: int) -> Any:
    """The remote run function with this ``max_calls`` (Ray only takes it at decoration, not in .options())."""
    return ray.remote(max_calls=max_calls)(_run_cell)


def _run_cell(payload: dict[str, Any], inbox: Any) -> dict[str, Any]:
    last: list[Any] = []

    def sink(kind: str, data: Any) -> None:
        # Fire and forget keeps ctx.report cheap; calls from one worker to an actor run in order.
        last[:] = [inbox.put.remote((kind, data))]

    gpu_ids = tuple(int(g) for g in ray.get_gpu_ids())
    result = run_cell(payload, sink, gpu_ids)
    if last:
        ray.get(last[0])  # every event is in the inbox before the result is: the driver drains after ray.wait
    return result
