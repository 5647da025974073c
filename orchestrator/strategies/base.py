from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from orchestrator.run_record import RunRecord, records, spent_hours

if TYPE_CHECKING:
    from orchestrator.cells import Cell, WavePlan
    from orchestrator.spec import Spec


class Strategy(ABC):
    """Proposes waves; never runs them.

    Call order: the driver calls ``next_wave(known_keys, runs_per_wave, runs)`` with the cell keys the store already
    holds for the study and its run records (``Store.runs``; a flat row is taken as one), runs the returned wave,
    and calls again until it returns ``None``. When it returns ``None`` a strategy may say why in ``stop_reason``
    (set by that call; the driver stores it with the study). Strategies keep no other state between calls that the
    store does not hold, so a resumed study gets the same answers. An ``adaptive`` strategy's later waves depend on results, so a plan
    can show only its first.
    """

    adaptive = False
    name = "strategy"
    runs_per_wave: int | None = None  # the wave size it was built for (create_strategy), None when built directly
    extras: tuple[str, ...] = ()  # the install extras it needs (orchestrator/extras.py), checked before a run

    def __init__(self, spec: Spec):
        self.spec = spec
        self.stop_reason: str | None = None  # why the latest next_wave returned None, when it knows
        self.max_waves: int | None = spec.strategy.max_waves

    def next_wave(self, known_keys: set[str], runs_per_wave: int, runs: Iterable[Mapping] = ()) -> WavePlan | None:
        return self.propose(known_keys, runs_per_wave, records(runs))

    @abstractmethod
    def propose(self, known_keys: set[str], runs_per_wave: int, runs: list[RunRecord]) -> WavePlan | None:
        """The next wave's cells given the study's runs so far, or None when the study is done."""

    def check_budget(self, runs_per_wave: int) -> None:
        """Raise a SpecError when the plan cannot fit the spec's budget; called before anything is stored."""

    @abstractmethod
    def planned_runs(self) -> int:
        """Runs the whole plan needs (for budgets and progress)."""

    def budget_stop(self, runs: list[Mapping], cells: list[Cell] | None = None) -> str | None:
        """Why the study must stop here for its budget, or None. Without ``cells``: whether another wave may
        start at all (``max_waves``, ``max_runs``, ``max_gpu_hours`` already reached); with the ``cells`` of a
        proposed wave: whether that wave fits what is left. The GPU-hours of the next wave are predicted as the
        mean cost of the runs that reported one x its runs; before any run has, the wave runs."""
        limits = self.spec.strategy
        waves = len({r["wave"] for r in runs})
        spent, per_run = spent_hours(runs)
        if cells is None:
            if self.max_waves is not None and waves >= self.max_waves:
                return f"max_waves reached: {waves} waves run, max_waves {self.max_waves}"
            if limits.max_runs is not None and len(runs) >= limits.max_runs:
                return f"max_runs reached: {len(runs)} runs recorded, max_runs {limits.max_runs}"
            if limits.max_gpu_hours is not None and spent >= limits.max_gpu_hours:
                return f"GPU-hours budget spent: {spent:.3g} GPU-h used, max_gpu_hours {limits.max_gpu_hours:g}"
            return None
        if limits.max_runs is not None and len(runs) + len(cells) > limits.max_runs:
            return (f"the next wave would need {len(cells)} runs, {max(0, limits.max_runs - len(runs))} left of "
                    f"max_runs {limits.max_runs}")
        if limits.max_gpu_hours is not None and per_run is not None:
            need, left = per_run * len(cells), limits.max_gpu_hours - spent
            if need > left:
                return (f"the next wave would need ~{need:.3g} GPU-h ({len(cells)} runs at {per_run:.3g} GPU-h "
                        f"each), {max(0.0, left):.3g} left of max_gpu_hours {limits.max_gpu_hours:g}")
        return None
