"""Effects and interactions of a study (Effects and Interactions views), fitted by :func:`fit_effects` as
`wavesweep analyze` does, plus what the charts need: standardised effects, significance lines, half-normal
quantiles, the interaction matrix and the interaction plot's cell means.

Adaptive waves move their window, so a study's runs span several regions at different levels. The default fit for
them is the latest wave's region (every run inside the box its runs span); "all" fits every run. The view says
which runs it fitted.

Proposed waves (a model's batch, a space-filling sample: :mod:`orchestrator.wave_kinds`) are not a design, so
both scopes fit the designed waves' runs only, the latest *designed* wave defines the region, and the view says
which runs were left out. :func:`decompose_all` is the fANOVA of every run, for those studies (it takes seconds:
the app computes it on demand).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits  # scikit-learn's dependency, hence ours

from dashboard.data import Study
from orchestrator.analysis import (
    EffectsResult,
    FactorInfo,
    FanovaResult,
    cell_means,
    decompose,
    fit_effects,
    fit_surface,
)
from orchestrator.analysis.coding import term_factors
from orchestrator.reporting.report import WaveSplit
from orchestrator.run_record import param_key
from orchestrator.spec import Factor
from orchestrator.wave_kinds import resolved_mode


@dataclass(frozen=True)
class Fit:
    scope: str  # "latest" (the latest wave's region) or "all"
    response: str  # the response metric, the frame's column
    described: str  # which runs were fitted, in words
    factors: dict[str, FactorInfo]  # factors that vary among the fitted runs
    frame: pd.DataFrame  # the analysis input: one column per factor, the response (named as the metric), status
    result: EffectsResult | None
    error: str | None  # why there is no result


def default_scope(study: Study) -> str:
    """"latest" for adaptive waves (their windows move), "all" for grids and greedy paths."""
    return "latest" if _mode(study) == "waves" else "all"


def _mode(study: Study) -> str:
    return resolved_mode(study.mode, study.waves["design"].iloc[0] if len(study.waves) else None)


@dataclass(frozen=True)
class Decomposition:
    described: str  # which runs were decomposed, in words
    result: FanovaResult | None
    error: str | None  # why there is no result


def fit(study: Study, scope: str | None = None, alpha: float = 0.05) -> Fit:
    scope = scope or default_scope(study)
    split = study.split
    if split.has_proposals and not split.designed:
        return Fit(scope, study.metric, split.all_runs(), {}, _empty(study, {}), None,
                   f"every wave is proposed ({split.left_out()}), so there is no design to fit effects on")
    runs, described = _scope(study, scope, split)
    left_out = f"; {split.left_out()}" if split.has_proposals else ""
    factors, fixed = _varying(study, runs)
    frame = runs[[param_key(f) for f in factors] + [study.response, "status"]] if study.response in runs else None
    if frame is None or not _any_result(runs, study):
        return Fit(scope, study.metric, described + left_out, factors, _empty(study, factors), None,
                   f"no COMPLETE run with {study.metric!r} yet")
    frame = frame.rename(columns={param_key(f): f for f in factors} | {study.response: study.metric})
    if fixed and scope == "all":  # the latest region's description already names its constant factors
        described += "; constant there: " + ", ".join(f"{f} = {v}" for f, v in fixed.items())
    described += left_out
    if not factors:
        return Fit(scope, study.metric, described, factors, frame, None, "no factor varies among these runs")
    if _mode(study) == "greedy":
        described += ("; a greedy path is not a design, so most interactions are not estimable "
                      "(wavesweep analyze --method fanova decomposes it instead)")
    try:
        # One BLAS thread: 20,000 x 40 matrices gain nothing from more, and on a busy machine (the study's own
        # workers) OpenBLAS threads spin against them: the fit took 3.3 s with 2 threads, 0.16 s with 1.
        with threadpool_limits(limits=1, user_api="blas"):
            result = fit_effects(frame, factors, study.metric, alpha=alpha)
    except ValueError as exc:
        return Fit(scope, study.metric, described, factors, frame, None, f"cannot fit these runs yet: {exc}")
    return Fit(scope, study.metric, described, factors, frame, result, None)


def _any_result(runs: pd.DataFrame, study: Study) -> bool:
    return bool(((runs["status"] == "COMPLETE") & np.isfinite(runs[study.response].astype(float))).any())


def _empty(study: Study, factors: dict) -> pd.DataFrame:
    return pd.DataFrame(columns=[*factors, study.metric, "status"])


def decompose_all(study: Study, alpha: float = 0.05, seed: int = 0) -> Decomposition:
    """The random-forest decomposition of every run, proposed waves' included: it is made for points no design
    placed. Seconds, not milliseconds (1 + 100 bootstrap + 2 x 99 permutation forests), so only on demand."""
    described, factors, frame, error = _every_run(study)
    if error:
        return Decomposition(described, None, error)
    try:
        with threadpool_limits(limits=1, user_api="blas"):  # as in fit(): spare the study's own workers
            result = decompose(frame, factors, study.metric, alpha=alpha, seed=seed)
    except ValueError as exc:
        return Decomposition(described, None, f"cannot decompose these runs yet: {exc}")
    return Decomposition(described, result, None)


def _every_run(study: Study) -> tuple[str, dict[str, FactorInfo], pd.DataFrame | None, str | None]:
    """Every run as the analysis takes it (the varying factors, the response named as the metric, status), which
    runs those are in words, and why there is nothing to analyse yet (None when there is)."""
    runs = study.runs
    described = study.split.all_runs()
    factors, _ = _varying(study, runs)
    if study.response not in runs or not _any_result(runs, study):
        return described, factors, None, f"no COMPLETE run with {study.metric!r} yet"
    if not factors:
        return described, factors, None, "no factor varies among these runs"
    frame = runs[[param_key(f) for f in factors] + [study.response, "status"]]
    frame = frame.rename(columns={param_key(f): f for f in factors} | {study.response: study.metric})
    return described, factors, frame, None


@dataclass(frozen=True)
class SurfaceFit:
    described: str  # which runs were fitted, in words
    result: EffectsResult | None
    error: str | None  # why there is no result


def surface_all(study: Study, alpha: float = 0.05) -> SurfaceFit:
    """The second-order response surface by OLS over every run, proposed waves' included
    (:func:`orchestrator.analysis.fit_surface`): the interactions the saturated screen cannot separate. Milliseconds,
    so shown with the effects, not on demand."""
    described, factors, frame, error = _every_run(study)
    if error:
        return SurfaceFit(described, None, error)
    try:
        with threadpool_limits(limits=1, user_api="blas"):  # as in fit(): spare the study's own workers
            result = fit_surface(frame, factors, study.metric, alpha=alpha)
    except ValueError as exc:
        return SurfaceFit(described, None, f"cannot fit these runs yet: {exc}")
    return SurfaceFit(described, result, None)


def _scope(study: Study, scope: str, split: WaveSplit) -> tuple[pd.DataFrame, str]:
    runs = study.runs
    if split.has_proposals:  # a proposed wave's points are no design: neither fitted nor defining the region
        runs = runs[runs["wave"].isin(split.designed)]
    if scope == "all" or runs.empty:
        return runs, split.used() if split.has_proposals else f"all {len(runs)} runs"
    latest = int(runs["wave"].max())
    inside = pd.Series(True, index=runs.index)
    bounds = []
    for factor in study.factors:
        column = runs[param_key(factor)]
        values = column[runs["wave"] == latest].dropna().unique().tolist()
        if _numeric(study, factor) and len(values) > 1:
            low, high = min(values), max(values)
            inside &= column.between(low, high)
            bounds.append(f"{factor} in [{low:g}, {high:g}]")
        else:
            inside &= column.isin(values)
            bounds.append(f"{factor} = {values[0]}" if len(values) == 1 else f"{factor} in {values}")
    of = split.used() if split.has_proposals else f"{len(runs)} runs"
    return runs[inside], f"runs inside wave {latest}'s region ({', '.join(bounds)}): {int(inside.sum())} of {of}"


def _spec_factor(study: Study, name: str) -> Factor:
    return Factor.model_validate(study.spec["factors"][name])


def _numeric(study: Study, name: str) -> bool:
    return _spec_factor(study, name).kind == "numeric"


def _varying(study: Study, runs: pd.DataFrame) -> tuple[dict[str, FactorInfo], dict[str, Any]]:
    """FactorInfo for each factor with 2+ values among ``runs`` (levels from the runs: a moved window has levels
    the spec never listed; scale and kind from the spec), and the value of each constant one."""
    infos, fixed = {}, {}
    for name in study.factors:
        spec = _spec_factor(study, name)
        values = runs[param_key(name)].dropna().unique().tolist()
        if len(values) == 1:
            fixed[name] = values[0]
        if len(values) < 2:
            continue
        if spec.kind == "numeric":
            levels = sorted(values)
        else:
            order = {level: i for i, level in enumerate(spec.levels)}
            levels = sorted(values, key=lambda v: (order.get(v, len(order)), str(v)))
        infos[name] = FactorInfo(tuple(levels), spec.scale, spec.kind)
    return infos, fixed


# --- what the charts need ------------------------------------------------------------------------------------------

def standardized(result: EffectsResult) -> pd.DataFrame:
    """One row per estimated term, largest |t| first: term, kind, estimate (coded units), std_error, t (the
    standardised effect, estimate / std_error), abs_t, p_adjusted, significant, aliased_with (text)."""
    frame = result.to_frame()
    frame["abs_t"] = frame["t"].abs()
    frame["aliased_with"] = frame["aliased_with"].map(", ".join)
    columns = ["term", "kind", "estimate", "std_error", "t", "abs_t", "p_adjusted", "significant", "aliased_with"]
    return frame.sort_values("abs_t", ascending=False, kind="stable")[columns].reset_index(drop=True)


def critical_t(result: EffectsResult) -> tuple[float, float]:
    """(|t| above which a term is significant at alpha unadjusted, and with Bonferroni over the terms). Holm, which
    marks the significant terms, lies between the two: its first step is Bonferroni, its last is unadjusted."""
    m = max(1, len(result.terms))
    df = result.error_df
    if not df or not math.isfinite(df) or df <= 0:
        return math.nan, math.nan
    return (float(stats.t.ppf(1 - result.alpha / 2, df)), float(stats.t.ppf(1 - result.alpha / (2 * m), df)))


def half_normal(result: EffectsResult) -> pd.DataFrame:
    """|t| of each term, ascending, against half-normal quantiles Phi^-1(0.5 + 0.5 (i - 0.5) / m): inert terms fall
    on a line through the origin, active ones stand off it (Daniel 1959)."""
    frame = standardized(result).sort_values("abs_t", kind="stable").reset_index(drop=True)
    m = len(frame)
    frame["quantile"] = stats.norm.ppf(0.5 + 0.5 * (np.arange(1, m + 1) - 0.5) / m) if m else []
    return frame[["term", "abs_t", "quantile", "significant"]]


def anova_frame(result: EffectsResult) -> pd.DataFrame:
    frame = result.anova.to_frame()
    return frame[["term", "kind", "df", "sum_sq", "mean_sq", "F", "p_value"]]


def alias_frame(result: EffectsResult) -> pd.DataFrame:
    """Not estimable columns and the estimated ones whose estimates carry their effect."""
    rows = [{"not estimable": name, "carried by": " + ".join(combo) or "nothing (no variation)"}
            for name, combo in result.not_estimable.items()]
    return pd.DataFrame(rows, columns=["not estimable", "carried by"])


def interaction_matrix(fit: Fit) -> pd.DataFrame:
    """One row per pair of fitted factors (a, b): size (largest |estimate| of the pair's interaction columns,
    coded units), abs_t, p_adjusted (smallest), significant, note ("aliased" when the runs cannot separate it)."""
    rows = []
    result = fit.result
    for a, b in combinations(fit.factors, 2):
        pair = frozenset((a, b))
        terms = [t for t in result.terms if t.kind == "interaction" and term_factors(t.term) == pair]
        aliased = [n for n in result.not_estimable if term_factors(n) == pair]
        if terms:
            rows.append({"a": a, "b": b, "size": max(abs(t.estimate) for t in terms),
                         "abs_t": max(abs(t.t) for t in terms), "p_adjusted": min(t.p_adjusted for t in terms),
                         "significant": any(t.significant for t in terms),
                         "note": "partly aliased" if aliased else ""})
        else:
            rows.append({"a": a, "b": b, "size": math.nan, "abs_t": math.nan, "p_adjusted": math.nan,
                         "significant": False, "note": "aliased" if aliased else "not in the model"})
    return pd.DataFrame(rows, columns=["a", "b", "size", "abs_t", "p_adjusted", "significant", "note"])


def strongest_pair(matrix: pd.DataFrame) -> tuple[str, str] | None:
    if matrix.empty:
        return None
    ranked = matrix.sort_values("abs_t", ascending=False, na_position="last")
    return str(ranked["a"].iloc[0]), str(ranked["b"].iloc[0])


def interaction_means(fit: Fit, a: str, b: str, alpha: float = 0.05) -> pd.DataFrame:
    """Mean response per level of ``a`` and ``b`` with 1 - alpha intervals (the classic interaction plot).

    The intervals use the fit's noise estimate when there is one: the within-cell spread of a two-factor cell
    also holds every other factor's effect, and drew intervals 70x too wide on a 2^3 study with an active third
    factor."""
    result = fit.result
    if result is not None and result.sigma > 0 and result.error_df > 0:
        return cell_means(fit.frame, fit.factors, fit.response, a, b, alpha=alpha, sigma=result.sigma,
                          error_df=result.error_df)
    return cell_means(fit.frame, fit.factors, fit.response, a, b, alpha=alpha)
