"""Main effects and interactions with honest uncertainty: :func:`fit_effects`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests

from orchestrator.analysis.aliasing import find_aliasing
from orchestrator.analysis.anova import anova_table, pure_error, sequential_ss
from orchestrator.analysis.budget import variance_budget
from orchestrator.analysis.coding import INTERCEPT, design_matrix
from orchestrator.analysis.factors import factor_infos
from orchestrator.analysis.lenth import lenth_inference
from orchestrator.analysis.results import EffectsResult, TermEffect
from orchestrator.analysis.runs import select_runs

UNITS_NOTE = ("estimates are in coded units: numeric factors span [-1, +1] over their levels (log space for log "
              "scale), so a main effect is half the change from the lowest to the highest level; x^2 is centred "
              "over the levels; a categorical column opt[level] is that level's deviation from the mean of the "
              "level means (first level = reference)")


def fit_effects(
    df: pd.DataFrame,
    factors: Mapping[str, Any],
    response: str,
    *,
    alpha: float = 0.05,
    adjust: Literal["holm", "fdr_bh"] | None = "holm",
    max_order: int = 2,
    diverged_value: float | None = None,
    min_resid_df: int = 1,
    curved_pairs: bool = True,
) -> EffectsResult:
    """Fit main effects and interactions of ``factors`` on ``response`` by OLS on the coded design.

    ``df`` has one row per run: the factor columns, the response and optionally ``status``. ``factors`` maps each
    factor column to a :class:`FactorInfo` (or a spec ``Factor``). The model (see
    :mod:`orchestrator.analysis.coding`) has the main effects, quadratics of numeric factors with 3+ levels, and
    the interactions of up to ``max_order`` factors, plus linear x quadratic ones for pairs of numeric factors.

    Failed runs rule (:mod:`orchestrator.analysis.runs`): COMPLETE runs are used; DIVERGED runs are excluded and
    counted (the fit then describes the non-diverging region) unless ``diverged_value`` is given, which uses them
    with that response; FAILED, TIMEOUT, OOM and other statuses are excluded and counted; missing or non-finite
    responses are excluded and counted. Replicates are used as they are: they give the residual its pure error.

    Aliasing (:mod:`orchestrator.analysis.aliasing`): a column the runs cannot separate from earlier columns is
    never estimated. The first (lowest-order) column of an alias set is kept and lists the others in
    ``aliased_with``; the others appear only in ``not_estimable``.

    Uncertainty: with residual degrees of freedom, the usual OLS standard errors, t and p-values; with none (an
    unreplicated saturated design), or fewer than ``min_resid_df``, Lenth's pseudo standard error
    (``method="lenth"``): a noise SD from 1-2 residual df is so uncertain that a small residual by chance makes
    every term "significant", while pooling the interactions into the error hides them when they are large. Intervals are per-term at
    level 1 - ``alpha``; p-values are adjusted over all terms by ``adjust`` (Holm, Benjamini-Hochberg or None) and
    ``significant`` means p_adjusted < alpha.

    The ANOVA uses sequential sums of squares in design order, and the variance budget sums to 100% of them
    (:mod:`orchestrator.analysis.anova`, :mod:`orchestrator.analysis.budget`).
    """
    if adjust not in ("holm", "fdr_bh", None):
        raise ValueError(f"adjust must be 'holm', 'fdr_bh' or None; got {adjust!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    infos = factor_infos(factors)
    if not infos:
        raise ValueError("name at least one factor")
    selection = select_runs(df, response, diverged_value=diverged_value)
    runs = selection.runs
    if len(runs) < 2:
        raise ValueError(f"{len(runs)} usable run(s) of {selection.n_runs}; a fit needs at least 2. "
                         + "; ".join(selection.notes))

    design = design_matrix(runs, infos, max_order=max_order, curved_pairs=curved_pairs)
    aliasing = find_aliasing(design.matrix)
    if len(aliasing.kept) == 1:
        raise ValueError("no effect is estimable from these runs: every factor column is constant "
                         "(the usable runs all share one cell)")
    matrix = design.matrix[list(aliasing.kept)]
    columns = tuple(c for c in design.columns if c.name in aliasing.kept)
    y = runs[response].to_numpy(dtype=float)
    ols = OLS(y, matrix).fit()
    estimates = ols.params.drop(INTERCEPT)
    df_resid = round(ols.df_resid)
    notes = [UNITS_NOTE, *selection.notes]

    if min_resid_df < 1:
        raise ValueError(f"min_resid_df must be >= 1; got {min_resid_df}")
    if df_resid >= min_resid_df:
        method = "ols"
        table = _ols_table(ols, alpha).drop(INTERCEPT)
        sigma, error_df = float(np.sqrt(ols.scale)), float(df_resid)
    else:
        method = "lenth"
        unit_se = pd.Series(np.sqrt(np.diag(ols.normalized_cov_params)), index=matrix.columns).drop(INTERCEPT)
        table, sigma, error_df = lenth_inference(estimates, unit_se, alpha)
        few = "no" if df_resid == 0 else f"{df_resid} (fewer than {min_resid_df})"
        notes.append(f"{few} residual degrees of freedom: standard errors, p-values and intervals use Lenth's pseudo "
                     f"standard error of {len(estimates)} effects (t on {error_df:.3g} df), which assumes most "
                     "effects are null")
    if aliasing.dropped:
        listed = "; ".join(f"{name} = combination of {list(combo) or 'nothing (no variation)'}"
                           for name, combo in aliasing.dropped.items())
        notes.append(f"{len(aliasing.dropped)} column(s) not estimable from these runs (aliased): {listed}. "
                     "A kept column's estimate also carries the effects in its aliased_with")
    p_adjusted = _adjust(table["p_value"], alpha, adjust)

    terms = tuple(
        TermEffect(
            term=c.name, kind=c.kind, order=c.order, anova_term=c.term,
            estimate=float(estimates[c.name]),
            std_error=float(table.at[c.name, "std_error"]),
            ci_low=float(table.at[c.name, "ci_low"]),
            ci_high=float(table.at[c.name, "ci_high"]),
            t=float(table.at[c.name, "t"]),
            p_value=float(table.at[c.name, "p_value"]),
            p_adjusted=float(p_adjusted[c.name]),
            significant=bool(p_adjusted[c.name] < alpha),
            aliased_with=aliasing.aliases_of(c.name),
        )
        for c in columns
    )

    ss_resid = float(ols.ssr)
    ss_pure, df_pure = pure_error(runs, list(infos), y)
    anova = anova_table(columns, sequential_ss(matrix, y), ss_resid, df_resid, ss_pure, df_pure)
    ss_total = float(np.sum((y - y.mean()) ** 2))
    return EffectsResult(
        response=response, method=method, alpha=alpha, adjust=adjust, terms=terms,
        intercept=float(ols.params[INTERCEPT]),
        not_estimable=dict(aliasing.dropped),
        anova=anova, budget=variance_budget(anova),
        **selection.used(len(runs)),
        df_resid=df_resid, error_df=error_df,
        r_squared=1.0 - ss_resid / ss_total if ss_total > 0 else float("nan"),
        sigma=sigma,
        sigma_pure_error=float(np.sqrt(ss_pure / df_pure)) if df_pure > 0 else float("nan"),
        notes=tuple(notes),
    )


def _ols_table(ols: Any, alpha: float) -> pd.DataFrame:
    ci = ols.conf_int(alpha)
    return pd.DataFrame({"std_error": ols.bse, "t": ols.tvalues, "p_value": ols.pvalues,
                         "ci_low": ci[0], "ci_high": ci[1]})


def _adjust(p_values: pd.Series, alpha: float, method: str | None) -> pd.Series:
    """Multiplicity-adjusted p-values over the family of all terms; NaN p-values stay NaN and out of the family."""
    adjusted = p_values.copy()
    finite = p_values.notna()
    if method == "holm" and finite.any():
        adjusted[finite] = _holm(p_values[finite].to_numpy())
    elif method is not None and finite.any():
        adjusted[finite] = multipletests(p_values[finite].to_numpy(), alpha=alpha, method=method)[1]
    return adjusted


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, as statsmodels computes it (tests compare the two). Written out because
    ``multipletests(method="holm")`` runs ``gc.collect()`` on every call (statsmodels 0.15): ~44 ms a fit, most
    of a fit's time, and more in a process holding a model."""
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted
