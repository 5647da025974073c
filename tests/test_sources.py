"""Runs from an Optuna study or a CSV, as `wavesweep analyze` reads them (real Optuna studies in SQLite files)."""

from __future__ import annotations

import math

import optuna
import pytest

from orchestrator.errors import WavesweepError
from orchestrator.reporting.analyze import choose_method
from orchestrator.reporting.sources import csv_runs, optuna_runs

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_study(url: str, name: str = "s", trials: int = 30, directions=("minimize",)) -> None:
    study = optuna.create_study(study_name=name, storage=url, directions=list(directions),
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        x = trial.suggest_float("x", 0.0, 1.0)
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        if trial.number % 10 == 3:
            raise optuna.TrialPruned()
        if trial.number % 10 == 7:
            raise RuntimeError("boom")  # a FAIL trial
        loss = math.log10(lr) ** 2 + x + (0.5 if opt == "sgd" else 0.0)
        return loss if len(directions) == 1 else (loss, -loss)

    study.optimize(objective, n_trials=trials, catch=(RuntimeError,))


def test_an_optuna_study_becomes_runs_with_statuses_scales_and_kinds(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(url)
    runs = optuna_runs(url, "s")
    assert runs.response == "value" and runs.goal == "minimize" and runs.source == "Optuna study s"
    assert set(runs.factors) == {"lr", "x", "opt"}
    assert runs.factors["lr"].scale == "log" and runs.factors["x"].scale == "linear"
    assert runs.factors["opt"].kind == "categorical" and runs.factors["opt"].levels == ("adam", "sgd")
    counts = runs.frame["status"].value_counts().to_dict()
    assert counts == {"COMPLETE": 24, "PRUNED": 3, "FAILED": 3}
    done = runs.frame[runs.frame.status == "COMPLETE"]
    expected = done.lr.map(lambda v: math.log10(v) ** 2) + done.x + (done.opt == "sgd") * 0.5
    assert (done.value - expected).abs().max() < 1e-12
    # Continuous draws: every value differs, so auto picks the decomposition for undesigned runs.
    assert choose_method("auto", runs) == "fanova"


def test_multi_objective_needs_a_named_objective(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(url, "mo", trials=12, directions=("minimize", "maximize"))
    with pytest.raises(WavesweepError, match=r"--response: the study has 2 objectives; name one of \['0', '1'\]"):
        optuna_runs(url, "mo")
    runs = optuna_runs(url, "mo", "1")
    assert runs.response == "value_1" and runs.goal == "maximize"
    done = runs.frame[runs.frame.status == "COMPLETE"]
    assert (done.value_1 < 0).all()


def test_unknown_study_and_bad_storage_say_which(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(url, "real", trials=3)
    with pytest.raises(WavesweepError, match=r"--optuna-study: no study 'nope' in the storage; studies there: real"):
        optuna_runs(url, "nope")
    with pytest.raises(WavesweepError, match=r"--optuna-storage: cannot open postgresql://u:\*\*\*@"):
        optuna_runs("postgresql://u:secret@127.0.0.1:1/db", "x")


def test_a_conditional_parameter_is_left_out_with_a_note(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="c", storage=url, sampler=optuna.samplers.RandomSampler(seed=1))

    def objective(trial):
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        momentum = trial.suggest_float("momentum", 0.0, 0.99) if opt == "sgd" else 0.0
        return trial.suggest_float("lr", 1e-3, 1.0, log=True) + momentum

    study.optimize(objective, n_trials=20)
    runs = optuna_runs(url, "c")
    assert set(runs.factors) == {"opt", "lr"}
    assert any("conditional search space" in n and "momentum" in n for n in runs.notes)


def test_a_grid_search_study_counts_as_designed(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2]}
    study = optuna.create_study(study_name="g", storage=url, sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(lambda t: t.suggest_int("a", 1, 3) * t.suggest_float("b", 0.1, 0.2), n_trials=6)
    runs = optuna_runs(url, "g")
    assert runs.factors["a"].levels == (1, 2, 3) and choose_method("auto", runs) == "ols"


def test_csv_errors_name_the_file_and_columns(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("a,b,loss\n1,2,0.5\n2,1,0.7\n")
    with pytest.raises(WavesweepError, match=r"no column\(s\) \['c'\]"):
        csv_runs(path, "loss", ["a", "c"])
    with pytest.raises(WavesweepError, match="file not found"):
        csv_runs(tmp_path / "none.csv", "loss", ["a"])
    assert csv_runs(path, "loss", ["a", "b"]).designed is None
