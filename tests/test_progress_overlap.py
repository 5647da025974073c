"""The run output of overlapping waves (issue #13, point 4): a later wave that finishes first says so, and a wave that
starts while others run says which. The listener is driven by hand; no Ray."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from orchestrator.cells import make_cell
from orchestrator.execution.events import Finished
from orchestrator.reporting.progress import StudyProgress
from orchestrator.run_record import RunResult, RunStatus

T0 = datetime(2026, 1, 2, tzinfo=UTC)


def cells(wave: int, n: int) -> list:
    return [make_cell("overlap", {"lr": 0.1 * (i + 1), "wave": wave}, 0) for i in range(n)]


def finish(listener: StudyProgress, cell) -> None:
    listener.event(Finished(cell.key, RunResult(status=RunStatus.COMPLETE, metrics={"loss": 1.0}, started_at=T0,
                                                finished_at=T0, wall_s=1.0)))


def lines(console: Console) -> list[str]:
    return [" ".join(line.split()) for line in console.export_text().splitlines() if line.startswith("Wave")]


def test_a_later_wave_that_finishes_first_says_the_earlier_one_runs_on():
    console = Console(record=True, width=200, force_terminal=False)
    listener = StudyProgress("loss", console)
    first, second = cells(1, 3), cells(2, 2)
    listener.wave_started(1, first, "grid block 1")
    finish(listener, first[0])
    listener.wave_started(2, second, "grid block 2")
    for cell in second:
        finish(listener, cell)
    listener.wave_finished(2)
    for cell in first[1:]:
        finish(listener, cell)
    listener.wave_finished(1)
    assert lines(console) == [
        "Wave 1: 3 runs (grid block 1)",
        "Wave 2: 2 runs (grid block 2); starts while wave 1 (2 runs to go) runs on (waves overlap)",
        "Wave 2 finished, before wave 1 (2 runs to go) runs on (waves overlap)",
        "Wave 1 finished",
    ]


def test_backfill_grows_the_right_wave_after_an_earlier_one_finished():
    """Rich's task list closes up when a wave's bar goes: a wave's bar is found by its id, not at that index."""
    console = Console(record=True, width=200, force_terminal=False)
    listener = StudyProgress("loss", console)
    first, second = cells(1, 1), cells(2, 1)
    listener.wave_started(1, first, "a")
    listener.wave_started(2, second, "b")
    finish(listener, first[0])
    listener.wave_finished(1)
    listener.cells_added(2, cells(9, 2))
    listener.wave_started(3, cells(3, 1), "c")
    assert lines(console)[-1] == "Wave 3: 1 runs (c); starts while wave 2 (3 runs to go) runs on (waves overlap)"
