"""Three-level designs for response surfaces (face-centred CCD, definitive screening) checked against theory."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from orchestrator.designs import (
    CentralComposite,
    DefinitiveScreening,
    DesignError,
    axial_points,
    conference_matrix,
    definitive_screening,
    face_centred_ccd,
)
from orchestrator.designs.center_points import center_value
from orchestrator.designs.definitive_screening import ORDERS, order_for
from tests.test_designs_conformance import make_factors, two_level_factors

# --- three-level designs for response surfaces: face-centred CCD, definitive screening ----------------------------
#
# Checked on the coded runs (-1 lowest level, 0 center, +1 highest) against what theory says of each design. Model
# columns: linear x_i, pure quadratic x_i^2 centred over the runs, two-factor x_i x_j.

NUMERIC = [{"levels": [0.1, 0.5]}, {"levels": [1e-4, 1e-2], "scale": "log"}, {"levels": [16, 64]}]


def numeric_factors(k: int):
    return make_factors({f"x{i}": NUMERIC[i % len(NUMERIC)] for i in range(k)})


def recode(points, factors) -> np.ndarray:
    """Points -> coded runs, by level: lowest -1, center 0, highest +1 (anything else fails)."""
    def code(name, value):
        f = factors[name]
        return {min(f.levels): -1, center_value(name, f): 0, max(f.levels): 1}[value]
    return np.array([[code(n, p[n]) for n in factors] for p in points])


def model_columns(x: np.ndarray):
    k = x.shape[1]
    pairs = list(itertools.combinations(range(k), 2))
    linear = x.astype(float)
    quadratic = x.astype(float) ** 2
    quadratic -= quadratic.mean(axis=0)
    two_way = np.column_stack([x[:, i] * x[:, j] for i, j in pairs]).astype(float) if pairs else np.zeros((len(x), 0))
    return linear, quadratic, two_way


CCD_CASES = [(k, c) for k in (2, 3, 4, 5, 6) for c in (1, 3)]


@pytest.mark.parametrize(("k", "centers"), CCD_CASES, ids=[f"ccd k={k} centers={c}" for k, c in CCD_CASES])
class TestCentralComposite:
    def test_pydoe3_gives_the_textbook_face_centred_ccd(self, k, centers):
        """Corners (the full 2^k), then the 2k axial points on the faces (alpha = 1), then the center runs."""
        x = face_centred_ccd(k, centers)
        assert x.shape == (2 ** k + 2 * k + centers, k)
        corners, axial, middle = x[:2 ** k], x[2 ** k:2 ** k + 2 * k], x[2 ** k + 2 * k:]
        assert {tuple(r) for r in corners} == set(itertools.product((-1, 1), repeat=k))
        assert (axial == axial_points(k)).all()
        assert all(np.count_nonzero(r) == 1 and abs(r).sum() == 1 for r in axial)
        assert (middle == 0).all()

    def test_points_take_three_levels_inside_the_spec(self, k, centers):
        factors = numeric_factors(k)
        points = CentralComposite(centers=centers).points(factors)
        assert (recode(points, factors) == face_centred_ccd(k, centers)).all()
        for name, f in factors.items():
            assert all(min(f.levels) <= p[name] <= max(f.levels) for p in points)

    def test_balance_and_orthogonality(self, k, centers):
        x = face_centred_ccd(k, centers)
        linear, quadratic, two_way = model_columns(x)
        for column in x.T:  # symmetric: low and high equally often; the center 2(k - 1) + centers times
            counts = Counter(column)
            assert counts[-1] == counts[1] == 2 ** (k - 1) + 1 and counts[0] == 2 * (k - 1) + centers
        # Linear columns orthogonal to each other, to the two-factor and to the quadratic columns; two-factor
        # columns orthogonal to each other and to the quadratics. Quadratics are not orthogonal to each other (a
        # face-centred CCD is not an orthogonal design for them), but the second-order model is estimable.
        assert np.allclose(linear.T @ linear, np.diag(np.diag(linear.T @ linear)))
        assert np.allclose(linear.T @ two_way, 0) and np.allclose(linear.T @ quadratic, 0)
        assert np.allclose(two_way.T @ two_way, 2 ** k * np.eye(two_way.shape[1]))
        assert np.allclose(two_way.T @ quadratic, 0)
        full = np.column_stack([np.ones(len(x)), linear, quadratic, two_way])
        assert np.linalg.matrix_rank(full) == full.shape[1]


DSD_CASES = [*range(3, 15), 17, 20, 24]


@pytest.mark.parametrize("m", DSD_CASES, ids=[f"dsd m={m}" for m in DSD_CASES])
class TestDefinitiveScreening:
    def test_conference_matrix(self, m):
        n = order_for(m)
        c = conference_matrix(n)
        assert (np.diag(c) == 0).all() and (np.abs(c) + np.eye(n) == 1).all()
        assert (c.T @ c == (n - 1) * np.eye(n)).all()
        assert (c == c.T).all() if n % 4 == 2 else (c == -c.T).all()

    def test_runs_are_the_fold_over_of_the_conference_matrix_plus_a_center(self, m):
        n = order_for(m)
        x = definitive_screening(m)
        assert x.shape == (2 * n + 1, m) and n == min(o for o in ORDERS if o >= m)
        assert (x[:n] == -x[n:2 * n]).all() and (x[-1] == 0).all()
        factors = numeric_factors(m)
        assert (recode(DefinitiveScreening().points(factors), factors) == x).all()

    def test_balance_and_orthogonality(self, m):
        x = definitive_screening(m)
        linear, quadratic, two_way = model_columns(x)
        for column in x.T:  # three levels; -1 and +1 equally often
            counts = Counter(column)
            assert counts[-1] == counts[1] and counts[0] == 3
        # Main effects orthogonal to each other, to every quadratic and to every two-factor interaction.
        assert np.allclose(linear.T @ linear, 2 * (order_for(m) - 1) * np.eye(m))
        assert np.allclose(linear.T @ quadratic, 0) and np.allclose(linear.T @ two_way, 0)
        # No quadratic is fully aliased with another, no two-factor interaction with another.
        for block in (quadratic, two_way):
            if block.shape[1] > 1:
                corr = np.corrcoef(block.T)
                np.fill_diagonal(corr, 0)
                assert np.abs(corr).max() < 1 - 1e-9


def test_three_level_designs_refuse_what_they_cannot_build():
    with pytest.raises(DesignError, match="needs numeric factors; x3 are categorical"):
        CentralComposite().points(two_level_factors(4))
    with pytest.raises(DesignError, match="3 to 24 factors; got m=25"):
        definitive_screening(25)
    with pytest.raises(DesignError, match="orders 4, 6, 8, 10, 12, 14, 18, 20, 24; got 16"):
        conference_matrix(16)
    with pytest.raises(DesignError, match="2 to 10 factors"):
        face_centred_ccd(1)
