"""Variance budget: which share of the response's total variance each kind of term explains.

Built from the ANOVA's sequential sums of squares (see :mod:`orchestrator.analysis.anova`), so the shares sum to
100% of the total (corrected) sum of squares; no category is renormalised on its own. Categories: ``main``,
``two_way`` (two-factor interactions, linear x quadratic included), ``quadratic_higher`` (pure quadratics and
interactions of three or more factors), then ``lack_of_fit`` and ``pure_error`` (replicate noise) when cells have
replicates, else one ``residual`` (lack of fit and noise, which one run per cell cannot tell apart).
"""

from __future__ import annotations

import numpy as np

from orchestrator.analysis.results import (
    AnovaRow,
    AnovaTable,
    BudgetRow,
    VarianceBudget,
)


def variance_budget(anova: AnovaTable) -> VarianceBudget:
    total = sum(row.sum_sq for row in anova.rows)
    order = ["main", "two_way", "quadratic_higher"] + list(dict.fromkeys(
        _category(r) for r in anova.rows if r.kind in ("lack_of_fit", "pure_error", "residual")))
    rows = []
    for category in order:
        members = [r for r in anova.rows if _category(r) == category]
        sum_sq = sum(r.sum_sq for r in members)
        percent = 100.0 * sum_sq / total if total > 0 else np.nan
        rows.append(BudgetRow(category, sum(r.df for r in members), float(sum_sq), float(percent)))
    return VarianceBudget(tuple(rows))


def _category(row: AnovaRow) -> str:
    if row.kind == "interaction":
        return "two_way" if row.order == 2 else "quadratic_higher"
    if row.kind == "quadratic":
        return "quadratic_higher"
    return row.kind
