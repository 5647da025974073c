"""Final values from the start of learning curves (``orchestrator/execution/extrapolate.py``): each family recovers
its own curves, the finished runs' record picks the predictor, a systematic miss is corrected, and the interval is
calibrated by what the predictor got wrong on finished runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.execution import extrapolate
from orchestrator.execution.pruning import Pruner

FULL = 40


def exp_curve(final: float, gap: float, k: float, steps: int = FULL) -> list[float]:
    return [final + gap * math.exp(-k * s / steps) for s in range(1, steps + 1)]


def test_each_family_recovers_the_end_of_its_own_curve_from_its_first_third():
    u = np.arange(1, 14) / FULL
    assert extrapolate.fit_family("exp", u, 1.5 + 2.0 * np.exp(-4.0 * u)) == pytest.approx(1.5 + 2.0 * math.exp(-4),
                                                                                          abs=0.02)
    assert extrapolate.fit_family("pow", u, 0.8 + 0.3 * u ** -0.7) == pytest.approx(1.1, abs=0.02)
    assert extrapolate.fit_family("exp", u[:3], np.ones(3)) is None  # fewer than MIN_POINTS points


def test_the_peers_leave_one_out_residuals_are_those_of_refits_without_each_point():
    rng = np.random.default_rng(0)
    rows = np.column_stack([np.ones(12), rng.normal(size=12)])
    finals = 1.0 + 2.0 * rows[:, 1] + rng.normal(scale=0.1, size=12)
    fit, residuals = extrapolate.peers_loo(rows, finals, np.array([1.0, 0.5]))
    for i in range(12):
        keep = np.arange(12) != i
        coef, *_ = np.linalg.lstsq(rows[keep], finals[keep], rcond=None)
        assert residuals[i] == pytest.approx(finals[i] - rows[i] @ coef)
    assert fit == pytest.approx(2.0, abs=0.15)


def _pruner_with(finished: dict[str, list[float]]) -> Pruner:
    pruner = Pruner("bound", "minimize", ("share", 0.5))
    for key, values in finished.items():
        for step, value in enumerate(values, start=1):
            pruner.add(key, key, step, value)
        pruner.finished(key, values[-1])
    return pruner


def test_exponential_curves_are_predicted_by_their_own_fit_with_a_tight_calibrated_interval():
    rng = np.random.default_rng(1)
    finished = {f"f{i}": exp_curve(1.0 + 0.1 * i, 2.0, float(rng.uniform(2, 6))) for i in range(8)}
    pruner = _pruner_with(finished)
    running = exp_curve(0.7, 2.0, 2.2)[:12]  # better than every finished run, and slow: the peers' tail
    for step, value in enumerate(running, start=1):
        pruner.add("new", "new", step, value)
    p = pruner.predict("new", 12)
    assert p.method in ("exp", "pow") and p.calibrated_on == 8
    assert p.value == pytest.approx(exp_curve(0.7, 2.0, 2.2)[-1], abs=0.03)
    assert p.interval[0] < p.value < p.interval[1] and p.interval[1] - p.interval[0] < 0.2


def test_curves_no_family_describes_are_left_to_the_peers_and_a_late_drop_is_corrected():
    # Flat until the last step, then a drop to half: no curve fit can see it coming, the peers' regression can.
    flat = {f"f{i}": [2.0 + 0.2 * i] * (FULL - 1) + [1.0 + 0.1 * i] for i in range(8)}
    pruner = _pruner_with(flat)
    for step in range(1, 21):
        pruner.add("new", "new", step, 3.0)
    p = pruner.predict("new", 20)
    assert p.method == "peers" and p.value == pytest.approx(1.5, abs=1e-6)
    # Exponential curves that all drop by 0.5 more at the very end: the own fits miss by 0.5 each time, and the
    # mean residual of the finished runs puts the prediction back.
    rng = np.random.default_rng(2)
    dropped = {}
    for i in range(8):
        c = exp_curve(1.5 + 0.1 * i, 2.0, float(rng.uniform(3, 6)))
        c[-1] -= 0.5
        dropped[f"d{i}"] = c
    pruner = _pruner_with(dropped)
    truth = exp_curve(1.2, 2.0, 4.0)
    truth[-1] -= 0.5
    for step, value in enumerate(truth[:20], start=1):
        pruner.add("new", "new", step, value)
    p = pruner.predict("new", 20)
    assert p.value == pytest.approx(truth[-1], abs=0.05)


def test_no_prediction_without_enough_finished_runs_at_the_step():
    pruner = _pruner_with({f"f{i}": exp_curve(1.0, 2.0, 3.0) for i in range(4)})
    for step, value in enumerate(exp_curve(1.0, 2.0, 3.0)[:20], start=1):
        pruner.add("new", "new", step, value)
    assert pruner.predict("new", 20) is None  # 4 finished runs: fewer than MIN_CALIBRATION
