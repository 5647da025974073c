"""`wavesweep plan`'s cost (issue #13): per-run GPU shares with `gpus_per_run: auto`, run-hours for runs that take
no GPU, a wall clock for waves that overlap as `run` releases them, and counts in words. No Ray."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestrator import cli
from tests.conftest import synthetic_spec, write_spec


def plan(tmp_path, spec: dict, *args: str):
    out = CliRunner().invoke(cli.app, ["plan", str(write_spec(tmp_path / "s.yaml", spec)), *args],
                             env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    return out


def test_auto_gpus_with_minutes_per_run_costs_each_run_by_its_share(tmp_path):
    """A 0.8B LoRA run takes 1/8 of an 80 GB GPU, a 9B one a GPU alone: 2 x 2 cells x 2 seeds at 3 minutes."""
    spec = synthetic_spec(strategy={"mode": "grid", "runs_per_wave": 8}, resources={"gpus_per_run": "auto"})
    spec["factors"] = {"model": {"levels": ["Qwen/Qwen3.5-0.8B", "Qwen/Qwen3.5-9B"]}, "x": {"levels": [1, 2]}}
    out = plan(tmp_path, spec, "--minutes-per-run", "3")
    gpu_hours = (4 * 0.125 + 4 * 1.0) * 3 / 60
    assert f"Cost: {gpu_hours:.2f} GPU-hours at 3.00 min per run x 0.125 to 1 GPU each (gpus_per_run: auto)" \
        in out.stdout
    result = json.loads(plan(tmp_path, spec, "--minutes-per-run", "3", "--format", "json").stdout)
    assert result["gpu_hours"] == pytest.approx(gpu_hours) and result["gpus_per_run"] == "auto"


@pytest.mark.parametrize(("backfill", "rounds", "how"), [
    (True, 2, "waves overlap: a grid's later waves start as runs end"),  # 12 runs on 8 slots
    (False, 3, "one wave after another"),  # 3 waves of 4, each waiting for the last
])
def test_the_wall_clock_follows_how_run_releases_waves(tmp_path, backfill, rounds, how):
    spec = synthetic_spec(strategy={"mode": "grid", "runs_per_wave": 4, "backfill": backfill})
    out = plan(tmp_path, spec, "--minutes-per-run", "6", "--gpus", "8")
    assert f"about {rounds * 6 / 60:.2f} h of wall clock with 8 runs at once ({how})." in out.stdout
    result = json.loads(plan(tmp_path, spec, "--minutes-per-run", "6", "--gpus", "8", "--format", "json").stdout)
    assert result["wall_hours"] == pytest.approx(rounds * 6 / 60)
    assert result["waves_overlap"] is backfill and result["runs_at_once"] == 8


def test_cpu_runs_cost_run_hours_and_one_wave_is_one_wave(tmp_path):
    spec = synthetic_spec(strategy={"mode": "grid", "runs_per_wave": 12}, resources={"gpus_per_run": 0})
    out = plan(tmp_path, spec, "--minutes-per-run", "2")
    assert "12 runs in 1 wave of at most 12." in out.stdout
    assert "Cost: 0.40 run-hours at 2.00 min per run (the runs take no GPU); about 0.03 h of wall clock with 12 " \
        "runs at once." in out.stdout
    assert "GPU-hours" not in out.stdout and "x 0 GPU" not in out.stdout
