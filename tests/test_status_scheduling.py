"""Overlapping waves as the dashboard and `wavesweep status` show them: idle device-seconds the driver counted (and
run-time estimates for waves it did not count), deadlines passed, backfill runs and the study lease. The store is
filled through the Store API with explicit times, on SQLite and PostgreSQL, so every figure is known exactly."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboard import data, timeline
from dashboard.reader import open_readonly
from orchestrator.cells import WavePlan, make_cell
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import synthetic_spec
from tests.test_cli import wavesweep
from tests.test_dashboard import charts, render

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DRIVER = "node-1:4242:abc123"


def run(store: Store, cell, device: str, start_s: float, end_s: float, loss: float) -> None:
    start, end = T0 + timedelta(seconds=start_s), T0 + timedelta(seconds=end_s)
    store.mark_running(cell.key, host="node-1", device=device, started_at=start)
    store.finish_run(cell.key, RunResult(status=RunStatus.COMPLETE, metrics={"loss": loss, "gpu_s": end_s - start_s},
                                         started_at=start, finished_at=end, wall_s=end_s - start_s))


def fill(url: str) -> dict:
    """Study "sched" on two GPUs (node-1 cuda:0 and cuda:1), seconds after T0:

    wave 1: A cuda:0 0-100, B cuda:1 0-60, backfill C (A's cell, another seed) cuda:1 60-90; the driver counted
            30 + 12.5 idle GPU-seconds of 2 GPUs and passed its deadline.
    wave 2: D cuda:0 100-150, E cuda:1 90-170 (it starts while wave 1's A still runs); no idle counted, as for a
            wave recorded before migration 0005: lanes x span - busy = 2 x 80 - (50 + 80) = 30 GPU-s.
    wave 3: recorded, nothing started.

    Study "cpu": one wave on CPUs, 7 idle CPU-seconds of 16 counted. Returns what the checks need."""
    store = Store(url)
    spec = parse_spec(synthetic_spec("sched"))
    sid = store.open_study(spec)
    a, b = make_cell("sched", {"x": 1, "y": 0.1}, 0), make_cell("sched", {"x": 2, "y": 0.1}, 0)
    d, e = make_cell("sched", {"x": 1, "y": 0.2}, 0), make_cell("sched", {"x": 2, "y": 0.2}, 0)
    c = make_cell("sched", {"x": 1, "y": 0.1}, 7)  # a replicate of A, the wave's best cell
    store.add_wave(sid, WavePlan([a, b], "full_factorial", "block 1"))
    store.take_lease(sid, DRIVER, ttl_s=600)
    run(store, a, "cuda:0", 0, 100, 1.0)
    run(store, b, "cuda:1", 0, 60, 2.0)
    store.add_cells(sid, 1, [c], backfill=True)
    run(store, c, "cuda:1", 60, 90, 1.1)
    store.add_idle(sid, 1, 30.0, "GPU", 2)
    store.add_idle(sid, 1, 12.5, "GPU", 2)  # counts add up
    store.pass_deadline(sid, 1)
    store.add_wave(sid, WavePlan([d, e], "full_factorial", "block 2"))
    run(store, d, "cuda:0", 100, 150, 3.0)
    run(store, e, "cuda:1", 90, 170, 4.0)
    store.add_wave(sid, WavePlan([make_cell("sched", {"x": 1, "y": 0.5}, 0)], "full_factorial", "block 3"))

    cpu = parse_spec(synthetic_spec("cpu"))
    cpu_id = store.open_study(cpu)
    f = make_cell("cpu", {"x": 1, "y": 0.1}, 0)
    store.add_wave(cpu_id, WavePlan([f], "full_factorial", "cpu block"))
    run(store, f, "cpu", 0, 10, 1.0)
    store.add_idle(cpu_id, 1, 7.0, "CPU", 16)
    waves = store.waves("sched")
    runs = {r["cell_key"]: r for r in store.runs("sched")}
    store.close()
    return {"sid": sid, "deadline": waves[0]["deadline_at"], "backfill_run": runs[c.key]["run_id"]}


@pytest.fixture
def filled(store_url):
    before = datetime.now(UTC)
    facts = fill(store_url)
    assert before <= facts["deadline"] <= datetime.now(UTC)  # pass_deadline stamps the moment it is called
    return store_url, facts


def test_idle_per_wave_uses_the_drivers_count_else_run_times(filled):
    url, facts = filled
    engine = open_readonly(url)
    study = data.load_study(engine, "sched")
    assert study.runs["backfill"].tolist() == [False, False, True, False, False, False]
    assert study.waves["backfill"].tolist() == [1, 0, 0]
    bars, idle, unit = timeline.timeline(study)
    assert unit == "GPU" and bars.loc[bars["backfill"], "run_id"].tolist() == [facts["backfill_run"]]
    first, second, third = (idle.iloc[i] for i in range(3))
    # Wave 1: the driver's 42.5 GPU-s, not the run-time estimate 2 x 100 - 190 = 10, which the overlap skews.
    assert first[["wave", "source", "unit", "capacity", "lanes"]].tolist() == [1, "driver", "GPU", 2, 2]
    assert first[["span_s", "busy_s", "idle_s", "idle_share"]].tolist() == pytest.approx([100, 190, 42.5, 0.2125])
    assert bool(first["deadline_passed"]) and first["deadline_at"] == facts["deadline"]
    assert first["backfill"] == 1
    assert second[["wave", "source", "unit", "capacity"]].tolist() == [2, "run times", "GPU", 2]
    assert second[["span_s", "busy_s", "idle_s", "idle_share"]].tolist() == pytest.approx([80, 130, 30, 0.1875])
    assert not second["deadline_passed"] and second["backfill"] == 0
    assert pd.isna(third["source"]) and math.isnan(third["idle_s"]) and math.isnan(third["idle_share"])
    cpu = timeline.timeline(data.load_study(engine, "cpu"))[1].iloc[0]
    assert cpu[["source", "unit", "capacity", "idle_s"]].tolist() == ["driver", "CPU", 16, 7]
    assert cpu["idle_share"] == pytest.approx(7 / (16 * 10))
    engine.dispose()


def test_overview_and_runs_views_show_idle_deadlines_and_backfill(filled, monkeypatch):
    url, facts = filled
    at = render(url, monkeypatch, "Overview", "sched")
    tables = [df.value for df in at.dataframe]
    idle = next(t for t in tables if "source" in t.columns)
    assert idle["wave"].tolist() == [1, 2]  # wave 3 has neither a count nor a started run
    assert idle["source"].tolist() == ["driver", "run times"]
    assert idle["idle_s"].tolist() == pytest.approx([42.5, 30])
    assert idle["idle_share"].tolist() == pytest.approx([21.25, 18.75])  # shown in percent
    assert idle["deadline_passed"].tolist() == [True, False] and idle["backfill"].tolist() == [1, 0]
    progress = next(t for t in tables if "done" in t.columns)
    assert progress["backfill"].tolist() == [1, 0, 0] and "idle_s" not in progress
    assert any("estimated from run times" in c.value for c in at.caption)
    figure = next(fig for fig in charts(at) if fig["layout"]["title"]["text"].startswith("GPU timeline"))
    assert "hatched: backfill runs" in figure["layout"]["title"]["text"]
    hatched = {t["name"]: t["marker"].get("pattern", {}).get("shape") for t in figure["data"]}
    assert hatched == {"1, designed": "", "1, backfill": "/", "2, designed": ""}

    at = render(url, monkeypatch, "Runs", "sched")
    runs = at.dataframe[0].value
    assert runs.loc[runs["backfill"], "run_id"].tolist() == [facts["backfill_run"]]
    assert (~runs["backfill"]).sum() == 5


def row(output: str, wave: int) -> str:
    """The line of the waves table for ``wave``."""
    return next(line for line in output.splitlines() if re.match(rf"\W*{wave}\s*│", line))


@pytest.mark.slow
def test_status_shows_the_lease_holder_idle_deadline_and_backfill(filled):
    url, facts = filled
    store = Store(url)
    lease = store.lease(facts["sid"])
    out = wavesweep("status", "sched", "--store", url)
    assert out.returncode == 0, out.stderr
    assert (f"Driver: {DRIVER} since {lease['since']:%Y-%m-%d %H:%M:%S} UTC, lease until "
            f"{lease['until']:%Y-%m-%d %H:%M:%S} UTC\n") in out.stdout
    deadline = f"{facts['deadline']:%Y-%m-%d %H:%M:%S} UTC"
    first, second = row(out.stdout, 1), row(out.stdout, 2)
    assert "42.5 GPU-s of 2 GPUs" in first and deadline in first and re.search(r"│\s+1\s+│\s+42\.5", first)
    assert "3 COMPLETE" in first
    assert re.search(r"│\s+0\s+│\s+-\s+│\s+-\s+│", second)  # no backfill, no idle counted, no deadline
    cpu = wavesweep("status", "cpu", "--store", url)
    assert "7.0 CPU-s of 16 CPUs" in row(cpu.stdout, 1) and "Driver: no driver holds" in cpu.stdout

    store.release_lease(facts["sid"], DRIVER)
    assert store.take_lease(facts["sid"], "node-2:7:dead", ttl_s=-60)  # a lease its holder stopped renewing
    out = wavesweep("status", "sched", "--store", url)
    assert re.search(r"Driver: node-2:7:dead since .* UTC \(expired: ", out.stdout)
    store.release_lease(facts["sid"], "node-2:7:dead")
    store.close()
    out = wavesweep("status", "sched", "--store", url)
    assert "Driver: no driver holds the study's lease" in out.stdout and "expired" not in out.stdout
