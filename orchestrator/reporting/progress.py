"""What `wavesweep run` shows while a study runs: a progress bar per open wave, and a line per finished run.

Waves overlap (a grid's later waves start on idle devices; an adaptive wave's stragglers run on past its deadline),
so there is one Rich display for the study with a bar per open wave; Rich allows one live display at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

if TYPE_CHECKING:
    from orchestrator.execution.events import Event


class StudyProgress:
    """A driver listener (``orchestrator.execution.outcome.Listener``) printing to ``console``."""

    def __init__(self, metric: str, console: Console):
        self.metric, self.console = metric, console
        self.progress: Progress | None = None
        self.tasks: dict[int, int] = {}  # wave number -> its bar
        self.wave_of: dict[str, int] = {}  # cell key -> wave number
        self.levels: dict[str, str] = {}  # cell key -> its levels in words
        self.running: dict[int, int] = {}

    def wave_started(self, number: int, cells: list, reason: str) -> None:
        self._print(f"[bold]Wave {number}[/]: {len(cells)} runs ({escape(reason)}){self._overlap()}")
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=self.console)
            self.progress.start()
        self.tasks[number] = self.progress.add_task(f"wave {number}", total=len(cells), state="")
        self.running[number] = 0
        for cell in cells:
            self.wave_of[cell.key] = number
            self.levels[cell.key] = _words(cell)

    def event(self, event: Event) -> None:
        from orchestrator.execution.events import Finished, Retry, Started

        key = getattr(event, "cell_key", None)
        number = self.wave_of.get(key)
        if number is None or number not in self.tasks:
            return  # learning-curve points, or a run added to a wave after it started (counted when it ends)
        if isinstance(event, Started):
            self.running[number] += 1
        elif isinstance(event, Retry):
            self.running[number] = max(0, self.running[number] - 1)
            how = "alone" if event.alone else "again"
            self._print(f"  {'RETRY':<8} {self.levels[key]}  {escape(str(event.result.error_kind))} on attempt "
                        f"{event.attempt}; runs {how}")
        elif isinstance(event, Finished):
            self.running[number] = max(0, self.running[number] - 1)
            self.progress.advance(self.tasks[number])
            result = event.result
            value = result.metrics.get(self.metric)
            shown = escape(f"{self.metric}={value:.4g}" if value is not None else (result.error_kind or ""))
            self._print(f"  {result.status.value:<8} {self.levels[key]}  {shown}  ({result.wall_s or 0:.1f} s)")
        self.progress.update(self.tasks[number], state=f"{self.running[number]} running")

    def cells_added(self, number: int, cells: list) -> None:
        """Runs added to an open wave (backfill replicates): its bar grows."""
        if number in self.tasks:
            for cell in cells:
                self.wave_of[cell.key] = number
                self.levels[cell.key] = _words(cell) + " (backfill)"
            self.progress.update(self.tasks[number], total=self._task(number).total + len(cells))

    def deadline_passed(self, number: int, running: int, limit_s: float) -> None:
        self._print(f"Wave {number}: deadline passed ({limit_s:.3g} s); the next wave is designed from its finished "
                    f"runs while {running} run on")

    def wave_finished(self, number: int) -> None:
        task = self.tasks.pop(number, None)
        if task is not None:
            self.progress.remove_task(task)
            # Waves overlap, so a later wave can end first: say so, or "Wave 2 finished" before "Wave 1
            # finished" reads as a bug.
            earlier = [n for n in sorted(self.tasks) if n < number]
            self._print(f"Wave {number} finished" + (f", before {self._still_open(earlier)}" if earlier else ""))
        if not self.tasks and self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _overlap(self) -> str:
        """For a wave that starts while others are open: which ones run on beside it."""
        return f"; starts while {self._still_open(sorted(self.tasks))}" if self.tasks else ""

    def _still_open(self, numbers: list[int]) -> str:
        left = [f"wave {n} ({self._left(n)} runs to go)" for n in numbers]
        return ", ".join(left) + (" runs" if len(left) == 1 else " run") + " on (waves overlap)"

    def _left(self, number: int) -> int:
        task = self._task(number)
        return int(task.total - task.completed)

    def _task(self, number: int):
        """The wave's Rich task. ``Progress.tasks`` is a list in which a removed task's successors move up, so a
        task id is not an index into it once a wave has finished."""
        return next(task for task in self.progress.tasks if task.id == self.tasks[number])

    def _print(self, text: str) -> None:
        """``text`` is markup: user strings in it (levels, reasons, errors) are escaped by the caller."""
        (self.progress.console if self.progress else self.console).print(text, highlight=False, soft_wrap=True)


def _words(cell) -> str:
    """The cell's levels, escaped for markup (a level such as "[all]" would otherwise vanish)."""
    return escape(" ".join(f"{k}={v}" for k, v in cell.levels.items()) + f" seed={cell.seed}")
