"""What a study will run before it runs: waves, which effects each prefix of waves can estimate, and the cost."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator.analysis import design_matrix, factor_infos
from orchestrator.analysis.aliasing import find_aliasing
from orchestrator.cells import Cell
from orchestrator.spec import Spec
from orchestrator.strategies import create_strategy


@dataclass(frozen=True)
class Estimability:
    """After a prefix of the waves: the estimable terms (main effects and two-way interactions; quadratics of
    3+-level numeric factors too) and, for each term the runs cannot separate, what its effect is mixed into."""

    after_wave: int
    runs: int
    estimable: tuple[str, ...]
    aliased: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Plan:
    runs_per_wave: int
    waves: list[list[Cell]]
    reasons: list[str]
    estimability: list[Estimability]
    minutes_per_run: float | None
    gpus_per_run: float
    adaptive: bool  # later waves are chosen from results: only the first is planned
    mode: str  # the strategy that will run (auto resolved from the wave size, as `wavesweep run` resolves it)

    @property
    def runs(self) -> int:
        return sum(len(w) for w in self.waves)

    @property
    def gpu_hours(self) -> float | None:
        if self.minutes_per_run is None:
            return None
        return self.runs * self.minutes_per_run * max(self.gpus_per_run, 1e-9) / 60

    @property
    def wall_hours(self) -> float | None:
        """Waves run one after another; a wave's runs in parallel (at most runs_per_wave at once)."""
        return None if self.minutes_per_run is None else len(self.waves) * self.minutes_per_run / 60

    def to_dict(self) -> dict[str, Any]:
        """What `wavesweep plan --format json` prints (costs are null without a per-run estimate)."""
        return {
            "mode": self.mode, "adaptive": self.adaptive, "runs_per_wave": self.runs_per_wave, "runs": self.runs,
            "waves": [{"number": n, "reason": reason, "cells": [{"levels": c.levels, "seed": c.seed} for c in cells]}
                      for n, (cells, reason) in enumerate(zip(self.waves, self.reasons), start=1)],
            "estimability": [{"after_wave": e.after_wave, "runs": e.runs, "estimable": list(e.estimable),
                              "not_separable": {term: list(mixed) for term, mixed in e.aliased.items()}}
                             for e in self.estimability],
            "minutes_per_run": self.minutes_per_run, "gpus_per_run": self.gpus_per_run,
            "gpu_hours": self.gpu_hours, "wall_hours": self.wall_hours,
        }


def make_plan(spec: Spec, runs_per_wave: int, minutes_per_run: float | None) -> Plan:
    strategy = create_strategy(spec, runs_per_wave)
    strategy.check_budget(runs_per_wave)
    waves, reasons, known = [], [], set()
    while (wave := strategy.next_wave(known, runs_per_wave)) is not None:
        waves.append(wave.cells)
        reasons.append(wave.reason)
        known |= {c.key for c in wave.cells}
        if strategy.adaptive:
            break  # later waves are chosen from the results
    infos = factor_infos(spec.factors)
    estimability = []
    cells: list[Cell] = []
    for number, wave in enumerate(waves, start=1):
        cells += wave
        frame = pd.DataFrame([c.levels for c in cells])
        aliasing = find_aliasing(design_matrix(frame, infos, max_order=2).matrix)
        estimable = tuple(t for t in aliasing.kept if t != "Intercept")
        estimability.append(Estimability(number, len(cells), estimable, dict(aliasing.dropped)))
    return Plan(runs_per_wave, waves, reasons, estimability, minutes_per_run, spec.resources.gpus_per_run,
                strategy.adaptive, strategy.name)


def median_minutes(runs: list[dict]) -> float | None:
    """Median wall time of a study's COMPLETE runs, in minutes (the per-run estimate when there is history)."""
    walls = [r["wall_s"] for r in runs if r["status"] == "COMPLETE" and r["wall_s"] is not None]
    return statistics.median(walls) / 60 if walls else None
