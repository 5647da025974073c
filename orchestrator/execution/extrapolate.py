"""A run's final value from the start of its learning curve, with a prediction interval calibrated on finished runs.

Three predictors compete at each step s (the candidates of Domhan et al., "Speeding up automatic hyperparameter
optimization of deep neural networks by extrapolation of learning curves", IJCAI 2015, reduced to what is cheap and
cannot fail to converge):

- ``exp``: the run's own points so far fitted with ``c + a exp(-k u)`` (u = step / full steps), predicted at u = 1;
- ``pow``: the same with ``c + a u^-k``;
- ``peers``: least squares, over the finished runs, of their finals on their value at s and how much they moved since
  s // 2 (no curve shape assumed: a finished peer that looked the same at s ended the same).

For a given k both curve families are linear in (c, a), so each fit is a scan over a fixed grid of k with closed-form
least squares (variable projection): no iterative optimiser, no starting values, the same answer every time.

The finished runs are the calibration set: each one's curve, cut at s, is extrapolated the same way, and its real
final says how wrong that predictor is at s (for ``peers``: leave-one-out residuals). The predictor with the smallest
residual SD wins; its prediction is shifted by its mean residual (a family that always undershoots is corrected) and
the interval is ``t(n - 1) * SD * sqrt(1 + 1 / n)`` around it. No family is trusted because it fits the points: a
family that does not describe these curves loses to the peers on its record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_POINTS = 4  # a curve needs this many points before a family is fitted to it
MIN_CALIBRATION = 5  # finished runs that reached the step, before any prediction
MAX_CALIBRATION = 60  # the most recent finished runs used to calibrate (the cost of a step's calibration is bounded)
K_EXP = np.geomspace(0.05, 40.0, 60)  # rates of exp over a full run (k = 40: 1e-17 of the gap left at the end)
K_POW = np.geomspace(0.02, 4.0, 50)  # exponents of pow
FAMILIES = ("exp", "pow", "peers")


@dataclass(frozen=True)
class Prediction:
    value: float
    interval: tuple[float, float]
    method: str  # the predictor that won at this step
    sd: float  # its calibrated residual SD
    calibrated_on: int  # finished runs in the calibration


def fit_family(family: str, u: np.ndarray, y: np.ndarray) -> float | None:
    """The value at u = 1 of the least-squares fit of ``family`` to the points (u, y); None with too few points.

    The rate (or exponent) k is scanned on a fixed geometric grid, then twice on a finer grid around the best point
    (a grid step is 12%, which alone would misplace the end of a fast curve by a few hundredths of its gap)."""
    if len(u) < MIN_POINTS:
        return None
    grid = K_EXP if family == "exp" else K_POW
    best = None
    for _ in range(3):
        sse, end = _scan(family, grid, u, y)
        if not np.isfinite(sse).any():
            return best
        i = int(np.argmin(sse))
        best = float(end[i])
        grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 21)
    return best


def _scan(family: str, grid: np.ndarray, u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per k of ``grid``: the residual sum of squares of y ~ c + a * basis_k(u), and the fit's value at u = 1."""
    basis = np.exp(-np.outer(grid, u)) if family == "exp" else u[None, :] ** -grid[:, None]  # (k, points)
    at_end = np.exp(-grid) if family == "exp" else np.ones_like(grid)
    # Closed-form simple regression of y on each k's basis, vectorised over the grid.
    b_mean = basis.mean(axis=1)
    centred = basis - b_mean[:, None]
    sxx = np.einsum("ij,ij->i", centred, centred)
    ok = sxx > 1e-12 * max(1.0, float(np.max(sxx)))
    y_mean = float(y.mean())
    sxy = centred @ (y - y_mean)
    slope = np.where(ok, sxy / np.where(ok, sxx, 1.0), 0.0)
    sse = np.where(ok, np.sum((y - y_mean) ** 2) - slope * sxy, np.inf)
    return sse, y_mean + slope * (at_end - b_mean)


def own_fit(family: str, steps: list[int], values: list[float], upto: int, full: int) -> float | None:
    """``fit_family`` on the points of a curve at steps <= ``upto``, in units of a full run of ``full`` steps."""
    n = next((i for i, s in enumerate(steps) if s > upto), len(steps))
    if n < MIN_POINTS:
        return None
    return fit_family(family, np.asarray(steps[:n], dtype=float) / full, np.asarray(values[:n], dtype=float))


def peers_loo(rows: np.ndarray, finals: np.ndarray, x0: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Least squares of ``finals`` on ``rows``: the prediction at ``x0`` and the leave-one-out residuals."""
    if len(finals) < x0.size + 2:
        return None
    xtx = rows.T @ rows
    if np.linalg.matrix_rank(xtx) < x0.size:
        return None
    inverse = np.linalg.inv(xtx)
    coef = inverse @ rows.T @ finals
    leverage = np.einsum("ij,jk,ik->i", rows, inverse, rows)
    residuals = (finals - rows @ coef) / np.clip(1.0 - leverage, 1e-6, None)
    return float(x0 @ coef), residuals


def interval(prediction: float, residuals: np.ndarray, level: float) -> tuple[float, float, float]:
    """The bias-corrected prediction, its residual SD and half-width of the ``level`` prediction interval."""
    n = len(residuals)
    sd = float(np.std(residuals, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd * math.sqrt(1 + 1 / n)
    return prediction + float(np.mean(residuals)), sd, half
