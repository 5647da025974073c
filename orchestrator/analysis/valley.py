"""The data check behind a reparametrisation hint: the valley of a fitted quadratic surface in (log a, log b).

See :mod:`orchestrator.analysis.hints` for the method (Hessian, valley slope -H_ab / H_aa, Fieller's interval,
|H_uv / H_uu| before and after). Kept apart so the hint rules read on their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.linear_model import OLS

from orchestrator.analysis.aliasing import find_aliasing
from orchestrator.analysis.coding import INTERCEPT, design_matrix
from orchestrator.analysis.factors import FactorInfo
from orchestrator.analysis.results import EffectsResult
from orchestrator.analysis.runs import select_runs

if TYPE_CHECKING:
    from orchestrator.analysis.scaling_rules import ScalingRule

# A rule whose slope is outside the interval still counts as "approximate" when it removes at least this share of
# the interaction (|H_uv / H_uu| in its coordinates vs the original ones): a real slope is never exactly 0.5, and
# with precise runs the interval excludes 0.5 where sweeping lr / sqrt(batch) still removes nearly all of it.
APPROXIMATE = 0.8


def check_valley(fit: EffectsResult, infos: Mapping[str, FactorInfo], df: pd.DataFrame | None, a: str, b: str,
           rules: list[ScalingRule], goal: str, diverged_value: float | None) -> dict[str, Any]:
    """The valley slope of the quadratic surface in (log a, log b) and each rule's place in its interval."""

    def unchecked(reason: str, summary: str, **more: Any) -> dict[str, Any]:
        return {"status": "unchecked", "reason": reason, "summary": f"by name, unchecked: {summary}", **more}

    if df is None:
        return unchecked("no_runs", "no runs were given to check it on")
    runs = select_runs(df, fit.response, diverged_value=diverged_value).runs
    values = {}
    for name in (a, b):
        if name not in runs.columns:
            return unchecked("no_column", f"the runs have no column {name!r}")
        x = pd.to_numeric(runs[name], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            bad = sorted({str(v) for v, ok in zip(runs[name].tolist(), np.isfinite(x) & (x > 0)) if not ok})
            return unchecked("not_positive", f"{name} has values that are not positive numbers ({bad[:5]}); the "
                             "rule is about log values: sweep positive levels on a log scale")
        values[name] = x
    levels = {name: len(np.unique(values[name])) for name in (a, b)}
    if min(levels.values()) < 3:
        counts = ", ".join(f"{n} has {k}" for n, k in levels.items())
        return unchecked("two_levels", f"the check fits a quadratic surface and needs 3+ levels of both factors "
                         f"({counts} in the runs used)", levels=levels)

    # Centred log coordinates: x = log a, y = log b, centred on the mean of their levels.
    x = np.log(values[a]) - np.mean(np.log(np.unique(values[a])))
    y = np.log(values[b]) - np.mean(np.log(np.unique(values[b])))
    sign = 1.0 if goal == "minimize" else -1.0
    response = sign * runs[fit.response].to_numpy(dtype=float)
    surface = pd.DataFrame({INTERCEPT: 1.0, "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y}, index=runs.index)
    others = {n: i for n, i in infos.items() if n not in (a, b)}
    if others:
        try:
            nuisance = design_matrix(runs, others, max_order=1).matrix.drop(columns=INTERCEPT)
        except ValueError as exc:
            return unchecked("nuisance", f"the other factors could not be coded ({exc})")
        surface = pd.concat([surface, nuisance], axis=1)
    aliasing = find_aliasing(surface)
    lost = [c for c in ("x", "y", "xx", "yy", "xy") if c not in aliasing.kept]
    if lost:
        return unchecked("surface_not_estimable", f"the runs cannot separate the quadratic surface's columns {lost}")
    matrix = surface[list(aliasing.kept)]
    ols = OLS(response, matrix).fit()
    df_resid = round(ols.df_resid)
    if df_resid < 1:
        return unchecked("no_residual_df", f"the surface has {matrix.shape[1]} parameters for {len(response)} "
                         "runs: no residual degrees of freedom for its intervals")

    cov = ols.cov_params()
    b_xx, b_yy, b_xy = (float(ols.params[c]) for c in ("xx", "yy", "xy"))
    hessian = sign * np.array([[2 * b_xx, b_xy], [b_xy, 2 * b_yy]])  # in the response's own sign
    level = 1.0 - fit.alpha
    t = float(stats.t.ppf(1.0 - fit.alpha / 2, df_resid))
    base = {"method": "quadratic surface in (log a, log b), OLS; Fieller interval for the valley slope",
            "factors": [a, b], "n_runs": len(response), "df_resid": df_resid,
            "r_squared": float(ols.rsquared), "hessian": hessian.tolist(), "level": level}
    if b_xx <= 0:
        where = "minimum" if goal == "minimize" else "maximum"
        return unchecked("no_valley", f"the fitted surface has no {where} along log {a} at fixed {b} "
                         f"(curvature H_aa = {hessian[0, 0]:.3g}): no valley to follow; widen {a}'s range so it "
                         "brackets the best value", **base)

    # Valley slope s_hat = N / D with N = -b_xy, D = 2 b_xx; Fieller: s in the interval iff the test of
    # N - s D = 0 (the interaction in the coordinates u = x - s y) is not rejected.
    n_est, d_est = -b_xy, 2 * b_xx
    v_nn, v_dd, v_nd = float(cov.at["xy", "xy"]), 4 * float(cov.at["xx", "xx"]), -2 * float(cov.at["xy", "xx"])
    slope = n_est / d_est
    interval = _fieller(n_est, d_est, v_nn, v_dd, v_nd, t)

    def residual_interaction(s: float) -> dict[str, Any]:
        """H_uv / sign = 2 b_xx s + b_xy with its interval and p-value, and |H_uv / H_uu|."""
        est = d_est * s - n_est
        se = math.sqrt(max(s * s * v_dd - 2 * s * v_nd + v_nn, 0.0))
        p = float(2 * stats.t.sf(abs(est) / se, df_resid)) if se > 0 else float("nan")
        jac = np.array([[1.0, s], [0.0, 1.0]])
        return {"slope": s, "coordinates": [f"log {a} - {s:g} log {b}", f"log {b}"],
                "hessian": (jac.T @ hessian @ jac).tolist(),
                "interaction": sign * est, "interaction_ci": sorted([sign * (est - t * se), sign * (est + t * se)]),
                "p_value": p, "consistent": bool(p >= fit.alpha),
                "ratio": abs(est / d_est)}

    before = residual_interaction(0.0)
    results = {r.name: residual_interaction(r.slope) for r in rules}
    for res in results.values():
        res["shrink"] = 1.0 - res["ratio"] / before["ratio"] if before["ratio"] > 0 else 0.0
    bounded = interval["kind"] == "bounded"
    if not bounded:
        status = "inconclusive"
    elif any(r["consistent"] for r in results.values()):
        status = "supported"
    elif max(r["shrink"] for r in results.values()) >= APPROXIMATE:
        status = "approximate"
    else:
        status = "contradicted"
    pct = f"{100 * level:g}%"
    listed = "; ".join(f"{name.replace('_', ' ')} slope {res['slope']:g} "
                       f"{'inside' if res['consistent'] else 'outside'} (interaction |H_uv/H_uu| "
                       f"{before['ratio']:.3g} -> {res['ratio']:.3g})" for name, res in results.items())
    summary = (f"valley of the best {a}: d log {a}* / d log {b} = {slope:.3g}, {pct} CI {_interval_text(interval)} "
               f"({len(response)} runs, {df_resid} residual df); {listed}")
    if not bounded:
        summary += f"; the interval is unbounded: the curvature along log {a} is not clearly positive"
    return {"status": status, **base, "summary": summary, "valley_slope": slope, "valley_slope_ci": interval,
            "interaction_before": before, "rules": results}


def _fieller(n: float, d: float, v_nn: float, v_dd: float, v_nd: float, t: float) -> dict[str, Any]:
    """Fieller's interval for n / d: the s with (n - s d)^2 <= t^2 (v_nn - 2 s v_nd + s^2 v_dd).

    ``kind``: "bounded" [low, high]; "two_rays" (-inf, low] and [high, inf); "all" (every slope).
    """
    qa = d * d - t * t * v_dd
    qb = -2.0 * (n * d - t * t * v_nd)
    qc = n * n - t * t * v_nn
    disc = qb * qb - 4 * qa * qc
    if qa > 0:
        root = math.sqrt(max(disc, 0.0))
        return {"kind": "bounded", "low": (-qb - root) / (2 * qa), "high": (-qb + root) / (2 * qa)}
    if disc < 0 or qa == 0:
        return {"kind": "all", "low": float("-inf"), "high": float("inf")}
    root = math.sqrt(disc)
    low, high = sorted(((-qb - root) / (2 * qa), (-qb + root) / (2 * qa)))
    return {"kind": "two_rays", "low": low, "high": high}


def _interval_text(interval: Mapping[str, Any]) -> str:
    if interval["kind"] == "bounded":
        return f"[{interval['low']:.3g}, {interval['high']:.3g}]"
    if interval["kind"] == "two_rays":
        return f"(-inf, {interval['low']:.3g}] U [{interval['high']:.3g}, inf)"
    return "(-inf, inf)"
