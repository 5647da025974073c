"""SCREEN: the first wave (a two-level fraction of the screening region, with center runs where the wave has room)
and the reading of the designed runs: the effects fit, what is aliased, curvature, and which factors
are inert.

Where the screening region lies (``strategy.screen``, ``INSETS``; quarter by default): a fraction at the corners of the box starves the model of the
refinement waves (every run on the boundary, far from an interior optimum; on Hartmann-6 all of them flat), and
misses what acts only inside (friedman1's x1:x2 and x3 vanish at the corners); the same fraction at the quarter
points (25% and 75% of each range, in the factor's scale) estimates the same effects and interactions over the
inner half of the box. Measured with this strategy (64 runs, 5 repetitions, median regret): corners 0.049 / 2.02 /
10.0 on llm_finetune / hartmann6 / friedman1, quarter points 0.038 / 0.17 / 0.021 (docs/design.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from scipy import stats

from orchestrator.analysis import EffectsResult, FactorInfo, fit_effects
from orchestrator.analysis.coding import term_factors
from orchestrator.cells import Seeds, WavePlan
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.run_record import RunRecord
from orchestrator.strategies.waves.space import Axis, Region

# strategy.screen -> where the screening levels sit, as a share of each range from its ends
INSETS = {"quarter": 0.25, "corners": 0.0}
CENTER_RUNS = 2
ALPHA = 0.05
INERT_P = 0.2  # a factor with any term under this unadjusted p-value is not called inert


def screen_wave(region: Region, axes: dict[str, Axis], seeds: Seeds, runs_per_wave: int) -> WavePlan:
    """The smallest fraction of ``region`` that keeps main effects clear (``choose_fraction``), copies at other
    seeds to fill the wave, and center runs in what is left (numeric factors only: a categorical has no center)."""
    active = region.active
    per_seed = runs_per_wave // len(seeds.seeds)
    fraction = choose_fraction(len(active), per_seed)
    copies = max(1, per_seed // fraction.runs)
    centers = min(CENTER_RUNS, per_seed - copies * fraction.runs) if region.has_centers(axes) else 0
    points = [region.decode(axes, row) for row in fraction.coded_matrix()]
    cells = [c for _ in range(copies) for c in seeds.at_every_seed(points)]
    if centers:
        cells += seeds.cells([region.decode(axes, [0] * len(active))] * (centers * len(seeds.seeds)))
    design = "fractional_factorial" if fraction.resolution else "full_factorial"
    extra = (f" x {copies} seeds" if copies > 1 else "") + (f" + {centers} center runs" if centers else "")
    windows = ", ".join(f"{n} {_window(v)}" for n, v in region.windows if isinstance(v, tuple))
    return WavePlan(cells, design, f"screen: {fraction}{extra} over {windows}")


@dataclass(frozen=True)
class Reading:
    """What the designed runs say: the fit, its significant terms, and the decisions that hang on them."""

    fit: EffectsResult
    significant: dict[str, object]
    aliased: dict[str, tuple[str, ...]]  # significant terms aliased with a two-factor interaction
    curvature: tuple[bool, str] = (False, "")
    inert: list[str] = field(default_factory=list)
    better: dict[str, object] = field(default_factory=dict)  # factor -> its better level in the designed runs


def read(region: Region, axes: dict[str, Axis], runs: list[RunRecord], metric: str, goal: str) -> Reading | None:
    """The fit of the designed runs on ``region`` (None when none has finished), judged as the waves decide."""
    active = region.active
    grid = [r for r in runs if region.holds(axes, r)]
    windows = region.as_dict()
    corners = [r for r in grid if all(r.levels[n] in windows[n] for n in active)]
    frame = pd.DataFrame({**{n: [r.levels[n] for r in corners] for n in active},
                          metric: [r.metrics.get(metric, math.nan) for r in corners],
                          "status": [r.status for r in corners]})
    infos = {n: FactorInfo(tuple(windows[n]), axes[n].scale if axes[n].numeric else "linear",
                           "numeric" if axes[n].numeric else "categorical") for n in active}
    try:
        # With 1-2 residual df the noise estimate is too unreliable to test anything, and pooling the two-way terms
        # into the error hides them when they are large: such fits are judged by Lenth's method instead.
        fit = fit_effects(frame, infos, metric, alpha=ALPHA, adjust="holm", min_resid_df=3)
    except ValueError:
        return None
    significant = {t.term: t for t in fit.terms if t.significant}
    aliased = {t: s.aliased_with for t, s in significant.items() if any(":" in a for a in s.aliased_with)}
    curvature = _curvature(region, axes, grid, corners, fit, metric)
    better = {n: _better_level(corners, n, windows[n], metric, goal) for n in active}
    # Inert, and so fixed while the model searches the others: only on a fit with a real noise estimate, no
    # curvature the corners cannot place, and no term that touches the factor (itself or an alias) with an
    # unadjusted p under INERT_P. A wrongly fixed factor costs the whole search (the screening surface's d acts only
    # through c:d, which a quarter-point fraction sees at a quarter of its size); a wrongly open one costs the model
    # a dimension it learns to ignore. So the bar is the open side's.
    involved = {f for t in fit.terms if t.p_value < INERT_P or t.significant
                for term in (t.term, *t.aliased_with) for f in term_factors(term)}
    inert = [] if curvature[0] or fit.method != "ols" else [n for n in active if n not in involved]
    return Reading(fit, significant, aliased, curvature, inert, better)


def _better_level(corners: list[RunRecord], name: str, window: tuple, metric: str, goal: str):
    means = {}
    for level in window:
        values = [r.metrics[metric] for r in corners
                  if r.status == "COMPLETE" and metric in r.metrics and r.levels[name] == level]
        if values:
            means[level] = sum(values) / len(values)
    pick = max if goal == "maximize" else min
    return pick(means, key=means.get) if means else window[0]


def _curvature(region: Region, axes: dict[str, Axis], grid: list[RunRecord], corners: list[RunRecord],
               fit: EffectsResult, metric: str) -> tuple[bool, str]:
    """Center runs that differ from the corners by more than noise (Montgomery 6.8, two-sided: an optimum inside
    the window, or a ridge, either way a shape the two-level fit cannot see)."""
    if not region.has_centers(axes):
        return False, ""
    middle = region.decode(axes, [0] * len(region.active))
    done = [r for r in grid if r.status == "COMPLETE" and metric in r.metrics]
    center = [r.metrics[metric] for r in done if all(r.levels[n] == middle[n] for n in region.active)]
    corner = [r.metrics[metric] for r in corners if r.status == "COMPLETE" and metric in r.metrics]
    if not center or not corner or not fit.sigma > 0 or not fit.error_df >= 1:
        return False, ""
    center_mean, corner_mean = sum(center) / len(center), sum(corner) / len(corner)
    t = (center_mean - corner_mean) / (fit.sigma * math.sqrt(1 / len(corner) + 1 / len(center)))
    p = 2 * stats.t.sf(abs(t), fit.error_df)
    return p < ALPHA, (f"{len(center)} center runs {center_mean:.4g} vs corners {corner_mean:.4g}, t {t:.3g}, "
                       f"p {p:.2g}")


def _window(window: tuple) -> str:
    return "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in window) + "]"
