"""A second-order response surface fitted by OLS over every run of a study, designed or proposed.

Why a second estimate next to the designed fit: an adaptive study spends one designed wave on screening (a
16-run fraction of 7 factors is saturated, its two-factor interactions aliased in chains) and hands the rest to a
model, whose points are no design. Those points still measure the response where they lie, so a regression on all
runs, with a model rich enough for an interior optimum, sees far more of the interactions than the screen alone
(measured in docs/benchmarks.md: interaction recall 0.73 against 0.07 on ``llm_finetune``).

The model (:mod:`orchestrator.analysis.coding`, ``curved_pairs=False``): main effects, a quadratic for each numeric
factor with 3+ distinct values, and every two-factor interaction, each factor coded over the range its runs span
(log space for a log factor). It is the classical second-order model of response-surface methodology (Box and
Wilson 1951; Myers, Montgomery and Anderson-Cook, ch. 6-7).

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
    return replace(result, notes=(note, *result.notes))
