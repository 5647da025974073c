from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.cells import Cell
    from orchestrator.spec import Spec


@dataclass(frozen=True)
class WavePlan:
    cells: list[Cell]
    design: str  # name of the design the cells come from, stored with the wave
    reason: str  # why this wave, in words; stored and shown by `wavesweep status`


class Strategy(ABC):
    """Proposes waves; never runs them.

    Call order: the driver calls ``next_wave(known_keys, runs_per_wave, runs)`` with the cell keys the store already
    holds for the study and its run records (``Store.runs``), runs the returned wave, and calls again until it
    returns ``None``. Strategies keep no state between calls that the store does not hold, so a resumed study gets
    the same answers. An ``adaptive`` strategy's later waves depend on results, so a plan can show only its first.
    """

    adaptive = False

    def __init__(self, spec: Spec):
        self.spec = spec

    @abstractmethod
    def next_wave(self, known_keys: set[str], runs_per_wave: int, runs: list[dict] = ()) -> WavePlan | None: ...

    def check_budget(self, runs_per_wave: int) -> None:
        """Raise a SpecError when the plan cannot fit the spec's budget; called before anything is stored."""

    @abstractmethod
    def planned_runs(self) -> int:
        """Runs the whole plan needs (for budgets and progress)."""
