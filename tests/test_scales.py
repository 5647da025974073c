"""The one factor-geometry rule (orchestrator/scales.py) that designs, waves, analysis and costs share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator import scales
from orchestrator.analysis import FactorInfo
from orchestrator.analysis.coding import code_numeric
from orchestrator.designs.center_points import center_value
from orchestrator.spec import Factor
from orchestrator.strategies.waves.space import Axis


def test_log_scale_is_spaced_centred_and_coded_in_log_space():
    assert scales.midpoint(1e-4, 1e-2, "log") == math.sqrt(1e-4 * 1e-2)  # bit for bit: center points are cell keys
    assert scales.midpoint(2, 6, "linear") == 4
    assert scales.to_unit(1e-3, 1e-4, 1e-2, "log") == pytest.approx(0.5)
    assert scales.from_unit(0.25, 1e-4, 1e-2, "log") == pytest.approx(10 ** -3.5)
    assert scales.coded(np.array([1e-4, 1e-3, 1e-2]), 1e-4, 1e-2, "log") == pytest.approx([-1, 0, 1])
    assert scales.coded(np.array([2.0, 4.0, 6.0]), 2, 6, "linear") == pytest.approx([-1, 0, 1])


def test_a_number_and_an_array_go_the_same_way():
    values = [1e-4, 3e-4, 7.5e-3, 1e-2]
    one_by_one = [scales.to_unit(v, 1e-4, 1e-2, "log") for v in values]
    assert np.asarray(scales.to_unit(np.array(values), 1e-4, 1e-2, "log")) == pytest.approx(one_by_one, abs=1e-15)
    assert all(isinstance(u, float) for u in one_by_one)  # math's log for numbers, as before the rule moved here


def test_every_user_reads_the_same_geometry():
    factor = Factor(levels=[1e-4, 1e-2], scale="log")
    axis = Axis("lr", "numeric", 1e-4, 1e-2, "log")
    middle = center_value("lr", factor)
    assert middle == axis.center(1e-4, 1e-2) == scales.midpoint(1e-4, 1e-2, "log")
    assert axis.to_unit(middle) == pytest.approx(0.5)
    assert axis.from_unit(0.5) == pytest.approx(middle, rel=1e-6)  # 6 significant digits
    assert code_numeric(np.array([1e-4, middle, 1e-2]), FactorInfo((1e-4, 1e-2), "log")) == pytest.approx([-1, 0, 1])
