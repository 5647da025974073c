"""Scoring for bench/search_quality.py: regret of the recommended (best observed) run, the best-so-far curve, the
pairs a method reports against the surface's true pairs (wavesweep's fANOVA for the sampling peers), and the text of
the report's cells."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.search_methods import RUNS_PER_WAVE, _pair
from experiments.surface import Surface
from orchestrator.analysis import FactorInfo, decompose

BOOTSTRAP, PERMUTATIONS = 100, 99  # decompose()'s defaults: what `wavesweep analyze` uses


@dataclass(frozen=True)
class Outcome:
    regret: float
    runs: int
    curve: tuple[float, ...]  # regret of the recommendation after 16, 32, ... runs
    batches: tuple[int, ...]
    reported: frozenset[frozenset[str]] | None  # None: the method reports no pairs (or they were not computed)
    designed: frozenset[frozenset[str]] | None  # waves: the designed waves' OLS pairs, printed on a line of its own
    seconds: float  # the search, wall clock
    cpu_seconds: float  # the search, CPU time of the process (less sensitive to a busy machine)
    pair_seconds: float  # the pair analysis, wall clock


def checkpoints(budget: int) -> list[int]:
    """Run counts at which the best-so-far is read: after each 16 runs, and the budget."""
    return [min(k * RUNS_PER_WAVE, budget) for k in range(1, math.ceil(budget / RUNS_PER_WAVE) + 1)]


def regret_of_best(surface: Surface, points: list[dict], values: list[float]) -> float:
    """Regret of the best observed run (a method with no runs yet has none: infinite regret)."""
    if not points:
        return math.inf
    pick = np.argmin if surface.goal == "minimize" else np.argmax
    return surface.regret(points[int(pick(values))])


def reported_by_fanova(surface: Surface, points: list[dict], values: list[float], seed: int,
                       bootstrap: int = BOOTSTRAP, permutations: int = PERMUTATIONS) -> frozenset:
    frame = pd.DataFrame(points).assign(y=values)
    infos = {n: FactorInfo(tuple(sorted(frame[n].unique())), box.scale)
             for n, box in surface.factors.items() if frame[n].nunique() >= 2}
    result = decompose(frame, infos, "y", seed=seed, n_bootstrap=bootstrap, n_permutations=permutations,
                       look_ahead=False)  # the pairs are scored; the mains' look-ahead would only cost time
    return frozenset(frozenset(_pair(t.term)) for t in result.terms if t.kind == "pair" and t.verdict == "interaction")


def spread(surface: Surface, n: int = 20_000) -> float:
    rng = np.random.default_rng(0)
    values = [surface.value(surface.random_point(rng)) for _ in range(n)]
    worst = max(values) if surface.goal == "minimize" else min(values)
    return abs(worst - surface.optimum)


def score(surface: Surface, outcomes: list[Outcome]) -> dict:
    row = _score_pairs(surface, [o.reported for o in outcomes if o.reported is not None], len(outcomes))
    designed = [o.designed for o in outcomes if o.designed is not None]
    row["designed"] = _score_pairs(surface, designed, len(outcomes)) if designed else None
    return {**row, "regret_median": statistics.median(o.regret for o in outcomes),
            "regret_mean": statistics.fmean(o.regret for o in outcomes),
            "curve": [statistics.median(o.curve[k] for o in outcomes) for k in range(len(outcomes[0].curve))],
            "runs": statistics.fmean(o.runs for o in outcomes),
            "seconds": statistics.fmean(o.seconds for o in outcomes),
            "cpu_seconds": statistics.fmean(o.cpu_seconds for o in outcomes),
            "pair_seconds": statistics.fmean(o.pair_seconds for o in outcomes),
            "batches": sorted({batch_text(o.batches) for o in outcomes}),
            "rounds": statistics.fmean(len(o.batches) for o in outcomes)}


def _score_pairs(surface: Surface, found: list[frozenset], n: int) -> dict:
    true = surface.interactions
    hits = sum(len(r & true) for r in found)
    reported = sum(len(r) for r in found)
    recall = hits / (len(true) * len(found)) if found and true else math.nan
    fdr = (reported - hits) / reported if reported else math.nan
    return {"recall": recall if found else None, "fdr": fdr if found else None,
            "reported": reported / n if found else None}


def waves_to_reach(curve: list[float], target: float | None) -> str:
    if target is None:
        return "n/a"
    for k, regret in enumerate(curve, start=1):
        if regret <= target + 1e-12:
            return str(k)
    return f">{len(curve)}"


def batch_text(batches) -> str:
    """Batch sizes, run-length coded: [16, 16, 16, 8] -> "16x3,8"."""
    parts: list[str] = []
    for size, group in itertools.groupby(batches):
        count = len(list(group))
        parts.append(f"{size}x{count}" if count > 1 else str(size))
    return ",".join(parts)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "n/a" if math.isnan(x) else f"{x:.2f}"

