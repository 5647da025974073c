"""Greedy one-at-a-time mode through real Ray: the path it takes, when it stops, and what it says it cannot see."""

from __future__ import annotations

import pytest

from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.strategies import blind_spots
from tests.conftest import write_spec
from tests.test_cli import wavesweep

pytestmark = pytest.mark.slow

# loss = 1 + a + (b - 1)^2 - 1 + 0 * c: best at a = 0, b = 1, whatever c.
SPEC = {
    "study": "climb", "experiment": "experiments.synthetic:run",
    "fixed": {"surface": {"a": 1.0, "b*b": 1.0, "b": -2.0}, "intercept": 1.0, "noise_sd": 0.01, "steps": 1},
    "factors": {"a": {"levels": [0, 1]}, "b": {"levels": [0, 1, 2]}, "c": {"levels": ["x", "y"]}},
    "response": {"metric": "loss", "goal": "minimize"},
    "strategy": {"mode": "greedy"}, "resources": {"cpus_per_run": 1}, "seeds": [0],
}


def test_greedy_climbs_stops_after_a_quiet_cycle_and_names_its_blind_spots(sqlite_url):
    store = Store(sqlite_url)
    with RayExecutor(num_cpus=1) as executor:
        outcome = run_study(parse_spec(SPEC), store, executor)
    assert outcome.mode == "greedy"
    waves = store.waves("climb")
    reasons = [w["reason"] for w in waves]
    assert reasons[0] == "start point, replicated to measure the noise"
    # The next b step would only repeat recorded runs (b = 0 and 2 at a = 0, c = x): the climb ends there.
    assert [r.split(" around")[0] for r in reasons[1:]] == ["vary a", "vary b", "vary c", "vary a"]
    assert "b=1" in reasons[4]  # the b step was kept: later waves start from b = 1
    runs = store.runs("climb")
    best = min(runs, key=lambda r: r["metric.loss"])
    assert (best["param.a"], best["param.b"]) == (0, 1)

    blind, proposal = blind_spots(parse_spec(SPEC), runs)
    assert blind == [("a", "c"), ("b", "c")]  # a:b happens to form a 2 x 2 square on this path
    assert sorted((c.levels["a"], c.levels["b"], c.levels["c"]) for c in proposal) == [(0, 0, "y"), (1, 1, "y")]


def test_auto_picks_greedy_on_one_slot(sqlite_url):
    spec = parse_spec({**SPEC, "study": "auto1", "strategy": {"mode": "auto", "max_waves": 2}})
    store = Store(sqlite_url)
    with RayExecutor(num_cpus=1) as executor:
        outcome = run_study(spec, store, executor)
    assert outcome.mode == "greedy" and len(store.waves("auto1")) == 2


def test_the_cli_reports_what_greedy_cannot_estimate(tmp_path):
    out = wavesweep("run", str(write_spec(tmp_path / "climb.yaml", SPEC)), "--store",
                    f"sqlite:///{tmp_path / 'store.db'}")
    assert out.returncode == 0, out.stderr
    assert "mode greedy" in out.stdout
    assert "cannot estimate these interactions: a:c, b:c." in out.stdout
    assert "The smallest extra design that would: 2 runs around the best point found:" in out.stdout

    # `analyze` on a greedy path: too few runs for the variance decomposition of undesigned runs, so the coded
    # fit, whose aliasing names what the path cannot separate, with a note that says so.
    store = f"sqlite:///{tmp_path / 'store.db'}"
    analysis = wavesweep("analyze", "climb", "--store", store, "--format", "json")
    assert analysis.returncode == 0, analysis.stderr
    import json

    result = json.loads(analysis.stdout)
    assert result["method_used"] == "ols"
    assert any("too few for the variance decomposition" in n for n in result["notes"])
    assert {"a:c[y]", "b:c[y]"} <= set(result["not_estimable"]) | {a for t in result["terms"] for a in t["aliased_with"]}
