"""Adaptive waves through real Ray on synthetic surfaces with a known optimum and known interactions."""

from __future__ import annotations

import re

import pytest

from orchestrator.driver import run_study
from orchestrator.executor import RayExecutor
from orchestrator.spec import parse_spec
from orchestrator.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executor():
    with RayExecutor(num_cpus=2) as ex:
        yield ex


def spec(study: str, surface: dict, factors: dict, **strategy) -> dict:
    return {"study": study, "experiment": "experiments.synthetic:run",
            "fixed": {"surface": surface, "intercept": 2.25, "noise_sd": 0.02, "steps": 1},
            "factors": factors, "response": {"metric": "loss", "goal": "minimize"},
            "strategy": {"mode": "waves", **strategy}, "resources": {"cpus_per_run": 1}, "seeds": [0]}


def test_waves_find_an_interior_optimum_within_tolerance(sqlite_url, executor):
    # loss = (x - 1.5)^2 + y (+ 0 z), over x in [0, 2], y in [0, 1], z in [0, 1]: optimum 0 at x = 1.5, y = 0.
    study = spec("bowl", {"x*x": 1.0, "x": -3.0, "y": 1.0, "z": 0.0},
                 {"x": {"levels": [0.0, 2.0]}, "y": {"levels": [0.0, 1.0]}, "z": {"levels": [0.0, 1.0]}},
                 runs_per_wave=10, max_waves=5)
    store = Store(sqlite_url)
    run_study(parse_spec(study), store, executor)
    runs = store.runs("bowl")
    waves = store.waves("bowl")
    assert 2 <= len(waves) <= 5
    assert waves[0]["reason"].startswith("first wave over the whole box: 2^3")
    assert "x up" in waves[1]["reason"] and "y down" in waves[1]["reason"]
    assert any("narrowed around its center (curvature)" in w["reason"] for w in waves[2:])
    best = min(runs, key=lambda r: r["metric.loss"])
    # Stated tolerance: within 0.1 of the optimum's loss, x within 0.25 of 1.5.
    assert best["metric.loss"] < 0.1 and abs(best["param.x"] - 1.5) <= 0.25
    # Every run stays in the box the spec gives.
    assert all(0 <= r["param.x"] <= 2 and 0 <= r["param.y"] <= 1 for r in runs)


def test_waves_fold_over_to_de_alias_a_significant_interaction(sqlite_url, executor):
    # Four factors in 8 runs: the 2^(4-1) IV fraction aliases a:b with c:d. The surface has a real a:b.
    study = spec("alias", {"a": 1.0, "a*b": 1.5, "c": 0.0, "d": 0.0},
                 {n: {"levels": [-1, 1]} for n in "abcd"}, runs_per_wave=8, max_waves=2)
    store = Store(sqlite_url)
    run_study(parse_spec(study), store, executor)
    waves = store.waves("alias")
    assert "2^(4-1) resolution IV" in waves[0]["reason"]
    assert waves[1]["reason"].startswith("fold-over to de-alias: a:b is aliased with c:d")
    keys = [r["cell_key"] for r in store.runs("alias")]
    assert len(keys) == 16 == len(set(keys))  # the fold-over ran the other half: the full 2^4


def test_waves_refuse_a_categorical_factor_with_three_levels():
    from orchestrator.errors import SpecError
    from orchestrator.strategies import create_strategy

    bad = spec("c", {}, {"opt": {"levels": ["adam", "sgd", "lion"]}, "x": {"levels": [0, 1]}}, runs_per_wave=8)
    with pytest.raises(SpecError, match="factors.opt.levels: mode waves needs two levels"):
        create_strategy(parse_spec(bad))


def test_a_significant_categorical_is_fixed_at_its_better_level_and_numerics_move():
    from orchestrator.strategies import create_strategy

    strategy = create_strategy(parse_spec(spec("cat", {}, {"opt": {"levels": ["a", "b"]},
                                                            "x": {"levels": [0.0, 1.0]}}, runs_per_wave=8)))
    first = strategy.next_wave(set(), 8)
    assert first.reason == "first wave over the whole box: 2^2 full factorial x 2 seeds over opt, x"
    # A made-up outcome: opt=b is better by 1, larger x is better by 0.5, small noise.
    runs = [{"wave": 1, "cell_key": c.key, "status": "COMPLETE", "param.opt": c.levels["opt"],
             "param.x": c.levels["x"],
             "metric.loss": (1.0 if c.levels["opt"] == "a" else 0.0) - 0.5 * c.levels["x"] + 0.01 * (c.seed % 3)}
            for c in first.cells]
    second = strategy.next_wave({c.key for c in first.cells}, 8, runs)
    assert "opt fixed at its better level b (significant)" in second.reason and "x up" in second.reason
    assert {c.levels["opt"] for c in second.cells} == {"b"}
    assert {c.levels["x"] for c in second.cells} == {0.5, 1.0}  # the upper half of the range


def test_waves_reach_an_interior_optimum_through_a_central_composite_wave(sqlite_url, executor):
    # loss = (x - 1.5)^2 + (y - 0.5)^2 (+ 0 z) over [0, 2] x [0, 2] x [0, 1]: the first wave's main effects halve the
    # windows onto [1, 2] x [0, 1], whose center is the optimum. There curvature without main effects calls for a
    # central composite wave, and its second-order fit puts the optimum at (1.5, 0.5).
    study = spec("ccd", {"x*x": 1.0, "x": -3.0, "y*y": 1.0, "y": -1.0, "z": 0.0},
                 {"x": {"levels": [0.0, 2.0]}, "y": {"levels": [0.0, 2.0]}, "z": {"levels": [0.0, 1.0]}},
                 runs_per_wave=10)
    study["fixed"]["intercept"] = 2.5
    store = Store(sqlite_url)
    outcome = run_study(parse_spec(study), store, executor)
    waves, runs = store.waves("ccd"), store.runs("ccd")
    designs = [w["design"] for w in waves]
    assert "central_composite" in designs
    ccd = designs.index("central_composite") + 1
    assert waves[ccd - 1]["reason"].startswith("curvature (")
    # Axial points on the faces of the window, so inside the spec's box.
    assert all(0 <= r["param.x"] <= 2 and 0 <= r["param.y"] <= 2 and 0 <= r["param.z"] <= 1 for r in runs)
    fitted = waves[ccd]["reason"]
    assert fitted.startswith("response surface from the central composite") and "fitted minimum at x=" in fitted
    at = dict(re.findall(r"(\w)=([-\d.e+]+)", fitted.split("fitted minimum at ")[1].split(" (predicted")[0]))
    # Stated tolerance: the fitted optimum within 0.05 of (1.5, 0.5) in each factor, and the best run found within
    # 0.05 of it too with a loss under 0.05 (noise SD 0.02).
    assert abs(float(at["x"]) - 1.5) <= 0.05 and abs(float(at["y"]) - 0.5) <= 0.05
    best = min((r for r in runs if r["status"] == "COMPLETE"), key=lambda r: r["metric.loss"])
    assert abs(best["param.x"] - 1.5) <= 0.05 and abs(best["param.y"] - 0.5) <= 0.05 and best["metric.loss"] < 0.05
    # The reason to stop is stored with the study.
    assert outcome.stop_reason and store.study_info("ccd")["stop_reason"] == outcome.stop_reason
