"""Lenth's (1989) pseudo standard error, for fits with no residual degrees of freedom.

An unreplicated saturated design (e.g. 2^3 with all interactions) fits every run exactly, so there is no residual
to estimate the noise from. Lenth's method relies on effect sparsity instead: most effects are noise, so a robust
spread of all effects estimates the noise. s0 = 1.5 * median|c|; PSE = 1.5 * median of the |c| < 2.5 * s0;
effects are judged with t on m/3 degrees of freedom (m effects).

Effects are first divided by their relative standard error sqrt((X'X)^-1_jj), so they share one variance even
when the design is not orthogonal; the PSE of these standardised effects then estimates the per-run noise SD
sigma, and a coefficient's standard error is PSE * sqrt((X'X)^-1_jj). For an orthogonal +-1 design this is the
classic method exactly (the PSE of the effects 2b is 2*sigma/sqrt(n)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def lenth_pse(effects: np.ndarray | pd.Series) -> float:
    magnitude = np.abs(np.asarray(effects, dtype=float))
    s0 = 1.5 * np.median(magnitude)
    small = magnitude[magnitude < 2.5 * s0]
    return float(1.5 * np.median(small)) if small.size else 0.0


def lenth_inference(estimates: pd.Series, unit_se: pd.Series, alpha: float) -> tuple[pd.DataFrame, float, float]:
    """Standard errors, t, p and 1 - alpha intervals for ``estimates`` -> (table, PSE, degrees of freedom).

    ``unit_se`` is each estimate's standard error per unit noise SD, sqrt((X'X)^-1_jj).
    """
    pse = lenth_pse(estimates / unit_se)
    df = len(estimates) / 3.0
    se = pse * unit_se
    with np.errstate(divide="ignore", invalid="ignore"):  # PSE = 0 only with noiseless data: t is then inf
        t = estimates / se
    margin = stats.t.ppf(1 - alpha / 2, df) * se
    table = pd.DataFrame({
        "std_error": se,
        "t": t,
        "p_value": 2 * stats.t.sf(np.abs(t), df),
        "ci_low": estimates - margin,
        "ci_high": estimates + margin,
    })
    return table, pse, df
