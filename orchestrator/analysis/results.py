"""Result types of the analysis: frozen dataclasses with ``to_frame()`` and JSON-ready ``to_records()``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import pandas as pd


@dataclass(frozen=True)
class TermEffect:
    """One estimable model column. ``estimate`` is in coded units (see :mod:`orchestrator.analysis.coding`)."""

    term: str
    kind: Literal["main", "quadratic", "interaction"]
    order: int  # factors involved
    anova_term: str  # the ANOVA row it belongs to ("opt" for "opt[sgd]")
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    p_adjusted: float
    significant: bool  # p_adjusted < alpha
    aliased_with: tuple[str, ...]  # not estimable columns whose effect this estimate also carries


@dataclass(frozen=True)
class AnovaRow:
    term: str  # a model term, or "lack of fit", "pure error", "residual"
    kind: Literal["main", "quadratic", "interaction", "lack_of_fit", "pure_error", "residual"]
    order: int  # factors involved; 0 for the residual rows
    df: int
    sum_sq: float
    mean_sq: float
    F: float
    p_value: float


@dataclass(frozen=True)
class AnovaTable:
    """Sequential (Type I) sums of squares; model terms are tested against the residual, lack of fit against
    pure error. Rows sum to the total (corrected) sum of squares."""

    rows: tuple[AnovaRow, ...]

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.rows, AnovaRow)

    def to_records(self) -> list[dict[str, Any]]:
        return _records(self.rows)


@dataclass(frozen=True)
class BudgetRow:
    category: Literal["main", "two_way", "quadratic_higher", "lack_of_fit", "pure_error", "residual"]
    df: int
    sum_sq: float
    percent: float


@dataclass(frozen=True)
class VarianceBudget:
    """Shares of the total variance of the response; the percents sum to 100."""

    rows: tuple[BudgetRow, ...]

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.rows, BudgetRow)

    def to_records(self) -> list[dict[str, Any]]:
        return _records(self.rows)

    def percent(self, category: str) -> float:
        return next(row.percent for row in self.rows if row.category == category)


@dataclass(frozen=True)
class RunsUsed:
    """Which runs a result saw and which it used: the accounting every analysis result carries (and says in its
    notes), filled from the :class:`~orchestrator.analysis.runs.RunSelection` it was made from."""

    n_runs: int  # rows given
    n_used: int  # rows in the fit
    n_diverged: int
    n_imputed: int  # DIVERGED runs used with diverged_value
    excluded: dict[str, int]  # status -> runs left out
    n_missing_response: int


@dataclass(frozen=True)
class EffectsResult(RunsUsed):
    """What :func:`orchestrator.analysis.fit_effects` found, and on which runs.

    ``method`` is "ols" (errors from the residual) or "lenth" (no residual degrees of freedom: Lenth's pseudo
    standard error). ``sigma`` estimates the per-run noise SD either way; ``error_df`` is the degrees of freedom of
    the t distribution behind the p-values and intervals (residual df, or m/3 for Lenth). ``not_estimable`` maps
    each column the data cannot separate to the kept columns it is a combination of; those columns have no row in
    ``terms``. ``notes`` say in words what was excluded and how to read the numbers.
    """

    response: str
    method: Literal["ols", "lenth"]
    alpha: float
    adjust: str | None
    terms: tuple[TermEffect, ...]
    intercept: float
    not_estimable: dict[str, tuple[str, ...]]
    anova: AnovaTable
    budget: VarianceBudget
    df_resid: int
    error_df: float
    r_squared: float
    sigma: float
    sigma_pure_error: float  # NaN without replicates
    notes: tuple[str, ...]

    def term(self, name: str) -> TermEffect:
        for effect in self.terms:
            if effect.term == name:
                return effect
        if name in self.not_estimable:
            raise KeyError(f"{name!r} is not estimable from these runs: aliased with {self.not_estimable[name]}")
        raise KeyError(f"no term {name!r}; terms: {[e.term for e in self.terms]}")

    def to_frame(self) -> pd.DataFrame:
        """One row per estimable term: term, estimate, std_error, ci_low, ci_high, t, p_value, p_adjusted,
        significant, aliased_with (a list), kind, order, anova_term."""
        frame = _frame(self.terms, TermEffect)
        frame["aliased_with"] = [list(a) for a in frame["aliased_with"]]
        first = ["term", "estimate", "std_error", "ci_low", "ci_high", "t", "p_value", "p_adjusted", "significant",
                 "aliased_with", "kind"]
        return frame[first + [c for c in frame.columns if c not in first]]

    def to_records(self) -> list[dict[str, Any]]:
        return _records(self.terms)

    def to_dict(self) -> dict[str, Any]:
        """The whole result, JSON-ready (NaN and infinities become None)."""
        summary = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("terms", "anova", "budget")}
        summary["not_estimable"] = {k: list(v) for k, v in self.not_estimable.items()}
        summary["notes"] = list(self.notes)
        summary = {k: _json_value(v) for k, v in summary.items()}
        return summary | {"terms": self.to_records(), "anova": self.anova.to_records(),
                          "budget": self.budget.to_records()}


def _frame(rows: tuple[Any, ...], cls: type) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in rows], columns=[f.name for f in fields(cls)])


def _records(rows: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [{k: _json_value(v) for k, v in asdict(r).items()} for r in rows]


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
