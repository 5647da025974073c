"""A second-order response surface fitted by OLS over every run of a study, designed or proposed.

Why a second estimate next to the designed fit: an adaptive study spends one designed wave on screening (a
16-run fraction of 7 factors is saturated, its two-factor interactions aliased in chains) and hands the rest to a
model, whose points are no design. Those points still measure the response where they lie, so a regression on all
runs, with a model rich enough for an interior optimum, sees far more of the interactions than the screen alone
(measured in docs/benchmarks.md: interaction recall 0.73 against 0.07 on ``llm_finetune``).

The model (:mod:`orchestrator.analysis.coding`, ``curved_pairs=False``): main effects, a quadratic for each numeric
factor with 3+ distinct values, and every two-factor interaction, each factor coded over the range its runs span
(log space for a log factor). It is the classical second-order model of response-surface methodology (Box and
Wilson 1951; Myers, Montgomery and Anderson-Cook, ch. 6-7). When the runs show no curvature (the joint F test of
the quadratic terms, p above ``CURVATURE_P``), the quadratics are left out and the fit is the first-order model with
interactions, and its note says so: on a multilinear surface they only take residual degrees of freedom and, over
runs clustered near a corner, most of the pairs' precision. The pre-test is one test, liberal on purpose.

What it does not promise: the runs a model proposed cluster where the model expected the optimum, so the estimates
are local where the runs are dense, and a surface that a quadratic does not describe leaves lack of fit in the
residual (wider intervals, and a term may take up some of that shape). The intervals assume the second-order model;
the designed fit's do not need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

import pandas as pd

from orchestrator.analysis.factors import FactorInfo, factor_infos
from orchestrator.analysis.fit import fit_effects
from orchestrator.analysis.results import EffectsResult

MIN_RESID_DF = 3  # fewer: Lenth's method, as in the designed fit (a noise SD from 1-2 df tests nothing)
# The quadratic terms are dropped when their joint F test has a p-value above this (liberal: curvature is kept when
# in doubt, since a missing quadratic can leak into the pairs). On screening, a multilinear surface, the quadratics
# of 7 factors cost the pairs 7 residual df and, over runs clustered near a corner, most of their precision:
# interaction recall 1.00 without them against 0.35 with them (docs/benchmarks.md).
CURVATURE_P = 0.2


def fit_surface(df: pd.DataFrame, factors: Mapping[str, object], response: str, *, alpha: float = 0.05,
                adjust: Literal["holm", "fdr_bh"] | None = "holm") -> EffectsResult:
    """The second-order fit of ``response`` on every run in ``df`` (see the module docstring).

    ``factors`` gives each factor's kind and scale (a spec's factors or FactorInfo); the levels are read from the
    runs, since a model's points take values no spec lists."""
    infos = {}
    for name, info in factor_infos(factors).items():
        if name not in df.columns:
            raise ValueError(f"factor {name!r} is not a column; columns: {list(df.columns)}")
        values = df[name].dropna().tolist()
        levels = tuple(sorted(set(values))) if info.kind == "numeric" else info.levels
        if len(levels) < 2:
            continue  # held at one value: nothing to estimate
        infos[name] = FactorInfo(levels, info.scale, info.kind)
    if not infos:
        raise ValueError("every factor is held at one value: no effect to fit")
    result = fit_effects(df, infos, response, alpha=alpha, adjust=adjust, min_resid_df=MIN_RESID_DF,
                         curved_pairs=False)
    note = ("second-order response surface (main effects, quadratics, two-factor interactions) over every run, "
            "designed or proposed; its intervals assume that model")
    curved = [n for n, info in infos.items() if info.kind == "numeric" and len(info.levels) >= 3]
    flat = {n: FactorInfo((info.levels[0], info.levels[-1]), info.scale, info.kind) if n in curved else info
            for n, info in infos.items()}
    if curved and result.method == "ols":
        simple = fit_effects(df, flat, response, alpha=alpha, adjust=adjust, min_resid_df=MIN_RESID_DF)
        p = _curvature_p(result, simple)
        if simple.method == "ols" and p > CURVATURE_P:
            note = (f"response surface of main effects and two-factor interactions over every run, designed or "
                    f"proposed; its {len(curved)} quadratic terms were left out, as the runs show no curvature "
                    f"(joint F test p = {p:.2g} > {CURVATURE_P:g}), which leaves the pairs more residual degrees of "
                    "freedom; its intervals assume that model")
            return replace(simple, notes=(note, *simple.notes))
        note += f" (the quadratic terms are kept: joint F test p = {p:.2g})"
    return replace(result, notes=(note, *result.notes))


def _curvature_p(full: EffectsResult, simple: EffectsResult) -> float:
    """p-value of the F test that every quadratic term is zero: the fit with them against the fit without."""
    from scipy import stats

    extra = simple.error_df - full.error_df
    rss_full, rss_simple = full.sigma**2 * full.error_df, simple.sigma**2 * simple.error_df
    if extra <= 0 or rss_full <= 0:
        return 0.0  # nothing to compare, or an exact fit: keep the richer model
    f = max(0.0, (rss_simple - rss_full) / extra) / (rss_full / full.error_df)
    return float(stats.f.sf(f, extra, full.error_df))
