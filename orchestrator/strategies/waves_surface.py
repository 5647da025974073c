"""The response-surface step of the adaptive waves: after a central composite (or definitive screening) wave, fit
the second-order model on the region and move to its optimum.

On the runs of the region's three-level grid (lowest, center, highest of every open factor):

1. ``fit_effects`` (linear, quadratic, two-factor and linear x quadratic terms for a CCD; linear and quadratic for
   a definitive screening design, whose runs cannot carry more) says which factors matter: a factor in no
   significant term is *inert* (fixed at its value in the best observed cell); one with a significant main effect
   only is *linear* (its window keeps the better half: steepest descent); one in a significant quadratic or
   interaction is *curved*.
2. Over the curved factors, the second-order model y = b0 + x'b + x'Bx (the linear factors as linear terms) is
   fitted by least squares in coded units; its stationary point x_s = -B^-1 b / 2 (Montgomery, ch. 11) is the
   optimum when B's eigenvalues all have the goal's sign (positive to minimize) and x_s is inside the window. Then
   the curved factors move there (clipped to the window); otherwise (a saddle, the wrong extremum, outside, or a
   model the runs cannot estimate) they move to the best observed cell.
3. The curved factors' windows shrink to half their width around the new point, shifted to stay in the spec's box.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from orchestrator.analysis import FactorInfo, code_numeric, fit_effects
from orchestrator.strategies.base import WavePlan
from orchestrator.strategies.waves_rules import best_cell, term_factors

if TYPE_CHECKING:
    from orchestrator.strategies.waves import Waves

DESIGN_NAMES = {"central_composite": "central composite", "definitive_screening": "definitive screening"}


def surface_step(s: Waves, region: dict, inside: list[dict], active: list[str], kind: str,
                 runs_per_wave: int) -> WavePlan | str:
    """The next wave after a response-surface wave on ``region``, or the reason to stop."""
    metric = s.spec.response.metric
    levels = {n: (region[n][0], s._center(n, *region[n]), region[n][1]) for n in active}
    grid = [r for r in inside if all(r[f"param.{n}"] in levels[n] for n in active)]
    best = best_cell(grid, metric, s.spec.response.goal, active)
    if best is None:
        return f"no finished run on the {DESIGN_NAMES[kind]} grid of the region to fit a response surface on"
    best_point = dict(zip(active, best[0]))
    frame = pd.DataFrame({**{n: [r[f"param.{n}"] for r in grid] for n in active},
                          metric: [r.get(f"metric.{metric}", math.nan) for r in grid],
                          "status": [r["status"] for r in grid]})
    infos = {n: FactorInfo(levels[n], s.spec.factors[n].scale, "numeric") for n in active}
    try:
        fit = fit_effects(frame, infos, metric, adjust="holm", max_order=2 if kind == "central_composite" else 1)
    except ValueError as exc:
        return f"cannot fit the response surface of the region: {exc}"
    roles: dict[str, set[str]] = {n: set() for n in active}
    for t in fit.terms:
        if t.significant:
            for part, factor in zip(t.term.split(":"), term_factors(t.term)):
                roles[factor].add("quadratic" if part.endswith("^2") else "interaction" if ":" in t.term else "main")
    curved = [n for n in active if roles[n] - {"main"}]
    linear = [n for n in active if roles[n] == {"main"}]
    inert = [n for n in active if not roles[n]]
    head = f"response surface from the {DESIGN_NAMES[kind]} ({fit.n_used} runs on the 3-level grid)"
    value = f"{metric} {best[1]:.4g}"
    if not curved and not linear:
        at = ", ".join(f"{n}={_show(v)}" for n, v in best_point.items())
        return (f"{head}: no term is significant, the surface is flat within the noise here; the best observed cell "
                f"is {at} ({value})")

    new, why = dict(region), []
    if curved:
        target, said = _optimum(s, region, grid, curved, linear, best_point, best[1])
        why.append(said)
        for n in curved:
            new[n] = _narrow_around(s, n, target[n], *region[n])
    for n in linear:
        estimate = fit.term(n).estimate
        new[n] = s._half(n, *region[n], s._better_high(estimate))
        why.append(f"{n} {'up' if s._better_high(estimate) else 'down'} (linear effect {estimate:+.3g}, no curvature)")
    for n in inert:
        new[n] = best_point[n]
        why.append(f"{n} inert, fixed at {_show(new[n])}")
    new = {n: (v[0] if isinstance(v, tuple) and v[0] == v[1] else v) for n, v in new.items()}
    windows = ", ".join(f"{n} [{_show(new[n][0])}, {_show(new[n][1])}]" for n in active if isinstance(new[n], tuple))
    reason = f"{head}: " + "; ".join(why) + (f"; windows now {windows}" if windows else "")
    if new == region:
        return f"nothing moves: {reason}"
    if s._converged(new):
        return f"converged: {reason}; every numeric window is below 1/8 of its range"
    plan = s._wave(new, runs_per_wave, reason)
    return plan if plan is not None else f"every factor is fixed: {reason}"


def _optimum(s: Waves, region: dict, grid: list[dict], curved: list[str], linear: list[str], best_point: dict,
             best_value: float) -> tuple[dict, str]:
    """Where the curved factors go, and the sentence that says why."""
    metric, goal = s.spec.response.metric, s.spec.response.goal
    done = [r for r in grid if r["status"] == "COMPLETE" and _finite(r.get(f"metric.{metric}"))]
    coded = {n: code_numeric([r[f"param.{n}"] for r in done], FactorInfo(region[n], s.spec.factors[n].scale))
             for n in curved + linear}
    y = np.array([r[f"metric.{metric}"] for r in done], dtype=float)
    k = len(curved)
    pairs = list(itertools.combinations(range(k), 2))
    columns = ([np.ones(len(done))] + [coded[n] for n in curved] + [coded[n] ** 2 for n in curved]
               + [coded[curved[i]] * coded[curved[j]] for i, j in pairs] + [coded[n] for n in linear])
    x = np.column_stack(columns)
    names = ", ".join(curved)
    observed = ", ".join(f"{n}={_show(best_point[n])}" for n in curved)
    fallback = f"move {names} to the best observed cell {observed} ({metric} {best_value:.4g})"
    if len(done) <= x.shape[1] or np.linalg.matrix_rank(x) < x.shape[1]:
        return best_point, f"the second-order model in {names} is not estimable from these runs: {fallback}"
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    b = coef[1:1 + k]
    quad = np.diag(coef[1 + k:1 + 2 * k])
    for (i, j), c in zip(pairs, coef[1 + 2 * k:1 + 2 * k + len(pairs)]):
        quad[i, j] = quad[j, i] = c / 2
    eigen = np.linalg.eigvalsh(quad)
    try:
        xs = -0.5 * np.linalg.solve(quad, b)
    except np.linalg.LinAlgError:
        return best_point, f"the fitted surface in {names} has no stationary point: {fallback}"
    predicted = float(coef[0] + b @ xs + xs @ quad @ xs)
    point = {n: _decode(s, n, float(v), *region[n]) for n, v in zip(curved, xs)}
    at = ", ".join(f"{n}={_show(point[n])}" for n in curved)
    wanted = "minimum" if goal == "minimize" else "maximum"
    shape = ("minimum" if (eigen > 0).all() else "maximum" if (eigen < 0).all() else "saddle")
    if shape != wanted:
        return best_point, f"the fitted surface in {names} has a {shape} (at {at}), not a {wanted}: {fallback}"
    if (np.abs(xs) > 1 + 1e-9).any():
        return best_point, f"the fitted {wanted} in {names} (at {at}) is outside the window: {fallback}"
    others = " with the other factors at the window's center" if linear else ""
    return point, f"fitted {wanted} at {at} (predicted {metric} {predicted:.4g}{others}), inside the window: move there"


def _show(value) -> str:
    """A level in a reason: integers as they are, floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _decode(s: Waves, name: str, x: float, low, high):
    """Coded (-1 .. +1 over the window) -> the factor's value, clipped to the window (rounded for integers)."""
    x = min(1.0, max(-1.0, x))
    if s.spec.factors[name].scale == "log":
        value = math.exp(math.log(low) + (x + 1) / 2 * (math.log(high) - math.log(low)))
    else:
        value = low + (x + 1) / 2 * (high - low)
    if s.integer[name]:
        value = round(value)
    return min(high, max(low, value))


def _narrow_around(s: Waves, name: str, point, low, high):
    """A window half as wide as (low, high) centred on ``point``, shifted to stay inside the spec's box."""
    log = s.spec.factors[name].scale == "log"
    to, back = (math.log, math.exp) if log else (float, float)
    box_low, box_high = (to(v) for v in s.box[name])
    half = (to(high) - to(low)) / 4
    lo, hi = to(point) - half, to(point) + half
    shift = max(0.0, box_low - lo) - max(0.0, hi - box_high)
    lo, hi = max(box_low, lo + shift), min(box_high, hi + shift)
    lo_value, hi_value = back(lo), back(hi)
    if s.integer[name]:
        lo_value, hi_value = round(lo_value), round(hi_value)
    box = s.box[name]
    return min(box[1], max(box[0], lo_value)), min(box[1], max(box[0], hi_value))
