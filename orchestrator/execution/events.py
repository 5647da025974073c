"""What the executor tells the driver about a wave: runs started, learning-curve points, retries, results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.run_record import RunResult


@dataclass(frozen=True)
class Job:
    """A cell as the executor runs it: the run's full params (references resolved), its artifact directory, and the
    GPUs it asks for (``sizing.run_request``: ``resources.gpus_per_run``, or its share with ``auto``)."""

    cell: Cell
    params: dict[str, Any]
    artifact_dir: str
    gpus: float = 1.0
    inputs: dict[str, str] | None = None  # store references it resolved (recorded when it starts)


@dataclass(frozen=True)
class Started:
    cell_key: str
    host: str
    device: str
    started_at: datetime
    attempt: int = 1  # 1-based, counted by this executor
    gpus: float = 0.0  # what this attempt was given (a whole GPU for a retry that runs alone)


@dataclass(frozen=True)
class Progress:
    points: list[tuple[str, int, dict[str, float]]]  # (cell key, step, {metric: value})


@dataclass(frozen=True)
class Retry:
    """Attempt ``attempt`` failed in a way that is retried (``retry.RULES``); the next attempt is already queued."""

    cell_key: str
    result: RunResult  # the failed attempt
    attempt: int
    alone: bool  # the next attempt runs with nothing beside it


@dataclass(frozen=True)
class Finished:
    cell_key: str
    result: RunResult


Event = Started | Progress | Retry | Finished
