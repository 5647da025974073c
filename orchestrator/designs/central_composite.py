"""Face-centred central composite designs (CCF, alpha = 1): the 2^k corners, 2k axial points, center runs.

Coded units: -1 is a factor's lowest level, +1 its highest, 0 the center (geometric for scale log, an integer for
integer factors: :func:`orchestrator.designs.center_points.center_value`). With alpha = 1 the axial points sit on
the faces of the cube, so every run stays inside the levels the spec allows (a rotatable CCD's axial points,
alpha = (2^k)^(1/4), would leave it). Every factor takes three levels, which is what a second-order model needs:
with the full 2^k corners the linear, two-factor interaction and pure quadratic terms are all estimable
(Montgomery, *Design and Analysis of Experiments*, ch. 11). A strategy that has already run the corners runs only
:func:`axial_points` and more centers next to them.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from orchestrator.designs.base import Design, DesignError
from orchestrator.designs.center_points import center_value
from orchestrator.spec import Factor


def axial_points(k: int) -> np.ndarray:
    """The 2k face-centred axial (star) points in coded units: one factor at -1 or +1, the others at 0, in the
    order (-1 on the first factor, +1 on the first, -1 on the second, ...)."""
    if k < 1:
        raise DesignError(f"axial points need at least one factor; got k={k}")
    rows = np.zeros((2 * k, k), dtype=int)
    for i in range(k):
        rows[2 * i, i], rows[2 * i + 1, i] = -1, 1
    return rows


def face_centred_ccd(k: int, centers: int = 1) -> np.ndarray:
    """The face-centred CCD in coded units: 2^k corners (full factorial), then the 2k axial points, then
    ``centers`` center runs. Built by pyDOE3's ``ccdesign(face="ccf")``."""
    if not 2 <= k <= 10:
        raise DesignError(f"a central composite design here takes 2 to 10 factors (2^k corners); got k={k}")
    if centers < 0:
        raise DesignError(f"centers must be >= 0; got {centers}")
    import pyDOE3  # here, not at the top: it loads scipy.stats (0.5 s)

    coded = pyDOE3.ccdesign(k, center=(0, centers), face="ccf")
    return np.rint(coded).astype(int)


def decode_three_level(coded: np.ndarray, factors: dict[str, Factor]) -> list[dict[str, Any]]:
    """Coded runs (-1 -> the lowest level, 0 -> the center, +1 -> the highest) -> points, for numeric factors."""
    names = list(factors)
    categorical = [n for n in names if factors[n].kind != "numeric"]
    if categorical:
        raise DesignError(f"a three-level design needs numeric factors; {', '.join(categorical)} are categorical")
    values = {n: (min(factors[n].levels), center_value(n, factors[n]), max(factors[n].levels)) for n in names}
    return [{n: values[n][int(x) + 1] for n, x in zip(names, row)} for row in coded]


class ThreeLevelDesign(Design):
    """A design over numeric factors at three levels each (lowest, center, highest), from its coded runs, with
    ``centers`` center runs (repeated points: the strategy's seed allocator, ``cells.Seeds``, seeds each)."""

    default_centers = 1

    def __init__(self, *, centers: int | None = None):
        centers = self.default_centers if centers is None else centers
        if centers < 0:
            raise DesignError(f"centers must be >= 0; got {centers}")
        self.centers = centers

    @abstractmethod
    def coded(self, k: int) -> np.ndarray:
        """The coded runs (-1, 0, +1) for ``k`` factors."""

    def points(self, factors: dict[str, Factor]) -> list[dict[str, Any]]:
        return decode_three_level(self.coded(len(factors)), factors)


class CentralComposite(ThreeLevelDesign):
    """A face-centred central composite design over numeric factors: corners at each factor's lowest and highest
    level, axial points on the faces, ``centers`` center runs (2 by default)."""

    name = "central_composite"
    default_centers = 2

    def coded(self, k: int) -> np.ndarray:
        return face_centred_ccd(k, self.centers)
