"""`wavesweep analyze` on a study in the store and on a CSV of runs, through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import synthetic_spec, write_spec
from tests.test_cli import wavesweep

pytestmark = pytest.mark.slow

TERM_KEYS = {"term", "estimate", "ci_low", "ci_high", "p_value", "p_adjusted", "aliased_with"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """2^3 full factorial x 2 seeds on a surface with one real interaction: loss = x + 2 z + 3 x*y + noise."""
    tmp = tmp_path_factory.mktemp("analyze")
    spec = synthetic_spec("effects", seeds=[0, 1], strategy={"mode": "grid", "runs_per_wave": 8})
    spec["fixed"] = {"surface": {"x": 1.0, "z": 2.0, "x*y": 3.0}, "noise_sd": 0.05}
    spec["factors"] = {"x": {"levels": [-1, 1]}, "y": {"levels": [-1, 1]}, "z": {"levels": [-1, 1]}}
    url = f"sqlite:///{tmp / 'store.db'}"
    out = wavesweep("run", str(write_spec(tmp / "effects.yaml", spec)), "--store", url)
    assert out.returncode == 0, out.stderr
    return url, tmp


def test_analyze_a_study_as_json_finds_the_true_terms(study):
    url, _ = study
    out = wavesweep("analyze", "effects", "--store", url, "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    terms = {t["term"]: t for t in result["terms"]}
    assert all(TERM_KEYS <= set(t) for t in result["terms"])
    assert set(terms) == {"x", "y", "z", "x:y", "x:z", "y:z"}
    assert {t for t, r in terms.items() if r["p_adjusted"] < 0.05} == {"x", "z", "x:y"}
    # Coded units: +-1 levels, so the estimates are the surface's coefficients.
    for term, true in {"x": 1.0, "z": 2.0, "x:y": 3.0, "y": 0.0}.items():
        assert terms[term]["ci_low"] <= true <= terms[term]["ci_high"]
    assert result["n_used"] == 16 and result["method"] == "ols"


def test_analyze_table_and_csv_formats(study):
    url, _ = study
    table = wavesweep("analyze", "effects", "--store", url)
    assert table.returncode == 0 and "x:y" in table.stdout and "Variance budget" in table.stdout
    assert "the smallest coded effect this study detects 80% of the time" in table.stdout
    # Runs needed for a given effect, from the same noise estimate: must agree with the power function.
    from orchestrator.analysis import runs_needed

    fit = json.loads(wavesweep("analyze", "effects", "--store", url, "--format", "json", "--detect", "0.01").stdout)
    sigma = fit["sigma_pure_error"] or fit["sigma"]
    expected = runs_needed(0.01, sigma, len(fit["terms"]) + 1)
    assert fit["runs_needed"] == {"effect": 0.01, "power": 0.8, "runs": expected} and expected > fit["n_used"]
    detect = wavesweep("analyze", "effects", "--store", url, "--detect", "0.01")
    assert f"To detect a coded effect of 0.01 80% of the time: {expected} runs in all (16 so far)" in detect.stdout
    csv = wavesweep("analyze", "effects", "--store", url, "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("term,estimate,std_error,ci_low,ci_high")


def test_analyze_an_exported_csv_gives_the_same_estimates(study):
    url, tmp = study
    exported = tmp / "runs.csv"
    assert wavesweep("export", "effects", "--store", url, "--output", str(exported)).returncode == 0
    text = exported.read_text().replace("param.", "").replace("metric.loss", "loss")
    renamed = tmp / "renamed.csv"
    renamed.write_text(text)
    from_csv = wavesweep("analyze", "--csv", str(renamed), "--response", "loss", "--factors", "x,y,z",
                         "--format", "json")
    assert from_csv.returncode == 0, from_csv.stderr
    from_store = json.loads(wavesweep("analyze", "effects", "--store", url, "--format", "json").stdout)
    estimates = {t["term"]: t["estimate"] for t in json.loads(from_csv.stdout)["terms"]}
    assert estimates == pytest.approx({t["term"]: t["estimate"] for t in from_store["terms"]}, abs=1e-12)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["analyze"], 1, "give one source of runs: a STUDY in the store, --csv FILE"),
    # A value outside an option's choices is a usage error (exit 2) that lists them.
    (["analyze", "effects", "--method", "magic"], 2, "'magic' is not one of 'auto', 'ols', 'fanova', 'surface'"),
    (["analyze", "--optuna-storage", "sqlite:///x.db"], 1, "--optuna-storage needs --optuna-study NAME"),
    (["analyze", "--csv", "nope.csv", "--response", "y", "--factors", "a"], 1, "--csv: file not found"),
    (["analyze", "effects", "--format", "xml"], 2, "'xml' is not one of 'table', 'json', 'csv'"),
])
def test_analyze_usage_errors(study, args, code, message):
    url, _ = study
    out = wavesweep(*args, "--store", url)
    assert out.returncode == code and message in out.stderr, out.stderr


def test_analyze_an_optuna_study_by_variance_decomposition(tmp_path):
    # Random search (undesigned, continuous) on y = 4 x1 x2 + x3 + noise, with a few pruned and failed trials.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="rs", storage=url, sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)

    def objective(trial):
        x = [trial.suggest_float(f"x{i}", -1.0, 1.0) for i in range(1, 5)]
        if trial.number in (5, 6):
            raise optuna.TrialPruned()
        return 4 * x[0] * x[1] + x[2] + rng.normal(0, 0.2)

    study.optimize(objective, n_trials=82)
    out = wavesweep("analyze", "--optuna-storage", url, "--optuna-study", "rs", "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method_used"] == "fanova" and result["n_used"] == 80 and result["excluded"] == {"PRUNED": 2}
    verdicts = {t["term"]: t["verdict"] for t in result["terms"]}
    assert verdicts["x1:x2"] == "interaction"
    assert [t for t, v in verdicts.items() if v == "interaction"] == ["x1:x2"]
    assert verdicts["x4"] == "inconclusive"
    table = wavesweep("analyze", "--optuna-storage", url, "--optuna-study", "rs")
    assert table.returncode == 0 and "Variance decomposition of value in Optuna study rs (minimize)" in table.stdout
    assert "Under its floor a term is inconclusive, not absent" in table.stdout
    x4 = next(t for t in result["terms"] if t["term"] == "x4")
    assert "x4 inconclusive: " + x4["note"][:40] in " ".join(table.stdout.split())


def test_analyze_a_csv_gives_a_checked_reparametrisation_hint(tmp_path):
    # A 5 x 5 log grid where the best learning rate grows like sqrt(batch size), twice over (two seeds).
    rows = []
    rng = np.random.default_rng(1)
    for lr in np.geomspace(1e-5, 1e-2, 5):
        for batch in (8, 16, 32, 64, 128):
            for _ in range(2):
                loss = 1 + 0.05 * (np.log(lr / 3e-4) - 0.5 * np.log(batch / 32)) ** 2 + rng.normal(0, 0.01)
                rows.append({"learning_rate": lr, "batch_size": batch, "loss": loss})
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    args = ["analyze", "--csv", str(path), "--response", "loss", "--factors", "learning_rate,batch_size",
            "--log", "learning_rate,batch_size"]
    out = wavesweep(*args, "--format", "json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["method_used"] == "ols"
    (hint,) = result["hints"]
    assert hint["status"] == "supported" and hint["coordinates"][0] == "learning_rate / sqrt(batch_size)"
    table = wavesweep(*args)
    assert "Reparametrisation hints" in table.stdout and "learning_rate x batch_size [supported]" in table.stdout


def test_plan_of_the_demo_shows_waves_aliasing_and_cost(tmp_path):
    out = wavesweep("plan", "experiments/specs/demo.yaml", "--minutes-per-run", "6", "--store",
                    f"sqlite:///{tmp_path / 'none.db'}")
    assert out.returncode == 0, out.stderr
    assert "Wave 1: 8 runs (full factorial, block 1 of 2)" in out.stdout
    # Wave 1 alone is the half fraction I = ABC: each two-way interaction is mixed into a main effect.
    assert "not separable: learning_rate:warmup_ratio = combination of weight_decay" in out.stdout
    assert ("After wave 2 (16 runs): estimable: learning_rate, warmup_ratio, weight_decay, learning_rate:warmup_ratio, "
            "learning_rate:weight_decay, warmup_ratio:weight_decay") in out.stdout
    assert "16 runs in 2 waves of at most 8." in out.stdout
    assert "Cost: 1.60 GPU-hours at 6.00 min per run x 1 GPU (1.60 run-hours on a cluster without GPUs)" in out.stdout
    assert "about 0.20 h of wall clock with 8 runs at once (waves overlap" in out.stdout
    assert not (tmp_path / "none.db").exists()  # planning writes nothing


def test_plan_takes_its_cost_from_the_study_history(study):
    url, tmp = study
    spec = synthetic_spec("effects", seeds=[0, 1], strategy={"mode": "grid", "runs_per_wave": 8})
    spec["fixed"] = {"surface": {"x": 1.0, "z": 2.0, "x*y": 3.0}, "noise_sd": 0.05}
    spec["factors"] = {"x": {"levels": [-1, 1]}, "y": {"levels": [-1, 1]}, "z": {"levels": [-1, 1]}}
    out = wavesweep("plan", str(write_spec(tmp / "again.yaml", spec)), "--store", url)
    assert out.returncode == 0, out.stderr
    assert "Cost: 0.00 GPU-hours at 0.00 min per run" in out.stdout


def test_plan_needs_a_wave_size(tmp_path):
    spec = synthetic_spec(strategy={"mode": "grid"})
    out = wavesweep("plan", str(write_spec(tmp_path / "s.yaml", spec)))
    assert out.returncode == 1 and "pass --gpus N" in out.stderr
    sized = wavesweep("plan", str(write_spec(tmp_path / "s.yaml", spec)), "--gpus", "6")
    assert sized.returncode == 0 and "12 runs in 2 waves of at most 6." in sized.stdout
