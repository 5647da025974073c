"""End to end with real training: a tiny Qwen3.5 study through real Ray into SQLite, and into PostgreSQL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.spec import load_spec, parse_spec
from orchestrator.store import Store
from tests.conftest import REPO
from tests.test_cli import export_rows, wavesweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executor():
    """One local Ray for the module's in-process studies (each start costs seconds on 2 cores)."""
    with RayExecutor(num_cpus=2) as ex:
        yield ex


def small_demo(artifacts: Path, study: str = "demo-small") -> dict:
    """The demo spec, shortened: 4 cells x 1 seed in 2 waves of 2, 12 steps each."""
    spec = load_spec(REPO / "experiments/specs/demo.yaml").model_dump(mode="json", exclude_none=True)
    spec["study"] = study
    spec["fixed"]["max_steps"] = 12
    spec["fixed"]["n_eval"] = 16
    del spec["factors"]["weight_decay"]
    spec["strategy"] = {"mode": "grid", "runs_per_wave": 2}
    spec["seeds"] = [0]
    spec["artifacts"] = str(artifacts)
    return spec


def two_cells(artifacts: Path) -> dict:
    """The shortened demo at warmup 0 only: its two learning rates, in one wave."""
    spec = small_demo(artifacts)
    spec["fixed"]["warmup_ratio"] = spec["factors"].pop("warmup_ratio")["levels"][0]
    return spec


def test_tiny_qwen_study_through_ray_lands_metrics_and_curves(sqlite_url, tmp_path, executor):
    spec = parse_spec(small_demo(tmp_path / "artifacts"))
    store = Store(sqlite_url)
    outcome = run_study(spec, store, executor)
    assert (outcome.planned, outcome.ran, outcome.runs_per_wave) == (4, 4, 2)
    runs = store.runs(spec.study)
    assert [r["wave"] for r in runs] == [1, 1, 2, 2]
    assert {r["status"] for r in runs} == {"COMPLETE"}, [r["error_message"] for r in runs]
    for run in runs:
        assert math.isfinite(run["metric.eval_loss"]) and 0 < run["metric.eval_loss"] < 10
        assert 0.0 <= run["metric.exact_match"] <= 1.0
        assert run["metric.trainable_params"] > 0 and run["metric.wall_s"] > 0
        assert run["device"] == "cpu" and run["attempts"] == 1
        curve = store.curve(run["cell_key"])
        losses = [v for _, name, v in curve if name == "train_loss"]
        assert len(losses) >= 5 and losses[-1] < losses[0]  # it trained
        assert any(name == "eval_loss" for _, name, _ in curve)
    # Runs are deterministic for a given seed: the same params through Ray again give the same metrics. Two of the
    # four (warmup 0) are enough to show it.
    again = Store(f"{sqlite_url}-again")
    run_study(parse_spec(two_cells(tmp_path / "artifacts")), again, executor)
    redone = {r["param.learning_rate"]: r["metric.eval_loss"] for r in again.runs(spec.study)}
    assert len(redone) == 2
    assert redone == {r["param.learning_rate"]: r["metric.eval_loss"] for r in runs if r["param.warmup_ratio"] == 0}

    # `analyze` on the (shortened) demo study: 2 x 2 unreplicated, so saturated: Lenth's method, said so.
    import json

    out = wavesweep("analyze", spec.study, "--store", sqlite_url, "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method_used"] == "ols" and result["method"] == "lenth" and result["n_used"] == 4
    assert [t["term"] for t in result["terms"]] == ["learning_rate", "warmup_ratio", "learning_rate:warmup_ratio"]
    assert all({"term", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "aliased_with"} <= set(t)
               for t in result["terms"])


@pytest.mark.postgres
def test_tiny_qwen_study_on_postgresql_via_the_cli(tmp_path, pg_url):
    import yaml

    # Two cells: the same tiny training as the SQLite study above; what is new here is the CLI and PostgreSQL.
    spec = two_cells(tmp_path / "artifacts")
    spec_path = tmp_path / "demo-small.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = wavesweep("run", str(spec_path), "--store", pg_url)
    assert out.returncode == 0, out.stderr
    assert "Best configuration: learning_rate=" in out.stdout
    rows = export_rows(pg_url, "demo-small")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"COMPLETE"}
    assert all(math.isfinite(float(r["metric.eval_loss"])) for r in rows)
    assert "nothing to run" in wavesweep("run", str(spec_path), "--store", pg_url).stdout


def test_a_diverging_run_is_recorded_as_diverged_and_the_study_goes_on(sqlite_url, tmp_path, executor):
    spec = parse_spec({
        "study": "diverge", "experiment": "experiments.qwen35.finetune:run", "artifacts": str(tmp_path),
        "fixed": {"method": "full", "max_steps": 8, "n_eval": 8, "save": False},
        "factors": {"learning_rate": {"levels": [1e-3, 1e4], "scale": "log"}, "warmup_ratio": {"levels": [0.0, 0.1]}},
        "response": {"metric": "eval_loss"},
        "strategy": {"mode": "grid", "runs_per_wave": 2},
    })
    store = Store(sqlite_url)
    outcome = run_study(spec, store, executor)
    assert outcome.ran == 4
    runs = {(r["param.learning_rate"], r["param.warmup_ratio"]): r for r in store.runs("diverge")}
    for warmup in (0.0, 0.1):
        assert runs[(1e4, warmup)]["status"] == "DIVERGED"
        assert runs[(1e4, warmup)]["error_kind"] == "diverged"
        assert "training loss" in runs[(1e4, warmup)]["error_message"]
        assert runs[(1e-3, warmup)]["status"] == "COMPLETE"


def test_fine_tune_then_evaluate_the_best_adapter_through_the_store(sqlite_url, tmp_path, executor):
    """Acceptance: a LoRA study lifts exact match well above the untrained model's; an inference sweep on its best
    adapter (a store reference) finds that accuracy through the store."""
    store = Store(sqlite_url)
    common = {"artifacts": str(tmp_path), "response": {"metric": "exact_match", "goal": "maximize"},
              "seeds": [0], "strategy": {"mode": "grid", "runs_per_wave": 2}}
    tune = parse_spec({**common, "study": "tune", "experiment": "experiments.qwen35.finetune:run",
                       "fixed": {"method": "lora", "max_steps": 100, "lora_rank": 16, "lora_alpha": 32},
                       "factors": {"learning_rate": {"levels": [3e-3, 1e-2], "scale": "log"}}})
    evaluate = parse_spec({**common, "study": "evaluate", "experiment": "experiments.qwen35.inference:run",
                           "fixed": {"mode": "decode", "n_eval": 64},
                           "factors": {"adapter": {"levels": ["store:tune:best", "store:tune:1"]},
                                       "presence_penalty": {"levels": [0.0, 0.5]}}})
    untrained = parse_spec({**common, "study": "untrained", "experiment": "experiments.qwen35.inference:run",
                            "fixed": {"mode": "decode", "n_eval": 64},
                            "factors": {"presence_penalty": {"levels": [0.0, 0.5]}}})
    for spec in (tune, untrained, evaluate):
        run_study(spec, store, executor)

    tuned = store.runs("tune")
    assert {r["status"] for r in tuned} == {"COMPLETE"} and all(r["artifact_dir"] for r in tuned)
    best = max(tuned, key=lambda r: r["metric.exact_match"])
    baseline = max(r["metric.exact_match"] for r in store.runs("untrained"))
    assert best["metric.exact_match"] >= baseline + 0.1  # clearly above the untrained model

    evaluated = {(r["param.adapter"], r["param.presence_penalty"]): r for r in store.runs("evaluate")}
    greedy_best = evaluated[("store:tune:best", 0.0)]
    assert greedy_best["status"] == "COMPLETE"
    assert greedy_best["inputs"] == {"adapter": best["artifact_dir"]}
    # Same model, adapter, questions and greedy decoding as the fine-tuning run's own evaluation.
    assert greedy_best["metric.exact_match"] == best["metric.exact_match"]
    assert evaluated[("store:tune:1", 0.0)]["metric.exact_match"] == tuned[0]["metric.exact_match"]
