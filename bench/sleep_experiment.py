"""The experiment of ``bench/scheduling.py``: sleep for the duration that a table fixes for this cell.

``params["durations"]`` is a JSON file mapping :func:`cell_id` of (model, learning_rate, lora_rank) to seconds, so
every scheduler under test (wavesweep's waves, Ray Tune) runs exactly the same work. The run returns its own
wall-clock start and end (``time.time()``), from which the bench measures the makespan.
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
    time.sleep(duration)
    return {"loss": duration, "t_start": t_start, "t_end": time.time(), "pid": float(os.getpid())}


def run(params: dict[str, Any], ctx: Any) -> dict[str, float]:
    """wavesweep's entry point (``bench.sleep_experiment:run``); ``ctx`` (a RunContext) is not needed."""
    return sleep_for(params)

