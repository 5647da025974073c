"""Adaptive waves through real Ray on synthetic surfaces with a known optimum and known interactions."""

from __future__ import annotations

import pytest

from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
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
    # loss = (x - 1.3)^2 + (y - 0.35)^2 (+ 0 z), over x in [0, 2], y in [0, 1], z in [0, 1]: optimum 0 at (1.3, 0.35),
    # strictly inside the box and on none of the screen's levels (0.5, 1, 1.5 / 0.25, 0.5, 0.75).
    study = spec("bowl", {"x*x": 1.0, "x": -2.6, "y*y": 1.0, "y": -0.7, "z": 0.0},
                 {"x": {"levels": [0.0, 2.0]}, "y": {"levels": [0.0, 1.0]}, "z": {"levels": [0.0, 1.0]}},
                 runs_per_wave=10, max_waves=4)
    study["fixed"]["intercept"] = 1.3 ** 2 + 0.35 ** 2
    store = Store(sqlite_url)
    outcome = run_study(parse_spec(study), store, executor)
    runs, waves = store.runs("bowl"), store.waves("bowl")
    assert waves[0]["reason"].startswith("screen: 2^3 full factorial + 2 center runs over x [0.5, 1.5]")
    assert [w["design"] for w in waves[1:]] == ["model"] * (len(waves) - 1) and len(waves) >= 3
    best = min(runs, key=lambda r: r["metric.loss"])
    # Stated tolerance: the best run within 0.15 of the optimum in x and y, its loss under 0.03 (noise SD 0.02;
    # the screen's best point, (1.5, 0.5), has loss 0.065).
    assert abs(best["param.x"] - 1.3) <= 0.15 and abs(best["param.y"] - 0.35) <= 0.15 and best["metric.loss"] < 0.03
    # Every run stays in the box the spec gives; the reason to stop is stored with the study.
    assert all(0 <= r["param.x"] <= 2 and 0 <= r["param.y"] <= 1 and 0 <= r["param.z"] <= 1 for r in runs)
    assert outcome.stop_reason and store.study_info("bowl")["stop_reason"] == outcome.stop_reason


def test_waves_fold_over_to_de_alias_a_significant_interaction(sqlite_url, executor):
    # Four factors in 8 runs: the 2^(4-1) IV fraction aliases a:b with c:d. The surface has a real a:b. Four waves
    # after the screen: the budget leaves the model three after the de-alias wave.
    study = spec("alias", {"a": 1.0, "a*b": 1.5, "c": 0.0, "d": 0.0},
                 {n: {"levels": [-1, 1]} for n in "abcd"}, runs_per_wave=8, max_waves=5)
    store = Store(sqlite_url)
    run_study(parse_spec(study), store, executor)
    waves = store.waves("alias")
    assert "2^(4-1) resolution IV" in waves[0]["reason"]
    assert waves[1]["design"] == "fold_over"
    assert waves[1]["reason"] == "de-alias: fold-over of the screening fraction on a (a:b is aliased with c:d)"
    # Backfill replicates (added when devices idle at a wave's tail, so only sometimes) are not part of the design.
    runs = [r for r in store.runs("alias") if r["wave"] <= 2 and not r["backfill"]]
    # The fold-over ran the other half: the full 2^4. (Integer levels -1 and 1 have no integers inside to screen
    # at, so the screening region is the whole range.)
    assert len({tuple(r[f"param.{n}"] for n in "abcd") for r in runs}) == 16 == len(runs)
    assert {r["param.a"] for r in runs} == {-1, 1}


def test_waves_refuse_a_categorical_factor_with_three_levels():
    from orchestrator.errors import SpecError
    from orchestrator.strategies import create_strategy

    bad = spec("c", {}, {"opt": {"levels": ["adam", "sgd", "lion"]}, "x": {"levels": [0, 1]}}, runs_per_wave=8)
    with pytest.raises(SpecError, match="factors.opt.levels: mode waves needs two levels"):
        create_strategy(parse_spec(bad))


def test_a_categorical_is_fixed_at_its_better_level_while_the_model_searches_the_numerics():
    from orchestrator.strategies import create_strategy

    strategy = create_strategy(parse_spec(spec("cat", {}, {"opt": {"levels": ["a", "b"]},
                                                            "x": {"levels": [0.0, 1.0]}}, runs_per_wave=8)))
    first = strategy.next_wave(set(), 8)
    assert first.reason == "screen: 2^2 full factorial x 2 seeds over opt [a, b], x [0.25, 0.75]"
    # A made-up outcome: opt=b is better by 1, larger x is better by 0.5, small noise.
    runs = [{"wave": 1, "design": first.design, "cell_key": c.key, "status": "COMPLETE",
             "param.opt": c.levels["opt"], "param.x": c.levels["x"],
             "metric.loss": (1.0 if c.levels["opt"] == "a" else 0.0) - 0.5 * c.levels["x"] + 0.01 * (c.seed % 3)}
            for c in first.cells]
    second = strategy.next_wave({c.key for c in first.cells}, 8, runs)
    assert second.design == "model" and second.reason.startswith("refine: opt at its better level b")
    assert "proposed jointly over x by a Gaussian process" in second.reason
    assert {c.levels["opt"] for c in second.cells} == {"b"}
    assert all(0.0 <= c.levels["x"] <= 1.0 for c in second.cells)


@pytest.mark.parametrize("prior_mean", ["fitted", "worst", "q25"])
def test_the_model_proposes_a_batch_in_the_box_under_each_prior_mean(prior_mean):
    """refine.PRIOR_MEAN's measured alternatives (docs/benchmarks.md) all give a whole batch inside the unit cube."""
    import numpy as np

    from orchestrator.strategies.waves.refine import propose

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (12, 2))
    y = (x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.6) ** 2 + rng.normal(0, 0.01, 12)
    proposal = propose(x, y, maximize=False, q=4, seed=0, prior_mean=prior_mean)
    assert proposal.points.shape == (4, 2)
    assert ((proposal.points >= 0) & (proposal.points <= 1)).all()
    assert len({tuple(np.round(p, 6)) for p in proposal.points}) == 4  # four distinct points, not one repeated
