"""The `wavesweep` command end to end, through real Ray and a real store, with the synthetic experiment."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator.store import Store
from tests.conftest import REPO, synthetic_spec, write_spec
from tests.ray_nodes import AUTH, ray_head

pytestmark = pytest.mark.slow


def wavesweep(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # Wide enough that Rich does not wrap table cells into words the assertions look for.
    env = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, check=False)


def export_rows(store_url: str, study: str) -> list[dict]:
    out = wavesweep("export", study, "--format", "csv", "--store", store_url)
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


@pytest.fixture(scope="module")
def joined():
    """`wavesweep run` arguments that join one Ray head shared by the module's studies, as big as the local Ray a
    run would start on this machine. test_run_then_rerun_runs_nothing_then_export keeps the local Ray of README
    command 1."""
    with ray_head(f"--num-cpus={os.cpu_count()}", "--num-gpus=0") as address:
        yield ("--ray-address", address)


def test_console_script_is_installed():
    assert shutil.which("wavesweep") or (Path(sys.executable).parent / "wavesweep").exists()
    assert wavesweep("--help").returncode == 0


def test_bad_spec_exits_1_with_the_field_and_writes_nothing(tmp_path):
    spec = synthetic_spec()
    spec["factors"]["y"]["levels"] = [0.1, -0.2]
    spec["factors"]["y"]["scale"] = "log"
    db = tmp_path / "store.db"
    out = wavesweep("run", str(write_spec(tmp_path / "bad.yaml", spec)), "--store", f"sqlite:///{db}")
    assert out.returncode == 1
    assert "factors.y.levels[1]: must be > 0 for scale log; got -0.2" in out.stderr
    assert "Traceback" not in out.stderr
    assert not db.exists()


def test_plan_over_budget_exits_1_and_records_no_study(tmp_path):
    spec = synthetic_spec(strategy={"mode": "grid", "runs_per_wave": 4, "max_runs": 5})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = wavesweep("run", str(write_spec(tmp_path / "s.yaml", spec)), "--store", url)
    assert out.returncode == 1 and "strategy.max_runs: the full factorial x seeds needs 12 runs" in out.stderr
    # Refused before Ray started (the wave size is in the spec) and before the store file was created.
    assert "Ray" not in out.stdout + out.stderr and not (tmp_path / "store.db").exists()


def test_run_then_rerun_runs_nothing_then_export(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec_path = write_spec(tmp_path / "toy.yaml", synthetic_spec())
    first = wavesweep("run", str(spec_path), "--store", url)
    assert first.returncode == 0, first.stderr
    assert "Wave 3: 4 runs" in first.stdout and "Ran 12 runs (4 per wave, mode grid)" in first.stdout
    assert "Stopped: every cell of the full factorial is recorded" in first.stdout
    # The surface is 1*x - 2*y + 0.5*x*y: lowest at x=1, y=0.5.
    assert "Best configuration: x=1, y=0.5" in first.stdout
    assert f"Results: {url}" in first.stdout

    rows = export_rows(url, "toy")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"COMPLETE"}
    assert {(r["param.x"], r["param.y"], r["seed"]) for r in rows} == {
        (x, y, s) for x in ("1", "2") for y in ("0.1", "0.2", "0.5") for s in ("0", "1")}
    for row in rows:
        expected = float(row["param.x"]) - 2 * float(row["param.y"]) + 0.5 * float(row["param.x"]) * float(row["param.y"])
        assert abs(float(row["metric.loss"]) - expected) < 0.5  # noise_sd 0.1
        assert float(row["wall_s"]) >= 0 and row["host"] and row["device"] == "cpu"

    second = wavesweep("run", str(spec_path), "--store", url)
    assert second.returncode == 0, second.stderr
    assert "already finished" in second.stdout and "nothing to run" in second.stdout
    assert export_rows(url, "toy") == rows  # same ids, timestamps and metrics

    as_json = json.loads(wavesweep("export", "toy", "--format", "json", "--store", url).stdout)
    assert len(as_json) == 12 and as_json[0]["status"] == "COMPLETE"
    status = wavesweep("status", "toy", "--store", url)
    assert status.returncode == 0 and "full factorial, block 3 of 3" in status.stdout


def test_resume_reruns_only_unfinished_cells(tmp_path, joined):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    spec_path = write_spec(tmp_path / "toy.yaml", synthetic_spec())
    assert wavesweep("run", str(spec_path), "--store", url, *joined, env=AUTH).returncode == 0
    before = {int(r["run_id"]): r for r in export_rows(url, "toy")}
    # What a driver killed mid-wave leaves behind: runs stuck in RUNNING, and one that crashed.
    db = Store(url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE runs SET status = 'RUNNING' WHERE id IN (5, 6)"))
        conn.execute(text("UPDATE runs SET status = 'FAILED', error_kind = 'worker_died' WHERE id = 9"))
        conn.execute(text("UPDATE runs SET status = 'PENDING', attempts = 0 WHERE id = 12"))
    db.close()

    again = wavesweep("run", str(spec_path), "--store", url, *joined, env=AUTH)
    assert again.returncode == 0, again.stderr
    assert "Ran 4 runs" in again.stdout and "resume of wave 2" in again.stdout and "resume of wave 3" in again.stdout
    after = {int(r["run_id"]): r for r in export_rows(url, "toy")}
    assert set(after) == set(before)  # no new rows: nothing ran twice under a new id
    for run_id, row in after.items():
        assert row["status"] == "COMPLETE"
        if run_id in (5, 6, 9, 12):
            assert row["finished_at"] > before[run_id]["finished_at"]
            assert row["attempts"] == ("1" if run_id == 12 else "2")
            assert row["metric.loss"] == before[run_id]["metric.loss"]  # same seed, same value
        else:
            assert row == before[run_id]


def test_failed_and_diverged_runs_are_recorded_and_the_study_finishes(tmp_path, joined):
    spec = synthetic_spec(seeds=[0])
    spec["fixed"].update(fail_if={"x": 2, "y": 0.1}, diverge_if={"x": 2, "y": 0.5})
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = wavesweep("run", str(write_spec(tmp_path / "toy.yaml", spec)), "--store", url, *joined, env=AUTH)
    assert out.returncode == 0, out.stderr
    rows = {(r["param.x"], r["param.y"]): r for r in export_rows(url, "toy")}
    assert rows[("2", "0.1")]["status"] == "FAILED" and rows[("2", "0.1")]["error_kind"] == "exception"
    assert "RuntimeError: fail_if matched" in rows[("2", "0.1")]["error_message"]
    assert rows[("2", "0.5")]["status"] == "DIVERGED"
    assert sum(r["status"] == "COMPLETE" for r in rows.values()) == 4
    db = Store(url)
    with db.engine.connect() as conn:
        traceback = conn.execute(text("SELECT traceback FROM runs WHERE status = 'FAILED'")).scalar()
    db.close()
    assert "Traceback (most recent call last)" in traceback and "experiments/synthetic.py" in traceback
    status = wavesweep("status", "toy", "--store", url)
    assert "FAILED run" in status.stdout and "DIVERGED run" in status.stdout


@pytest.mark.postgres
def test_study_on_postgresql(tmp_path, pg_url, joined):
    spec_path = write_spec(tmp_path / "toy.yaml", synthetic_spec())
    out = wavesweep("run", str(spec_path), "--store", pg_url, *joined, env=AUTH)
    assert out.returncode == 0, out.stderr
    rows = export_rows(pg_url, "toy")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"COMPLETE"}
    again = wavesweep("run", str(spec_path), "--store", pg_url, *joined, env=AUTH)
    assert "nothing to run" in again.stdout
