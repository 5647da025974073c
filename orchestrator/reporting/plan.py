"""What a study will run before it runs: waves, which effects each prefix of waves can estimate, and the cost."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator.analysis import design_matrix, factor_infos
from orchestrator.analysis.aliasing import find_aliasing
from orchestrator.cells import Cell
from orchestrator.sizing import run_request
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
    gpus_per_run: float | str  # as the spec gives it ("auto" stays "auto")
    run_gpus: tuple[float, ...]  # what each planned run asks for (with auto: its share of a GPU)
    adaptive: bool  # later waves are chosen from results: only the first is planned
    mode: str  # the strategy that will run (auto resolved from the wave size, as `wavesweep run` resolves it)
    slots: int  # runs at once: the GPUs (or CPU slots) given to `plan`, else a wave's runs
    overlap: bool  # a grid's later waves start as runs end (the driver's lookahead), not after the wave's last run

    @property
    def runs(self) -> int:
        return sum(len(w) for w in self.waves)

    @property
    def gpu_hours(self) -> float | None:
        return None if self.minutes_per_run is None else sum(self.run_gpus) * self.minutes_per_run / 60

    @property
    def run_hours(self) -> float | None:
        """Wall time of the runs added up: the budget's unit (max_gpu_hours) for runs that take no GPU."""
        return None if self.minutes_per_run is None else self.runs * self.minutes_per_run / 60

    @property
    def wall_hours(self) -> float | None:
        """Rounds of ``slots`` runs: over all runs when waves overlap, wave by wave when each waits for the last."""
        if self.minutes_per_run is None:
            return None
        rounds = (math.ceil(self.runs / self.slots) if self.overlap
                  else sum(math.ceil(len(w) / self.slots) for w in self.waves))
        return rounds * self.minutes_per_run / 60

    def size_text(self) -> str:
        return (f"{_count(self.runs, 'run')} in {_count(len(self.waves), 'wave')} of at most "
                f"{self.runs_per_wave}.")

    def cost_text(self) -> str:
        if self.minutes_per_run is None:
            return "Cost: unknown; pass --minutes-per-run (or run some of the study first)."
        at = f"at {self.minutes_per_run:.2f} min per run"
        if not any(self.run_gpus):
            cost = f"{self.run_hours:.2f} run-hours {at} (the runs take no GPU)"
        else:
            cost = (f"{self.gpu_hours:.2f} GPU-hours {at} x {_gpus_text(self.run_gpus)} ({self.run_hours:.2f} "
                    "run-hours on a cluster without GPUs)")
        how = ("" if len(self.waves) < 2 else " (waves overlap: a grid's later waves start as runs end)"
               if self.overlap else " (one wave after another)")
        return (f"Cost: {cost}; about {self.wall_hours:.2f} h of wall clock with {_count(self.slots, 'run')} at "
                f"once{how}.")

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
            "gpu_hours": self.gpu_hours, "run_hours": self.run_hours, "runs_at_once": self.slots,
            "waves_overlap": self.overlap, "wall_hours": self.wall_hours,
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _gpus_text(gpus: tuple[float, ...]) -> str:
    low, high = min(gpus), max(gpus)
    if low == high:
        return f"{low:g} GPU" + ("s" if low > 1 else "")
    return f"{low:g} to {high:g} GPU each (gpus_per_run: auto)"


def make_plan(spec: Spec, runs_per_wave: int, minutes_per_run: float | None, slots: int | None = None) -> Plan:
    """The plan of ``spec`` in waves of ``runs_per_wave``, ``slots`` runs at a time (default: a wave's runs)."""
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
    run_gpus = tuple(run_request(spec, {**spec.fixed, **cell.levels}) for cell in cells)
    # As the run loop decides (RunLoop.lookahead): only a grid without a GPU-hour budget releases its
    # later waves before the earlier ones end.
    overlap = not strategy.adaptive and spec.strategy.backfill and spec.strategy.max_gpu_hours is None
    return Plan(runs_per_wave, waves, reasons, estimability, minutes_per_run, spec.resources.gpus_per_run, run_gpus,
                strategy.adaptive, strategy.name, slots or runs_per_wave, overlap)


def median_minutes(runs: list[dict]) -> float | None:
    """Median wall time of a study's COMPLETE runs, in minutes (the per-run estimate when there is history)."""
    walls = [r["wall_s"] for r in runs if r["status"] == "COMPLETE" and r["wall_s"] is not None]
    return statistics.median(walls) / 60 if walls else None
