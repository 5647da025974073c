"""ANOVA from sequential (Type I) sums of squares, with the residual split into lack of fit and pure error.

Type I: each column is credited with the variance it explains after the columns before it, in design order (main
effects, quadratics, two-way, linear x quadratic, higher). The terms and the residual then sum exactly to the total
sum of squares, which the variance budget needs. In a balanced factorial the columns are orthogonal and the order
does not matter (Type I = II = III); when runs are missing, earlier (lower-order) terms get the shared part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.analysis.coding import INTERCEPT, Column
from orchestrator.analysis.results import AnovaRow, AnovaTable


def sequential_ss(matrix: pd.DataFrame, y: np.ndarray) -> pd.Series:
    """Type I sum of squares of each column of a full-rank ``matrix`` (``Intercept`` first, not returned)."""
    q, _ = np.linalg.qr(matrix.to_numpy(dtype=float))
    # With Q from a QR without pivoting, (q_j . y)^2 is what column j adds to the fit after columns 0..j-1.
    ss = (q.T @ y) ** 2
    return pd.Series(ss, index=matrix.columns).drop(INTERCEPT)


def pure_error(runs: pd.DataFrame, factors: list[str], y: np.ndarray) -> tuple[float, int]:
    """Sum of squares and df of replicate runs around their cell mean (0, 0 without replicates)."""
    cells = runs.groupby(factors, sort=False, dropna=False).ngroup().to_numpy()  # positional cell ids
    means = np.bincount(cells, weights=y) / np.bincount(cells)
    return float(np.sum((y - means[cells]) ** 2)), int(len(y) - cells.max() - 1)


def anova_table(columns: tuple[Column, ...], ss: pd.Series, ss_resid: float, df_resid: int,
                ss_pure: float, df_pure: int) -> AnovaTable:
    """Rows for the model terms (columns of one term pooled) in design order, then the residual rows.

    ``columns`` are the estimable columns, ``ss`` their sequential sums of squares. With replicates
    (``df_pure`` > 0) the residual is split into lack of fit (tested against pure error) and pure error.
    """
    ms_resid = ss_resid / df_resid if df_resid > 0 else np.nan
    rows = []
    for term in dict.fromkeys(c.term for c in columns):
        members = [c for c in columns if c.term == term]
        df, sum_sq = len(members), float(ss[[c.name for c in members]].sum())
        rows.append(_row(term, members[0].kind, members[0].order, df, sum_sq, ms_resid, df_resid))
    if df_pure > 0:
        df_lof = df_resid - df_pure
        # Never negative in exact arithmetic: the model's fitted values are constant within a cell.
        ss_lof = max(ss_resid - ss_pure, 0.0)
        rows.append(_row("lack of fit", "lack_of_fit", 0, df_lof, ss_lof, ss_pure / df_pure, df_pure))
        rows.append(_row("pure error", "pure_error", 0, df_pure, ss_pure, np.nan, 0))
    else:
        rows.append(_row("residual", "residual", 0, df_resid, ss_resid, np.nan, 0))
    return AnovaTable(tuple(rows))


def _row(term: str, kind: str, order: int, df: int, sum_sq: float, ms_error: float, df_error: int) -> AnovaRow:
    mean_sq = sum_sq / df if df > 0 else np.nan
    if df > 0 and df_error > 0:
        f = mean_sq / ms_error
        p = float(stats.f.sf(f, df, df_error))
    else:
        f = p = np.nan
    return AnovaRow(term, kind, order, int(df), float(sum_sq), float(mean_sq), float(f), p)
