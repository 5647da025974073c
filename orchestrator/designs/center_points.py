"""Center points: repeated runs in the middle of the numeric factors, to test for curvature and estimate noise."""

from __future__ import annotations

import itertools
from typing import Any

from orchestrator.designs.base import DesignError
from orchestrator.scales import midpoint
from orchestrator.spec import Factor


def center_value(name: str, factor: Factor) -> Any:
    """The midpoint of a numeric factor's lowest and highest level, in the space it is coded in: arithmetic for
    scale linear, geometric for scale log (1e-4 and 1e-2 -> 1e-3). A factor whose levels are all integers (layers,
    batch size) is centered on the nearest integer, since a run cannot take 2.5 layers."""
    low, high = min(factor.levels), max(factor.levels)
    mid = midpoint(low, high, factor.scale)
    if not all(isinstance(v, int) for v in factor.levels):
        return mid
    if not low < round(mid) < high:
        raise DesignError(f"factors.{name}: no integer lies between {low} and {high} to center on; "
                          "drop the center points or widen the levels")
    return round(mid)


def center_points(factors: dict[str, Factor], n: int) -> list[dict[str, Any]]:
    """``n`` center runs for every combination of the categorical factors' levels.

    A categorical factor has no middle, so the center runs are repeated at each of its levels (Montgomery's advice
    for qualitative factors in a 2^k design with center points): with an optimizer in {adam, sgd} and n = 3 that
    is 6 runs. The points repeat on purpose; ``cells.Seeds`` gives each a seed of its own.
    """
    if n == 0:
        return []
    numeric = {name: center_value(name, f) for name, f in factors.items() if f.kind == "numeric"}
    if not numeric:
        raise DesignError("center points need at least one numeric factor; all factors are categorical")
    categorical = [name for name, f in factors.items() if f.kind == "categorical"]
    points = []
    for combo in itertools.product(*(factors[name].levels for name in categorical)):
        levels = {**numeric, **dict(zip(categorical, combo))}
        points += [{name: levels[name] for name in factors} for _ in range(n)]
    return points
