"""A spec's problems as `wavesweep run` and `wavesweep plan` report them (issue #13): every problem of the file in one
report, and factor or fixed names checked against the params the experiment declares, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.spec import parse_spec
from tests.conftest import REPO, synthetic_spec, write_spec


def wavesweep(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLUMNS": "250"})


def error_lines(out: subprocess.CompletedProcess) -> list[str]:
    return [line.removeprefix("error: ") for line in out.stderr.splitlines()]


@pytest.mark.parametrize("command", ["run", "plan"])
def test_every_problem_of_a_spec_in_one_report(tmp_path, command):
    spec = synthetic_spec(strategy={"mode": "grid", "runs_per_wave": 4, "max_waves": -1})
    spec["factors"] = {"x": {"levels": [1]}, "lr": {"levels": [0.01, -0.1], "scale": "log"}}
    spec["response"]["goal"] = "maximise"
    db = tmp_path / "store.db"
    out = wavesweep(command, str(write_spec(tmp_path / "bad.yaml", spec)), "--store", f"sqlite:///{db}")
    assert out.returncode == 1, out.stdout
    lines = error_lines(out)
    for problem in ("response.goal: must be one of 'minimize' or 'maximize'; got 'maximise'",
                    "strategy.max_waves: must be > 0; got -1",
                    "factors.x.levels: must have at least 2 levels (a single value belongs under 'fixed'); got [1]",
                    "factors.lr.levels[1]: must be > 0 for scale log; got -0.1"):
        assert problem in lines, out.stderr
    assert len(lines) == 4 and "Traceback" not in out.stderr
    assert not db.exists()


def test_a_field_refused_by_its_type_hides_no_other_problem(tmp_path):
    """A missing study and a bad factor scale are type errors; the factor left valid is still checked, and the
    dropped ones give no second-hand problem (no 'factors: must name at least one factor')."""
    spec = synthetic_spec()
    del spec["study"]
    spec["factors"] = {"x": {"levels": [1, 2], "scale": "exp"}, "y": {"levels": [0.1, 0.1]}}
    out = wavesweep("plan", str(write_spec(tmp_path / "bad.yaml", spec)))
    assert error_lines(out) == ["study: is required",
                                "factors.x.scale: must be one of 'linear' or 'log'; got 'exp'",
                                "factors.y.levels[1]: must be unique within the factor; got 0.1"]


def test_a_name_the_experiment_does_not_declare_is_refused_before_anything_runs(tmp_path):
    """`learnig_rate` used to start Ray and fail every run with 'unknown param'; now `run` refuses it at once, naming
    the close match, and creates no store."""
    spec = {"study": "typo", "experiment": "experiments.qwen35.finetune:run",
            "fixed": {"model": "tiny", "max_step": 10, "dataset": "arithmetic"},
            "factors": {"learnig_rate": {"levels": [1e-3, 3e-3], "scale": "log"},
                        "warmup_ratio": {"levels": [0.0, 0.1]}},
            "response": {"metric": "eval_loss"}, "strategy": {"mode": "grid", "runs_per_wave": 4}}
    db = tmp_path / "store.db"
    out = wavesweep("run", str(write_spec(tmp_path / "typo.yaml", spec)), "--store", f"sqlite:///{db}")
    assert out.returncode == 1
    target = "is not a param of experiments.qwen35.finetune:run"
    assert error_lines(out) == [f"factors.learnig_rate: {target} (did you mean 'learning_rate'?); got 'learnig_rate'",
                                f"fixed.max_step: {target} (did you mean 'max_steps'?); got 'max_step'"]
    assert not db.exists()


def test_an_experiment_without_declared_params_takes_any_name():
    """experiments.synthetic declares no PARAMS: its params are the terms of its surface, whatever their names."""
    spec = synthetic_spec()
    spec["factors"] = {"anything": {"levels": [1, 2]}, "y": {"levels": [0.1, 0.2]}}
    assert list(parse_spec(spec).factors) == ["anything", "y"]
