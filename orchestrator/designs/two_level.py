"""What every two-level design shares: coded runs -> points, crossing with the other factors, the alias table."""

from __future__ import annotations

import itertools
from abc import abstractmethod
from typing import Any

import numpy as np

from orchestrator.designs.base import Design, DesignError
from orchestrator.designs.center_points import center_points
from orchestrator.designs.regular import RegularDesign
from orchestrator.spec import Factor


def two_level(factors: dict[str, Factor]) -> list[str]:
    """The factors the coded design covers, in spec order: A is the first of them, B the second, ..."""
    return [name for name, f in factors.items() if len(f.levels) == 2]


def crossed(factors: dict[str, Factor]) -> list[str]:
    return [name for name, f in factors.items() if len(f.levels) != 2]


def decode(coded: np.ndarray, factors: dict[str, Factor]) -> list[dict[str, Any]]:
    """Coded runs (-1 -> ``levels[0]``, +1 -> ``levels[1]``) -> points, crossed with every combination of the
    levels of the factors that do not have two levels."""
    names, others = two_level(factors), crossed(factors)
    runs = [{n: factors[n].levels[int(x > 0)] for n, x in zip(names, row)} for row in coded]
    points = []
    for combo in itertools.product(*(factors[n].levels for n in others)):
        for run in runs:
            levels = {**run, **dict(zip(others, combo))}
            points.append({name: levels[name] for name in factors})
    return points


class TwoLevelDesign(Design):
    """A regular two-level design over the two-level factors, crossed in full with the others.

    Crossing keeps the two-level alias structure within every combination of the other factors' levels (each gets
    the whole design), so the alias table covers the two-level factors only; the crossed ones are clear.
    ``center_points`` center runs (center_points.py) follow the design.
    """

    center_points: int = 0

    @abstractmethod
    def fraction(self, factors: dict[str, Factor]) -> RegularDesign:
        """The coded design over :func:`two_level` factors."""

    def alias_table(self, factors: dict[str, Factor], max_order: int = 2) -> dict[str, list[str]]:
        """:meth:`RegularDesign.alias_table` with effects named by factor (``lr``, ``lr:batch_size``)."""
        return self.fraction(factors).alias_table(two_level(factors), max_order)

    def points(self, factors: dict[str, Factor]) -> list[dict[str, Any]]:
        if not two_level(factors):
            raise DesignError(f"{self.name} needs at least one factor with exactly two levels; use full_factorial")
        return decode(self.fraction(factors).coded_matrix(), factors) + center_points(factors, self.center_points)
