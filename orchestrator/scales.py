"""A numeric factor's geometry, one rule for every layer: a factor on scale ``log`` is spaced, centred and coded in
log space (1e-4 and 1e-2 have their middle at 1e-3), one on ``linear`` in its own units. The designs centre their
center points with it, the waves map a factor's range to the unit cube with it, the analysis codes levels onto
[-1, +1] with it, the cost model codes its features with it.

Works on numbers and on numpy arrays alike, so the analysis codes a whole column at once. A number goes through
``math`` (the C library's log and exp), as it always has: a center point's value is part of its cell's key, so it
must come out the same to the last bit whatever numpy's vectorised log would give.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def warp(value: Any, scale: str) -> Any:
    """A value in the space its factor is spaced in: its log for scale ``log``."""
    if scale != "log":
        return value
    return math.log(value) if isinstance(value, (int, float)) else np.log(value)


def unwarp(value: Any, scale: str) -> Any:
    if scale != "log":
        return value
    return math.exp(value) if isinstance(value, (int, float)) else np.exp(value)


def to_unit(value: Any, low: float, high: float, scale: str) -> Any:
    """``value`` -> [0, 1] over ``[low, high]`` (beyond it outside), in the factor's scale."""
    start = warp(low, scale)
    return (warp(value, scale) - start) / (warp(high, scale) - start)


def from_unit(u: Any, low: float, high: float, scale: str) -> Any:
    """[0, 1] -> the factor's value over ``[low, high]``, uniformly in its scale."""
    start = warp(low, scale)
    return unwarp(start + u * (warp(high, scale) - start), scale)


def coded(value: Any, low: float, high: float, scale: str) -> Any:
    """``value`` coded onto [-1, +1] over ``[low, high]``: the two-level designs' coding."""
    return 2.0 * to_unit(value, low, high, scale) - 1.0


def midpoint(low: float, high: float, scale: str) -> float:
    """The middle of ``[low, high]`` in the factor's scale: geometric for ``log``, arithmetic for ``linear``. Written
    out rather than ``from_unit(0.5, ...)``, which can differ in the last bit: center points are cell keys."""
    return math.sqrt(low * high) if scale == "log" else (low + high) / 2
