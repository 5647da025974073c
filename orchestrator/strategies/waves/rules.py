"""Rules of the adaptive waves that need no geometry: term names, the noise yardstick, the best cell, patience.

Pure functions on fitted effects and run records, so they are tested on their own and replayed the same way on a
resumed study.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from orchestrator.run_record import RunRecord

NOISE_MULTIPLE = 2.0  # patience: an improvement must beat this many noise SDs


def point_means(runs: Sequence[RunRecord], metric: str, factors: Sequence[str]) -> dict[tuple, tuple[float, int]]:
    """Mean response and count per point (factor levels, seeds pooled) over the COMPLETE runs."""
    sums: dict[tuple, list[float]] = {}
    for run in runs:
        value = run.value(metric)
        if value is not None:
            sums.setdefault(tuple(run.levels[n] for n in factors), []).append(value)
    return {point: (sum(v) / len(v), len(v)) for point, v in sums.items()}


def noise_sd(runs: Sequence[RunRecord], metric: str, factors: Sequence[str]) -> float | None:
    """Pooled SD of repeated runs of the same point (pure error: center runs, replicates), None without any."""
    groups: dict[tuple, list[float]] = {}
    for run in runs:
        value = run.value(metric)
        if value is not None:
            groups.setdefault(tuple(run.levels[n] for n in factors), []).append(value)
    ss = sum(sum((v - sum(vs) / len(vs)) ** 2 for v in vs) for vs in groups.values())
    df = sum(len(vs) - 1 for vs in groups.values())
    return math.sqrt(ss / df) if df > 0 else None


def best_cell(runs: Sequence[RunRecord], metric: str, goal: str, factors: Sequence[str]) -> tuple[tuple, float] | None:
    means = point_means(runs, metric, factors)
    if not means:
        return None
    pick = min if goal == "minimize" else max
    point = pick(means, key=lambda p: means[p][0])
    return point, means[point][0]


def patience_stop(runs: Sequence[RunRecord], metric: str, goal: str, factors: Sequence[str], patience: int,
                  region_of: Callable[[list[RunRecord]], dict]) -> str | None:
    """Stop when the last ``patience`` waves that moved the region did not improve the best cell mean by more than
    2 x the noise SD (pooled over repeated points; without any, any improvement counts).

    Waves are replayed in order. Wave 1 sets the reference; a later wave that beats it by the margin resets the
    count (and becomes the reference); a wave that moved the region (its region differs from the previous wave's)
    without doing so adds one; a wave on the same region (fold-over, replicates, response-surface runs) that does
    not improve adds nothing: it was run to learn, not to move.
    """
    by_wave: dict[int, list[RunRecord]] = {}
    for run in runs:
        by_wave.setdefault(run.wave, []).append(run)
    numbers = sorted(by_wave)
    sd = noise_sd(runs, metric, factors)
    margin = NOISE_MULTIPLE * (sd or 0.0)
    sign = 1 if goal == "minimize" else -1
    reference, since, quiet, previous, upto = None, None, 0, None, []
    for number in numbers:
        upto += by_wave[number]
        best = best_cell(upto, metric, goal, factors)
        region = region_of(by_wave[number])
        if best is not None and (reference is None or sign * (reference[1] - best[1]) > margin):
            reference, since, quiet = best, number, 0
        elif previous is not None and region != previous:
            quiet += 1
        previous = region
    if quiet < patience or reference is None:
        return None
    point = ", ".join(f"{n}={v}" for n, v in zip(factors, reference[0]))
    noise = f"2 x noise SD {sd:.3g}" if sd is not None else "no replicated point to measure noise"
    return (f"no improvement: the last {quiet} waves that moved did not beat the best cell mean {metric} "
            f"{reference[1]:.4g} (wave {since}, {point}) by more than {margin:.3g} ({noise}); patience {patience}")
