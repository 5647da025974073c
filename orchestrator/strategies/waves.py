"""Adaptive waves: a two-level fraction, then each next wave chosen from the effects fitted on the last one.

The search lives in a box: each numeric factor's range is [min, max] of the levels in the spec (never left: a
learning rate or a warmup ratio has limits the spec knows and we do not); a categorical factor has two levels.
A *region* is the current window of every active factor plus the values of the fixed ones. Each wave runs the
smallest fraction of the region that keeps main effects clear (`choose_fraction`), with center runs when every
active factor is numeric, at every seed. After a wave, on its region's runs:

1. a significant effect aliased with a two-factor interaction -> fold the fraction over (same region);
2. otherwise, per factor: a significant main effect keeps the better half of a numeric window (steepest descent
   within the box, narrowing as it goes) or fixes a categorical at its better level; a factor with neither a
   significant main effect nor a part in a significant interaction is inert and is fixed at its better level;
   a significant curvature (center runs better than the corners, Welch t-test) halves the windows of numeric
   factors without a significant main effect around their centers;
   with 1-2 residual degrees of freedom the two-way terms are pooled into the error (a main-effects fit);
3. stop when nothing moves, when every numeric window is narrower than 1/8 of its range, or on the budget
   (`max_waves`, default 6, and `max_runs`).

The strategy keeps no state: the region comes from the latest wave's cells in the store, so a resumed study
takes the same decisions. Every wave's reason says what was decided and why.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats

from orchestrator.analysis import FactorInfo, fit_effects
from orchestrator.cells import Cell, make_cell
from orchestrator.designs.fold_over import fold_over
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.errors import SpecError, WavesweepError
from orchestrator.strategies.base import Strategy, WavePlan

DEFAULT_MAX_WAVES = 6
CENTER_RUNS = 2
CONVERGED_WIDTH = 1 / 8  # of a numeric factor's range


class Waves(Strategy):
    name = "waves"
    adaptive = True

    def __init__(self, spec):
        super().__init__(spec)
        for name, factor in spec.factors.items():
            if factor.kind == "categorical" and len(factor.levels) != 2:
                raise SpecError([(f"factors.{name}.levels", "mode waves needs two levels for a categorical factor "
                                  "(or mode grid for more)", list(factor.levels))])
        self.box = {n: (min(f.levels), max(f.levels)) if f.kind == "numeric" else tuple(f.levels)
                    for n, f in spec.factors.items()}
        self.integer = {n: all(isinstance(v, int) for v in f.levels) for n, f in spec.factors.items()}
        self.max_waves = spec.strategy.max_waves or DEFAULT_MAX_WAVES

    def planned_runs(self) -> int:
        return self.spec.strategy.max_runs or 0  # unknown in advance: it depends on the results

    def check_budget(self, runs_per_wave: int) -> None:
        per_seed = runs_per_wave // len(self.spec.run_seeds)
        try:
            choose_fraction(len(self.box), per_seed)
        except WavesweepError as exc:
            raise SpecError([("strategy.runs_per_wave", f"mode waves: {exc}", runs_per_wave)]) from None

    def next_wave(self, known_keys: set[str], runs_per_wave: int, runs: list[dict] = ()) -> WavePlan | None:
        runs = list(runs)
        if not runs:
            plan = self._wave(dict(self.box), runs_per_wave, "first wave over the whole box")
        else:
            waves = sorted({r["wave"] for r in runs})
            if len(waves) >= self.max_waves:
                return None
            if self.spec.strategy.max_runs is not None and len(runs) >= self.spec.strategy.max_runs:
                return None
            region = self._region([r for r in runs if r["wave"] == waves[-1]])
            plan = self._decide(region, [r for r in runs if self._inside(r, region)], known_keys, runs_per_wave)
        if plan is None:
            return None
        # A region already run (reached again by another path) adds nothing: never record a cell twice.
        cells = [c for c in plan.cells if c.key not in known_keys]
        return WavePlan(cells, plan.design, plan.reason) if cells else None

    # --- the decision ----------------------------------------------------------------------------------------------

    def _decide(self, region: dict, runs: list[dict], known: set[str], runs_per_wave: int) -> WavePlan | None:
        active = [n for n, v in region.items() if isinstance(v, tuple)]
        if not active:
            return None
        corners = [r for r in runs if all(self._at_corner(r, n, region[n]) for n in active)]
        fit = self._fit(corners, region, active)
        if fit is None:
            return None  # no finished run in the region to learn from
        significant = {t.term: t for t in fit.terms if t.significant}

        aliased = {t: s.aliased_with for t, s in significant.items() if any(":" in a for a in s.aliased_with)}
        if aliased:
            fold = self._fold_wave(region, active, known, runs_per_wave, aliased)
            if fold is not None:
                return fold

        better_high = {n: self._better_high(significant[n].estimate) for n in active if n in significant}
        in_interaction = {n for t in significant if ":" in t for n in t.split(":")}
        curved = self._curvature(runs, corners, fit, region, active)
        new, why = dict(region), []
        for name in active:
            low, high = region[name]
            if name in better_high:
                new[name] = self._half(name, low, high, better_high[name])
                why.append(f"{name} {'up' if better_high[name] else 'down'} (main effect "
                           f"{significant[name].estimate:+.3g})")
            elif curved and self.spec.factors[name].kind == "numeric":
                new[name] = self._around_center(name, low, high)
                why.append(f"{name} narrowed around its center (curvature)")
            elif any(t.startswith(f"{name}[") for t in significant):  # a categorical's column is name[level]
                new[name] = self._best_level(corners, name, region[name])
                why.append(f"{name} fixed at its better level {new[name]} (significant)")
            elif name not in in_interaction:
                new[name] = self._best_level(corners, name, region[name])
                why.append(f"{name} inert, fixed at {new[name]}")
        new = {n: (v[0] if isinstance(v, tuple) and v[0] == v[1] else v) for n, v in new.items()}
        if new == region or self._converged(new):
            return None
        return self._wave(new, runs_per_wave, "; ".join(why) or "move")

    def _fit(self, corners: list[dict], region: dict, active: list[str]):
        metric = self.spec.response.metric
        frame = pd.DataFrame({
            **{n: [r[f"param.{n}"] for r in corners] for n in active},
            metric: [r.get(f"metric.{metric}", math.nan) for r in corners],
            "status": [r["status"] for r in corners],
        })
        infos = {n: FactorInfo(tuple(region[n]), self.spec.factors[n].scale, self.spec.factors[n].kind)
                 for n in active}
        try:
            fit = fit_effects(frame, infos, metric, adjust="holm")
            # With 1-2 residual df the noise estimate is too unreliable to test anything (a small residual by
            # chance makes every term "significant"): pool the two-way terms into the error instead. With none,
            # the fit already uses Lenth's method, made for saturated two-level designs.
            if 0 < fit.df_resid < 3:
                fit = fit_effects(frame, infos, metric, adjust="holm", max_order=1)
            return fit
        except ValueError:
            return None

    def _fold_wave(self, region, active, known, runs_per_wave, aliased) -> WavePlan | None:
        fraction = choose_fraction(len(active), runs_per_wave // len(self.spec.run_seeds))
        if fraction.resolution is None:
            return None  # a full factorial aliases nothing: the alias came from missing runs, not the design
        try:
            new_runs, _ = fold_over(fraction)
        except WavesweepError:
            term = next(iter(aliased))
            new_runs, _ = fold_over(fraction, fraction.letters[active.index(term.split(":")[0])])
        cells = self._cells(region, active, new_runs)
        if all(c.key in known for c in cells):
            return None
        what = "; ".join(f"{t} is aliased with {', '.join(a)}" for t, a in aliased.items())
        return WavePlan([c for c in cells if c.key not in known], "fold_over", f"fold-over to de-alias: {what}")

    # --- regions and cells ----------------------------------------------------------------------------------------

    def _wave(self, region: dict, runs_per_wave: int, reason: str) -> WavePlan | None:
        active = [n for n, v in region.items() if isinstance(v, tuple)]
        if not active:
            return None
        per_seed = runs_per_wave // len(self.spec.run_seeds)
        fraction = choose_fraction(len(active), per_seed)
        # Fill the wave: copies of the fraction at other seeds give the fit pure-error degrees of freedom; center
        # runs in what is left test for curvature (numeric factors only: a categorical has no center).
        copies = max(1, per_seed // fraction.runs)
        numeric = all(self.spec.factors[n].kind == "numeric" for n in active)
        centers = min(CENTER_RUNS, per_seed - copies * fraction.runs) if numeric else 0
        cells = self._cells(region, active, fraction.coded_matrix(), copies=copies, centers=centers)
        design = "fractional_factorial" if fraction.resolution else "full_factorial"
        extra = (f" x {copies} seeds" if copies > 1 else "") + (f" + {centers} center runs" if centers else "")
        return WavePlan(cells, design, f"{reason}: {fraction}{extra} over {', '.join(active)}")

    def _cells(self, region, active, coded, *, copies: int = 1, centers: int = 0) -> list[Cell]:
        points = [{**self._fixed(region), **{n: region[n][int(x > 0)] for n, x in zip(active, row)}}
                  for row in coded]
        # Repeated points need seeds of their own, or they would share one cell key: the spec's seeds first, then
        # fresh ones above them.
        fresh = iter(range(max(self.spec.run_seeds) + 1, 1 << 30))
        seeds = list(self.spec.run_seeds) + [next(fresh) for _ in range((copies - 1) * len(self.spec.run_seeds))]
        cells = [make_cell(self.spec.study, self._ordered(p), seed) for seed in seeds for p in points]
        if centers:
            center = {**self._fixed(region), **{n: self._center(n, *region[n]) for n in active}}
            cells += [make_cell(self.spec.study, self._ordered(center), next(fresh))
                      for _ in range(centers * len(self.spec.run_seeds))]
        return cells

    def _ordered(self, point: dict) -> dict:
        return {n: point[n] for n in self.spec.factors}

    @staticmethod
    def _fixed(region: dict) -> dict:
        return {n: v for n, v in region.items() if not isinstance(v, tuple)}

    def _region(self, wave_runs: list[dict]) -> dict:
        region: dict[str, Any] = {}
        for name in self.spec.factors:
            values = sorted({r[f"param.{name}"] for r in wave_runs}, key=lambda v: (str(type(v)), v))
            if len(values) == 1:
                region[name] = values[0]
            elif self.spec.factors[name].kind == "numeric":
                region[name] = (values[0], values[-1])
            else:
                region[name] = tuple(values)
        return region

    def _inside(self, run: dict, region: dict) -> bool:
        for name, value in region.items():
            x = run[f"param.{name}"]
            if isinstance(value, tuple):
                if self.spec.factors[name].kind == "numeric" and not value[0] <= x <= value[1]:
                    return False
                if self.spec.factors[name].kind == "categorical" and x not in value:
                    return False
            elif x != value:
                return False
        return True

    @staticmethod
    def _at_corner(run: dict, name: str, window: tuple) -> bool:
        return run[f"param.{name}"] in window

    # --- moves -----------------------------------------------------------------------------------------------------

    def _better_high(self, estimate: float) -> bool:
        return (estimate > 0) == (self.spec.response.goal == "maximize")

    def _half(self, name: str, low, high, upper: bool):
        center = self._center(name, low, high)
        return (center, high) if upper else (low, center)

    def _around_center(self, name: str, low, high):
        """The middle half of the window."""
        center = self._center(name, low, high)
        return self._center(name, low, center), self._center(name, center, high)

    def _center(self, name: str, low, high):
        if self.spec.factors[name].scale == "log":
            middle = math.sqrt(low * high)
        else:
            middle = (low + high) / 2
        return round(middle) if self.integer[name] else middle

    def _best_level(self, corners: list[dict], name: str, window: tuple):
        metric = f"metric.{self.spec.response.metric}"
        done = [r for r in corners if r["status"] == "COMPLETE" and metric in r]
        means = {level: [r[metric] for r in done if r[f"param.{name}"] == level] for level in window}
        means = {level: sum(v) / len(v) for level, v in means.items() if v}
        pick = max if self.spec.response.goal == "maximize" else min
        return pick(means, key=means.get) if means else window[0]

    def _curvature(self, runs: list[dict], corners: list[dict], fit, region: dict, active: list[str]) -> bool:
        """Center runs better than the corners by more than noise: the optimum is inside the window.

        The textbook curvature test (Montgomery 6.8): (mean of corners - mean of centers) over
        sigma * sqrt(1/n_corners + 1/n_centers), with sigma and its degrees of freedom from the corner fit.
        """
        if any(self.spec.factors[n].kind != "numeric" for n in active):
            return False  # no center runs: a categorical factor has no middle
        metric = f"metric.{self.spec.response.metric}"
        middle = {n: self._center(n, *region[n]) for n in active}
        center = [r[metric] for r in runs if all(r[f"param.{n}"] == v for n, v in middle.items())
                  and r["status"] == "COMPLETE" and metric in r]
        corner = [r[metric] for r in corners if r["status"] == "COMPLETE" and metric in r]
        if not center or not corner or not fit.sigma > 0 or not fit.error_df >= 1:
            return False
        gap = sum(corner) / len(corner) - sum(center) / len(center)  # > 0: the center is lower
        if self.spec.response.goal == "maximize":
            gap = -gap
        t = gap / (fit.sigma * math.sqrt(1 / len(corner) + 1 / len(center)))
        return t > 0 and stats.t.sf(t, fit.error_df) * 2 < 0.05

    def _converged(self, region: dict) -> bool:
        active = [n for n, v in region.items() if isinstance(v, tuple)]
        numeric = [n for n in active if self.spec.factors[n].kind == "numeric"]
        if len(numeric) < len(active):
            return False  # a categorical factor is still open
        return all(self._width(n, *region[n]) < CONVERGED_WIDTH * self._width(n, *self.box[n]) for n in numeric)

    def _width(self, name: str, low, high) -> float:
        return math.log(high / low) if self.spec.factors[name].scale == "log" else high - low
