"""Adaptive waves: a two-level fraction, then each next wave chosen from the effects fitted on the last one.

The search lives in a box: each numeric factor's range is [min, max] of the levels in the spec (never left: a
learning rate or a warmup ratio has limits the spec knows and we do not); a categorical factor has two levels.
A *region* is the current window of every active factor plus the values of the fixed ones. A region's first wave
runs the smallest fraction of it that keeps main effects clear (`choose_fraction`), with center runs when every
active factor is numeric, at every seed. After each wave, on the region's runs, the first rule that applies:

0. stop on the budget (`max_waves`, default 6; `max_runs`; `max_gpu_hours`: `Strategy.budget_stop`), or when the
   last `patience` waves that moved the region did not improve the best cell mean by more than 2 x the noise SD;
1. after a central composite or definitive screening wave: the response-surface step (`waves_surface.py`): fit
   the second-order model, move curved factors to its optimum (or the best observed cell) and narrow them;
2. a significant effect aliased with a two-factor interaction -> fold the fraction over (same region);
3. a *borderline* term (adjusted p in [alpha, 2.5 alpha), and an estimate of at least 10% of half the range of
   the region's cell means, on a main effect or on a two-factor interaction that alone would keep a factor open)
   -> replicate the region's corner runs at new seeds, as many copies as `runs_needed` says would detect its
   estimate (at least one, at most a wave), unless the last wave already was such a replicate (then decide with
   what there is);
4. significant curvature (center runs better than the corners, Montgomery's t-test) with 2+ numeric factors
   without a significant main effect -> a face-centred central composite wave on the region (its axial points and
   more center runs; the corners are run), or a definitive screening wave when there are 6+ factors and the
   corners cannot carry the two-factor interactions or the axial points do not fit in a wave;
5. otherwise, per factor: a significant main effect keeps the better half of a numeric window (steepest descent
   within the box, narrowing as it goes) or fixes a categorical at its better level; a factor with neither a
   significant main effect nor a part in a significant interaction is inert and is fixed at its better level;
   significant curvature halves the windows of numeric factors without a significant main effect around their
   centers; a fit with 1-2 residual degrees of freedom is judged by Lenth's method (as a saturated one);
   nothing significant by Lenth's method -> replicate the corners once before calling any factor inert;
6. stop when nothing moves, or when every numeric window is narrower than 1/8 of its range.

The strategy keeps no state: the region and the kind of the last wave come from the store's runs (a wave of
points all run before is a replicate; one with axial points a central composite), so a resumed study takes the
same decisions. Every wave's reason, and the reason to stop (``stop_reason``), says what was decided and why.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.analysis import FactorInfo, fit_effects, runs_needed
from orchestrator.designs.central_composite import axial_points
from orchestrator.designs.definitive_screening import definitive_screening
from orchestrator.designs.definitive_screening import runs_of as dsd_runs
from orchestrator.designs.fold_over import fold_over
from orchestrator.designs.fractional_factorial import choose_fraction
from orchestrator.errors import SpecError, WavesweepError
from orchestrator.strategies.base import Strategy, WavePlan
from orchestrator.strategies.waves_region import Regions
from orchestrator.strategies.waves_rules import borderline_terms, describe_term, patience_stop, smallest_effect
from orchestrator.strategies.waves_surface import surface_step

DEFAULT_MAX_WAVES = 6
CENTER_RUNS = 2
ALPHA = 0.05
DSD_MIN_FACTORS = 6


class Waves(Regions, Strategy):
    name = "waves"
    adaptive = True

    def __init__(self, spec):
        super().__init__(spec)
        for name, factor in spec.factors.items():
            if factor.kind == "categorical" and len(factor.levels) != 2:
                raise SpecError([(f"factors.{name}.levels", ("mode waves needs two levels for a categorical factor "
                                                             "(or mode grid for more)"), list(factor.levels))])
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
        self.stop_reason = None
        runs = list(runs)
        if not runs:
            plan = self._wave(dict(self.box), runs_per_wave, "first wave over the whole box")
        else:
            plan = (self.budget_stop(runs) or self._patience(runs)
                    or self._after(runs, set(known_keys), runs_per_wave))
        if plan is None or isinstance(plan, str):
            return self._stop(plan or "no factor is left open")
        # A region already run (reached again by another path) adds nothing: never record a cell twice.
        cells = [c for c in plan.cells if c.key not in known_keys]
        if not cells:
            return self._stop(f"the next wave would only repeat recorded runs ({plan.reason})")
        if why := self.budget_stop(runs, cells):
            return self._stop(f"{why} (it would have been: {plan.reason})")
        return WavePlan(cells, plan.design, plan.reason)

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason

    def _patience(self, runs: list[dict]) -> str | None:
        return patience_stop(runs, self.spec.response.metric, self.spec.response.goal, list(self.spec.factors),
                             self.spec.strategy.patience, self._region)

    # --- the decision ----------------------------------------------------------------------------------------------

    def _after(self, runs: list[dict], known: set[str], runs_per_wave: int) -> WavePlan | str | None:
        """The wave after the latest one, from the runs of its region."""
        last = max(r["wave"] for r in runs)
        latest = [r for r in runs if r["wave"] == last]
        region = self._region(latest)
        active = [n for n, v in region.items() if isinstance(v, tuple)]
        if not active:
            return "every factor is fixed: nothing left to search"
        inside = [r for r in runs if self._inside(r, region)]
        earlier = {self._point(r) for r in runs if r["wave"] != last}
        kind = self._kind(latest, region, active, earlier)
        if kind in ("central_composite", "definitive_screening"):
            return surface_step(self, region, inside, active, kind, runs_per_wave)
        return self._decide(region, inside, active, kind, known, runs_per_wave)

    def _decide(self, region: dict, runs: list[dict], active: list[str], kind: str, known: set[str],
                runs_per_wave: int) -> WavePlan | str | None:
        corners = [r for r in runs if all(self._at_corner(r, n, region[n]) for n in active)]
        fit = self._fit(corners, region, active)
        if fit is None:
            return "no finished run at the corners of the region to fit effects on"
        significant = {t.term: t for t in fit.terms if t.significant}

        aliased = {t: s.aliased_with for t, s in significant.items() if any(":" in a for a in s.aliased_with)}
        if aliased:
            fold = self._fold_wave(region, active, known, runs_per_wave, aliased)
            if fold is not None:
                return fold

        smallest = smallest_effect(runs, self.spec.response.metric, list(self.spec.factors))
        if kind != "replicates" and (borderline := borderline_terms(fit, ALPHA, smallest)):
            plan = self._replicate_wave(region, active, corners, fit, borderline, known, runs_per_wave)
            if plan is not None:
                return plan

        better_high = {n: self._better_high(significant[n].estimate) for n in active if n in significant}
        in_interaction = {n for t in significant if ":" in t for n in t.split(":")}
        curved, curvature = self._curvature(runs, corners, fit, region, active)
        flat = [n for n in active if self.spec.factors[n].kind == "numeric" and n not in better_high]
        if curved and len(flat) >= 2:
            plan = self._surface_wave(region, active, corners, known, runs_per_wave, curvature)
            if plan is not None:
                return plan
        if not curved and kind != "replicates" and not significant and fit.method == "lenth":
            # Nothing significant by Lenth's pseudo standard error is weak evidence when many effects are active
            # (it assumes most are not, and a large active majority inflates it): a saturated screening wave of an
            # LLM loss surface ends here. Declaring every factor inert would stop the study on that; replicate the
            # corners first, so the next decision has pure-error degrees of freedom.
            plan = self._replicate_wave(region, active, corners, fit, [], known, runs_per_wave)
            if plan is not None:
                return plan
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
        if new == region:
            open_terms = ", ".join(t for t in significant if ":" in t) or "none"
            return (f"nothing moves: no significant main effect or curvature in the region, and every open factor "
                    f"is in a significant interaction ({open_terms})")
        if self._converged(new):
            return f"converged: {'; '.join(why)}; every numeric window is below 1/8 of its range"
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
            # With 1-2 residual df the noise estimate is too unreliable to test anything (a small residual by
            # chance makes every term "significant"), and pooling the two-way terms into the error hides them when
            # they are large (an LLM loss surface's first wave): judge such fits by Lenth's method, made for
            # saturated two-level designs.
            return fit_effects(frame, infos, metric, alpha=ALPHA, adjust="holm", min_resid_df=3)
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

    def _replicate_wave(self, region, active, corners, fit, borderline, known, runs_per_wave) -> WavePlan | None:
        """The region's corner points again at new seeds, sized by the power to detect the borderline estimate."""
        points = list(dict.fromkeys(self._point(r) for r in corners))
        if not points:
            return None
        names = list(self.spec.factors)
        term = borderline[0] if borderline else max(fit.terms, key=lambda t: abs(t.estimate))
        try:
            # Holm's first step tests at alpha / m: the bar the term must clear.
            needed = runs_needed(term.estimate, fit.sigma, len(fit.terms) + 1, alpha=ALPHA / len(fit.terms))
        except ValueError:
            needed = None
        room = runs_per_wave // len(points)
        if room >= 1:
            copies = min(room, max(1, math.ceil(((needed or 0) - fit.n_used) / len(points))))
            chosen = [dict(zip(names, p)) for p in points] * copies
        else:  # more corner points than a wave holds: a balanced fraction of them
            try:
                fraction = choose_fraction(len(active), runs_per_wave)
            except WavesweepError:
                return None
            chosen = [self._decode_row(region, active, row) for row in fraction.coded_matrix()]
        taken = set(known)
        cells = [self._fresh_cell(self._ordered(p), taken) for p in chosen]
        sizing = (f"{needed} runs in all would detect {abs(term.estimate):.3g} with 80% power"
                  if needed is not None else "no power estimate (no noise estimate)")
        others = f" (also borderline: {', '.join(t.term for t in borderline[1:])})" if len(borderline) > 1 else ""
        if borderline:
            why = f"replicate before deciding: {describe_term(term, ALPHA)}{others}"
        else:
            why = (f"replicate before deciding: no term is significant by Lenth's pseudo standard error (a saturated "
                   f"wave, no residual df; the largest is {describe_term(term, ALPHA)}), too weak to call factors inert")
        return WavePlan(cells, "replicates",
                        f"{why}; {len(cells)} runs: the "
                        f"{len(points) if room >= 1 else len(cells)} corner points again at new seeds ({sizing}, "
                        f"{fit.n_used} so far)")

    def _surface_wave(self, region, active, corners, known, runs_per_wave, curvature: str) -> WavePlan | None:
        """A central composite (axial points + centers) or a definitive screening wave on the region."""
        if any(self.spec.factors[n].kind != "numeric" for n in active):
            return None
        k = len(active)
        if not all(region[n][0] < self._center(n, *region[n]) < region[n][1] for n in active):
            return None  # an integer window without an integer inside has no three levels
        per_seed = runs_per_wave // len(self.spec.run_seeds)
        coded = np.array([[1 if r[f"param.{n}"] == region[n][1] else -1 for n in active] for r in corners])
        two_way = [coded[:, i] * coded[:, j] for i in range(k) for j in range(i + 1, k)]
        model = np.column_stack([np.ones(len(coded)), coded, *two_way]) if len(coded) else np.zeros((0, 1))
        resolution_v = len(coded) > 0 and np.linalg.matrix_rank(model) == model.shape[1]
        taken = set(known)
        if resolution_v and 2 * k <= per_seed:
            centers = min(CENTER_RUNS, per_seed - 2 * k)
            points = [self._decode_row(region, active, row) for row in axial_points(k)]
            cells = [self._fresh_cell(self._ordered(p), taken) for _ in self.spec.run_seeds for p in points]
            center = self._decode_row(region, active, [0] * k)
            cells += [self._fresh_cell(self._ordered(center), taken) for _ in range(centers * len(self.spec.run_seeds))]
            design, what = "central_composite", (f"face-centred central composite over {', '.join(active)}: "
                                                 f"{2 * k} axial points + {centers} center runs (the corners are run)")
        elif k >= DSD_MIN_FACTORS and dsd_runs(k) <= per_seed:
            points = [self._decode_row(region, active, row) for row in definitive_screening(k)]
            cells = [self._fresh_cell(self._ordered(p), taken) for _ in self.spec.run_seeds for p in points]
            design, what = "definitive_screening", (f"definitive screening over {', '.join(active)}: {dsd_runs(k)} "
                                                    "runs (a central composite would need more than a wave)")
        else:
            return None
        if all(c.key in known for c in cells):
            return None
        return WavePlan(cells, design, f"curvature ({curvature}): {what}")

    # --- waves ---------------------------------------------------------------------------------------------------

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

    # --- moves -----------------------------------------------------------------------------------------------------

    def _best_level(self, corners: list[dict], name: str, window: tuple):
        metric = f"metric.{self.spec.response.metric}"
        done = [r for r in corners if r["status"] == "COMPLETE" and metric in r]
        means = {level: [r[metric] for r in done if r[f"param.{name}"] == level] for level in window}
        means = {level: sum(v) / len(v) for level, v in means.items() if v}
        pick = max if self.spec.response.goal == "maximize" else min
        return pick(means, key=means.get) if means else window[0]

    def _curvature(self, runs: list[dict], corners: list[dict], fit, region: dict,
                   active: list[str]) -> tuple[bool, str]:
        """Center runs better than the corners by more than noise: the optimum is inside the window.

        The textbook curvature test (Montgomery 6.8): (mean of corners - mean of centers) over
        sigma * sqrt(1/n_corners + 1/n_centers), with sigma and its degrees of freedom from the corner fit.
        Returns whether it fires and the numbers, in words.
        """
        if any(self.spec.factors[n].kind != "numeric" for n in active):
            return False, ""  # no center runs: a categorical factor has no middle
        metric = f"metric.{self.spec.response.metric}"
        middle = {n: self._center(n, *region[n]) for n in active}
        center = [r[metric] for r in runs if all(r[f"param.{n}"] == v for n, v in middle.items())
                  and r["status"] == "COMPLETE" and metric in r]
        corner = [r[metric] for r in corners if r["status"] == "COMPLETE" and metric in r]
        if not center or not corner or not fit.sigma > 0 or not fit.error_df >= 1:
            return False, ""
        center_mean, corner_mean = sum(center) / len(center), sum(corner) / len(corner)
        gap = corner_mean - center_mean  # > 0: the center is lower
        if self.spec.response.goal == "maximize":
            gap = -gap
        t = gap / (fit.sigma * math.sqrt(1 / len(corner) + 1 / len(center)))
        p = stats.t.sf(t, fit.error_df) * 2
        return t > 0 and p < ALPHA, (f"{len(center)} center runs {center_mean:.4g} vs corners {corner_mean:.4g}, "
                                     f"t {t:.3g}, p {p:.2g}")

