"""Cell means for main-effect and interaction plots, with t-based confidence intervals."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.analysis.factors import factor_infos
from orchestrator.analysis.runs import select_runs


def cell_means(
    df: pd.DataFrame,
    factors: Mapping[str, Any],
    response: str,
    a: str,
    b: str | None = None,
    *,
    alpha: float = 0.05,
    diverged_value: float | None = None,
    sigma: float | None = None,
    error_df: float | None = None,
) -> pd.DataFrame:
    """Mean response per level of ``a`` (and of ``b``), over the runs :func:`fit_effects` would use.

    Columns: ``a`` (and ``b``), ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high`` (1 - alpha, t on n - 1 df).
    Every level combination gets a row, in level order, so an empty cell shows as n = 0 rather than vanishing
    from the plot; std and the interval need n >= 2 and are NaN otherwise. Means average over the other factors,
    which is fair in a balanced design.

    With a fit's noise estimate (``sigma`` and its ``error_df``, from :func:`fit_effects`) the interval is
    mean +- t(error_df) * sigma / sqrt(n), the model's error of a cell mean, and needs only n >= 1. Without it the
    within-cell spread is used, which also holds the other factors' effects: with an active third factor it can
    be many times wider than the noise.
    """
    names = [a] if b is None else [a, b]
    infos = factor_infos({name: factors[name] for name in names})
    runs = select_runs(df, response, diverged_value=diverged_value).runs
    rows = []
    for levels in product(*(infos[name].levels for name in names)):
        mask = np.ones(len(runs), dtype=bool)
        for name, level in zip(names, levels):
            mask &= (runs[name] == level).to_numpy()
        values = runs.loc[mask, response].to_numpy(dtype=float)
        n = len(values)
        mean = values.mean() if n else np.nan
        std = values.std(ddof=1) if n >= 2 else np.nan
        if sigma is not None and error_df is not None and error_df > 0 and n >= 1:
            margin = stats.t.ppf(1 - alpha / 2, error_df) * sigma / np.sqrt(n)
        else:
            margin = stats.t.ppf(1 - alpha / 2, n - 1) * std / np.sqrt(n) if n >= 2 else np.nan
        rows.append(dict(zip(names, levels)) | {"n": n, "mean": mean, "std": std,
                                                  "ci_low": mean - margin, "ci_high": mean + margin})
    return pd.DataFrame(rows, columns=names + ["n", "mean", "std", "ci_low", "ci_high"])
