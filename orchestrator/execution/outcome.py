"""What the run loop reports: to a :class:`Listener` while a study runs (``reporting/progress.py`` prints it), and at
its end an :class:`Outcome` and `wavesweep run`'s exit status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.execution.executor import Event


class Listener(Protocol):
    """What the run loop tells whoever shows a study's progress (``reporting/progress.py``)."""

    def wave_started(self, number: int, cells: list[Cell], reason: str) -> None: ...
    def event(self, event: Event) -> None: ...
    def wave_finished(self, number: int) -> None: ...
    def cells_added(self, number: int, cells: list[Cell]) -> None: ...  # backfill replicates joined the wave
    def deadline_passed(self, number: int, running: int, limit_s: float) -> None: ...  # stopped waiting for it


# `wavesweep run`'s exit status for a study that ended without a result; 1 stays "an error before or while running".
NO_RESULT = 3


@dataclass(frozen=True)
class Outcome:
    study: str
    planned: int  # runs the whole plan needs
    ran: int  # runs executed by this invocation
    runs_per_wave: int
    mode: str  # the strategy that ran (auto resolved)
    stop_reason: str | None = None  # why the study stopped (also stored with the study)


def exit_code(runs: list[Mapping]) -> int:
    """`wavesweep run`'s exit status once the study ended: 0 when a run is COMPLETE, :data:`NO_RESULT` when none is
    (every run FAILED, DIVERGED, ...), so that a job runner such as ``ray job submit`` reports the study as failed.
    A single COMPLETE run is a result; how many runs failed around it is for `wavesweep status` to say."""
    return 0 if any(r["status"] == "COMPLETE" for r in runs) else NO_RESULT
