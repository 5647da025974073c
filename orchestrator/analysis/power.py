"""Power of the effect tests: what a study of this size can detect, and how many runs a smaller effect needs.

Effects are coded coefficients (half the low -> high change of a +-1 column). In a balanced two-level design every
such coefficient has standard error sigma / sqrt(n), so a two-sided t test of an effect delta has noncentrality
delta * sqrt(n) / sigma on the residual degrees of freedom. ``sigma`` is the per-run noise SD: an
EffectsResult's ``sigma_pure_error`` where there are replicates, else its ``sigma``.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats


def detection_power(effect: float, sigma: float, n_runs: int, df_resid: float, *, alpha: float = 0.05) -> float:
    """Probability that a two-sided t test at ``alpha`` finds a coded effect of size ``effect``."""
    _check(sigma, n_runs, df_resid, alpha)
    ncp = abs(effect) * np.sqrt(n_runs) / sigma
    critical = stats.t.ppf(1 - alpha / 2, df_resid)
    return float(stats.nct.sf(critical, df_resid, ncp) + stats.nct.cdf(-critical, df_resid, ncp))


def detectable_effect(sigma: float, n_runs: int, df_resid: float, *, alpha: float = 0.05,
                      power: float = 0.8) -> float:
    """The smallest coded effect found with probability ``power`` by a two-sided t test at ``alpha``."""
    _check(sigma, n_runs, df_resid, alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1); got {power}")
    # Power grows with the effect; bracket the root between 0 (power = alpha) and an effect with power ~ 1.
    high = sigma / np.sqrt(n_runs)
    while detection_power(high, sigma, n_runs, df_resid, alpha=alpha) < power:
        high *= 2
    return float(optimize.brentq(
        lambda e: detection_power(e, sigma, n_runs, df_resid, alpha=alpha) - power, 0.0, high, xtol=1e-12 * high))


def runs_needed(effect: float, sigma: float, n_params: int, *, alpha: float = 0.05, power: float = 0.8,
                max_runs: int = 1_000_000) -> int:
    """Fewest runs for which a coded ``effect`` is detected with probability ``power``.

    ``n_params`` counts the model's coefficients with the intercept, so the residual has n - n_params df.
    """
    if effect == 0:
        raise ValueError("effect must be non-zero")
    if n_params < 1:
        raise ValueError(f"n_params must be >= 1; got {n_params}")

    def enough(n: int) -> bool:
        return detection_power(effect, sigma, n, n - n_params, alpha=alpha) >= power

    low, high = n_params, n_params + 1  # low: known too few (no residual df)
    while not enough(high):
        low, high = high, 2 * high
        if high > max_runs:
            raise ValueError(f"more than {max_runs} runs needed to detect {effect} with noise SD {sigma}")
    while high - low > 1:  # power is monotone in n: bisect for the first n that is enough
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _check(sigma: float, n_runs: int, df_resid: float, alpha: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    if n_runs < 1 or not df_resid > 0:
        raise ValueError(f"need runs and residual degrees of freedom; got n_runs={n_runs}, df_resid={df_resid}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
