"""The experiment of ``bench/scheduling.py``: sleep for the duration that a table fixes for this cell.

``params["durations"]`` is a JSON file mapping :func:`cell_id` of (model, learning_rate, lora_rank) to seconds, so
every scheduler under test (wavesweep's waves, Ray Tune) runs exactly the same work. The run returns its own
wall-clock start and end (``time.time()``), from which the bench measures the makespan.

``rendezvous`` (a directory) and ``rendezvous_n``, for the bench's warm-up only: after its start a run waits until
n runs have started before it sleeps, so n runs are in flight at once and n worker processes get started (runs of
0.2 s alone finish before Ray has started more than a few workers on 2 cores, which then reuses those).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any


def cell_id(model: str, learning_rate: float, lora_rank: int) -> str:
    """The table's key of a cell (floats as JSON writes them, the same on both sides)."""
    return json.dumps([model, float(learning_rate), int(lora_rank)])


@functools.cache
def load_durations(path: str) -> dict[str, float]:
    """The cell -> seconds table; read once per worker process."""
    with open(path) as f:
        return json.load(f)


def duration_of(params: dict[str, Any]) -> float:
    table = load_durations(params["durations"])
    return float(table[cell_id(params["model"], params["learning_rate"], params["lora_rank"])])


def sleep_for(params: dict[str, Any]) -> dict[str, float]:
    """Sleep this cell's duration; the metrics both schedulers report (``pid``: to count the worker processes)."""
    duration = duration_of(params)
    t_start = time.time()
    if params.get("rendezvous"):
        _rendezvous(params["rendezvous"], int(params["rendezvous_n"]))
    time.sleep(duration)
    return {"loss": duration, "t_start": t_start, "t_end": time.time(), "pid": float(os.getpid())}


def run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """wavesweep's entry point (``bench.sleep_experiment:run``); ``ctx`` (a RunContext) is not needed."""
    return sleep_for(params)


def _rendezvous(directory: str, n: int, timeout_s: float = 120.0) -> None:
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, f"{os.getpid()}-{time.time_ns()}"), "w").close()
    deadline = time.time() + timeout_s
    while len(os.listdir(directory)) < n and time.time() < deadline:
        time.sleep(0.05)
