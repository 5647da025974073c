"""experiments/curves.py: the learning-curve workload of bench/gpu_hours.py, as pure functions."""

from __future__ import annotations

import json

import pytest

from experiments import curves
from experiments.surfaces import get_surface

SURFACES = ("llm_finetune", "hartmann6", "rosenbrock")


@pytest.mark.parametrize("name", SURFACES)
def test_last_step_is_the_surface_value_plus_its_noise(name):
    surface = get_surface(name)
    params = {**surface.argopt, "surface": name, "steps": 60, "step_s": 0.0, "seed": 3}  # fixed params are ignored
    factors = dict(surface.argopt)
    assert curves.value_at(name, params, 60, 60, seed=3) == surface.sample(factors, 3)
    assert curves.final_value(name, params, 3) == surface.sample(factors, 3)
    assert curves.value_at(name, params, 60, 60, seed=3) != surface.value(factors)  # the noise is there


@pytest.mark.parametrize("name", SURFACES)
def test_curves_start_on_the_bad_side_and_approach_the_final_value(name):
    surface = get_surface(name)
    values = curves.curve(name, surface.argopt, 60, 0)
    assert len(values) == 60
    assert values[0] > values[14] > values[29] > values[-1]  # minimized surfaces: the loss comes down
    assert curves.start_value(name) > values[0]  # every curve starts from the same value, worse than the box's worst
    assert curves.start_value(name) > surface.optimum + curves.spread(name)


def test_a_late_bloomer_crosses_a_fast_worse_configuration():
    surface = get_surface("llm_finetune")
    slow = {**surface.argopt, "learning_rate": 1e-4}  # a low learning rate: slow start, good final loss
    fast = {**surface.argopt, "learning_rate": 3e-3}  # too high: fast start, worse final loss
    assert curves.speed("llm_finetune", slow) < curves.speed("llm_finetune", fast)
    a, b = curves.curve("llm_finetune", slow, 60, 0), curves.curve("llm_finetune", fast, 60, 0)
    assert a[-1] < b[-1] - 0.2  # better at the end, by far more than the noise (SD 0.02)
    assert a[14] > b[14] + 0.2  # worse at the 25% hold-off


def test_deterministic_by_seed_and_the_same_for_a_level_written_as_int():
    surface = get_surface("hartmann6")
    params = dict(surface.argopt)
    assert curves.curve("hartmann6", params, 30, 5) == curves.curve("hartmann6", dict(params), 30, 5)
    assert curves.curve("hartmann6", params, 30, 5) != curves.curve("hartmann6", params, 30, 6)
    llm = {**get_surface("llm_finetune").argopt, "batch_size": 32}
    assert curves.curve("llm_finetune", llm, 20, 0) == curves.curve("llm_finetune", {**llm, "batch_size": 32.0}, 20, 0)
    # the speed is the configuration's, not the seed's
    assert curves.speed("hartmann6", params) == curves.speed("hartmann6", {**params, "seed": 9})


def test_value_at_refuses_a_step_outside_the_run():
    with pytest.raises(ValueError, match="step must be in 1..10"):
        curves.value_at("bowl", {"x": 1.0, "y": 0.0, "z": 0.0}, 11, 10, 0)


def test_run_reports_every_step_and_logs_it(tmp_path):
    surface = get_surface("bowl")
    seen: list[tuple[int, dict]] = []

    class Ctx:
        seed = 0

        def report(self, step, **metrics):
            seen.append((step, metrics))

        cell_key = "k1"

    log = tmp_path / "steps.jsonl"
    params = {"x": 1.0, "y": 0.5, "z": 0.0, "surface": "bowl", "steps": 5, "step_s": 0.0, "seed": 2,
              "step_log": str(log)}
    out = curves.run(params, Ctx())
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    assert all(set(m) == {"loss"} for _, m in seen)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["key"], r["step"]) for r in lines] == [("k1", s) for s in range(6)]
    assert lines[0]["params"] == {"x": 1.0, "y": 0.5, "z": 0.0} and lines[0]["seed"] == 2
    assert out == {"loss": surface.sample({"x": 1.0, "y": 0.5, "z": 0.0}, 2), "steps": 5.0}
    assert seen[-1][1]["loss"] == out["loss"]


def test_a_report_that_raises_stops_the_run_after_the_logged_step(tmp_path):
    log = tmp_path / "steps.jsonl"

    def report(step, value):
        if step == 3:
            raise RuntimeError("pruned")

    with pytest.raises(RuntimeError, match="pruned"):
        curves.train("bowl", {"x": 1.0, "y": 0.5, "z": 0.0}, 10, 0.0, 0, report, step_log=str(log), key="a")
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [0, 1, 2, 3]
