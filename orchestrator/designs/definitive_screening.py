"""Definitive screening designs (Jones and Nachtsheim 2011): 2n + 1 three-level runs for up to n numeric factors.

Construction (Xiao, Lin and Bai 2012): a conference matrix C of even order n (zero diagonal, +-1 elsewhere,
C'C = (n - 1) I), its fold-over -C, and one center run; for m < n factors the first m columns. Every main effect
is then orthogonal to every other main effect, to every pure quadratic and to every two-factor interaction
(each run has its mirror image, and quadratic and two-factor columns are even functions); no quadratic is
fully aliased with a main effect, and no two-factor interaction with another. With 6 or more factors, any 3 of
them support the full second-order model. The runs take three levels, so a strategy can both screen and see
curvature in one wave when a central composite design would cost too many runs.

Conference matrices come from Paley's construction on the finite field GF(q), n = q + 1: q prime, or q = 9. That
gives n = 4, 6, 8, 10, 12, 14, 18, 20, 24; m factors use the smallest of those orders that holds them (dropping
columns keeps every property above).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from orchestrator.designs.base import DesignError
from orchestrator.designs.central_composite import ThreeLevelDesign

ORDERS = (4, 6, 8, 10, 12, 14, 18, 20, 24)  # conference matrices this module builds
MAX_FACTORS = ORDERS[-1]


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q ** 0.5) + 1))


def _field(q: int) -> tuple[list[Any], Any, set[Any]]:
    """GF(q) for q prime or q = 9: its elements, subtraction, and the nonzero squares."""
    if _is_prime(q):
        def sub(a: int, b: int) -> int:
            return (a - b) % q

        return list(range(q)), sub, {(a * a) % q for a in range(1, q)}
    if q == 9:  # GF(3)[i] / (i^2 + 1): a + b i, since -1 is not a square mod 3
        def sub9(x: tuple[int, int], y: tuple[int, int]) -> tuple[int, int]:
            return (x[0] - y[0]) % 3, (x[1] - y[1]) % 3

        elements = [(a, b) for a in range(3) for b in range(3)]
        squares = {((a * a - b * b) % 3, (2 * a * b) % 3) for a, b in elements if (a, b) != (0, 0)}
        return elements, sub9, squares
    raise DesignError(f"no Paley construction here for GF({q})")


def conference_matrix(n: int) -> np.ndarray:
    """A conference matrix of order n (Paley): symmetric for n = 2 mod 4, antisymmetric for n = 0 mod 4."""
    if n not in ORDERS:
        raise DesignError(f"conference matrices are built here for orders {', '.join(map(str, ORDERS))}; got {n}")
    q = n - 1
    elements, sub, squares = _field(q)
    zero = elements[0]

    def chi(x: Any) -> int:
        return 0 if x == zero else 1 if x in squares else -1

    sign = 1 if q % 4 == 1 else -1  # q = 1 mod 4: chi(-1) = 1, Q symmetric; q = 3 mod 4: Q antisymmetric
    c = np.zeros((n, n), dtype=int)
    c[0, 1:] = 1
    c[1:, 0] = sign
    for (i, a), (j, b) in itertools.product(enumerate(elements), repeat=2):
        c[i + 1, j + 1] = chi(sub(a, b))
    return c


def order_for(m: int) -> int:
    """The conference matrix order a definitive screening design of m factors uses: the smallest even n >= m
    that this module builds (m + 1 for odd m, as Jones and Nachtsheim do, where it exists)."""
    if not 3 <= m <= MAX_FACTORS:
        raise DesignError(f"definitive screening designs are built here for 3 to {MAX_FACTORS} factors; got m={m}")
    return next(n for n in ORDERS if n >= m)


def definitive_screening(m: int, centers: int = 1) -> np.ndarray:
    """The design in coded units: C, then -C (the first m columns of a conference matrix of order
    :func:`order_for` (m)), then ``centers`` center runs (Jones and Nachtsheim use one)."""
    if centers < 0:
        raise DesignError(f"centers must be >= 0; got {centers}")
    c = conference_matrix(order_for(m))[:, :m]
    return np.vstack([c, -c, np.zeros((centers, m), dtype=int)])


def runs_of(m: int, centers: int = 1) -> int:
    return 2 * order_for(m) + centers


class DefinitiveScreening(ThreeLevelDesign):
    """A definitive screening design over numeric factors: three levels each (lowest, center, highest)."""

    name = "definitive_screening"

    def coded(self, m: int) -> np.ndarray:
        return definitive_screening(m, self.centers)
