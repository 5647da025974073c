"""bench/scale.py: its experiments report what they say, the barrier releases a whole wave, the 256 case is planned
by memory, and the ingest figures count windows, not gaps. No Ray, no timing asserts."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import threading
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"
_spec = importlib.util.spec_from_file_location("bench_scale", _PATH)
sc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sc
_spec.loader.exec_module(sc)


class FakeCtx:
    def __init__(self, key: str = "k"):
        self.cell_key, self.points = key, []

    def report(self, step, **metrics):
        self.points.append((step, metrics))


def test_report_run_counts_every_call():
    ctx = FakeCtx()
    out = sc.report_run({"reports": 50}, ctx)
    assert [s for s, _ in ctx.points] == list(range(50)) and out["reports"] == 50
    assert out["us_per_report"] == pytest.approx(out["loop_s"] / 50 * 1e6)
    assert out["loss"] == out["loop_s"] and out["pid"] > 0


def test_report_run_waits_at_its_barrier(tmp_path):
    params = {"reports": 5, "group": 1, "barrier": str(tmp_path / "b"), "barrier_s": 5.0}
    assert sc.report_run(params, FakeCtx())["reports"] == 5 and len(list((tmp_path / "b").iterdir())) == 1


def test_paced_run_reports_rate_times_seconds_after_the_barrier(tmp_path):
    ctx = FakeCtx()
    params = {"rate": 200.0, "report_s": 0.05, "group": 1, "barrier": str(tmp_path / "b"), "barrier_s": 5.0}
    out = sc.paced_run(params, ctx)
    assert len(ctx.points) == out["reports"] == 10 and out["barrier_ok"] == 1.0
    assert out["t_start"] <= out["t_first"] <= out["t_last"]
    assert sc.noop_run({}, ctx)["loss"] == 0.0


def test_barrier_waits_for_the_whole_wave(tmp_path):
    folder, done = tmp_path / "b", []
    first = threading.Thread(target=lambda: done.append(sc.barrier(folder, "a", 2, 10.0)))
    first.start()
    first.join(0.3)
    assert first.is_alive() and not done  # one of two arrived: it waits
    assert sc.barrier(folder, "b", 2, 10.0)
    first.join(5)
    assert done == [True]
    assert not sc.barrier(folder, "c", 2, 0.2)  # the next wave's first run times out alone


def test_plan_concurrency_halves_until_the_workers_fit():
    assert sc.plan_concurrency(64, 130, 23.0) == 64
    assert sc.plan_concurrency(256, 130, 23.0) == 128  # 256 x 130 MB = 32.5 GiB does not fit; 128 (16.3) does
    assert sc.plan_concurrency(256, 130, 12.0) == 64
    assert sc.plan_concurrency(16, 130, 1.0) == 1
    assert sc.plan_concurrency(10, 1024, 6.0) == 2  # 4 fit: the largest divisor of 10 that does, so waves are full
    assert sc.plan_concurrency(3, 1024, 4.0) == 1
    assert sc.plan_concurrency(256, 130, 23.0, cap=64) == 64


def test_ingest_figures_one_wave_and_waves_in_sequence():
    run = {"wave": 1, "t_start": 0.0, "t_first": 10.0, "t_last": 20.0, "reports": 1000}
    one = sc.ingest_figures([run, {**run, "t_first": 10.5}], rows=2000, t_done=21.0)
    assert one["window_s"] == 11.0 and one["points_per_s"] == pytest.approx(2000 / 11)
    assert one["lag_s"] == 1.0 and one["offered_per_s"] == pytest.approx(2000 / 10) and one["waves"] == 1
    later = {"wave": 2, "t_start": 25.0, "t_first": 30.0, "t_last": 40.0, "reports": 1000}
    two = sc.ingest_figures([run, later], rows=2000, t_done=42.0)
    # Wave 1 counts to wave 2's first start (25 - 10), wave 2 to the end (42 - 30); the gap between is not counted.
    assert two["window_s"] == 27.0 and two["waves"] == 2 and two["lag_s"] == 2.0
    assert two["offered_per_s"] == pytest.approx(2000 / 20)


def test_small_helpers():
    assert sc.parse_ints("16,64, 256") == [16, 64, 256]
    with pytest.raises(argparse.ArgumentTypeError):
        sc.parse_ints("16,0")
    assert sc.spread([]) == {"n": 0} and sc.spread([1.0, 3.0, 2.0]) == {"n": 3, "median": 2.0, "max": 3.0}
    assert sc.verdict("x", 12.0, 20.0, False, "us").endswith(": yes")
    assert sc.verdict("x", 4000.0, 5000.0, True, "points/s").endswith(": no")
    assert "not measured" in sc.verdict("x", None, 3.0, False, "s")
    assert math.isfinite(sc.mem_available_gib()) and sc.mem_available_gib() > 0
    assert set(sc._memory_mb()) <= {"rss_mb", "uss_mb"}


def test_starts_figures_count_new_workers_gaps_and_cpu_per_run():
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def run(pid, t, start_s, end_s):
        return {"metric.pid": pid, "metric.t": t, "started_at": t0 + timedelta(seconds=start_s),
                "finished_at": t0 + timedelta(seconds=end_s)}

    runs = [run(1, 10.0, 0, 0.1), run(1, 10.5, 0.4, 0.5), run(2, 11.0, 0.9, 1.0), run(2, 11.2, 1.9, 2.0)]
    got = sc.starts_figures(runs, [run(1, 5.0, 0, 1)], {"driver": 0.02, "machine": 0.4}, call_s=2.5)
    assert got["span_s"] == 2.0 and got["runs_per_s"] == 2.0 and got["call_s"] == 2.5
    assert got["workers"] == 2 and got["new_workers"] == 1  # pid 2 was not up in the warm-up
    assert got["gap_ms"] == pytest.approx(350.0)  # gaps 0.5 s and 0.2 s
    assert got["cpu_ms"] == pytest.approx({"driver": 5.0, "machine": 100.0})
    one = sc.starts_figures(runs[:1], [], {"driver": 0.0, "machine": 0.0}, call_s=1.0)
    assert one["gap_ms"] is None and one["new_workers"] == 1
    cpu = sc.cpu_seconds()
    assert set(cpu) == {"driver", "machine"} and 0 < cpu["driver"] <= cpu["machine"]


def test_verdicts_name_how_the_256_case_ran():
    dash = {"load_s": {"n": 3, "median": 0.1, "max": 0.2}, "curve_s": {"n": 0}, "errors": []}
    out = {"ingest": [{"store": "postgresql", "runs": 256, "concurrent": 64, "how": "4 barrier waves of 64 concurrent",
                       "points_per_s": 6000.0, "dashboard": dash}],
           "starts": [{"gpus": 0, "max_runs_per_worker": 8, "warm": False, "error": "boom"},
                      {"gpus": 16, "max_runs_per_worker": 8, "warm": True, "runs_per_s": 60.0}]}
    lines = sc.verdicts(out)
    assert "(as 4 barrier waves of 64 concurrent)" in lines[0] and lines[0].endswith("yes")
    assert lines[1].startswith("(d)") and lines[1].endswith("yes")
    assert "0.1 CPU per run" in lines[2] and "cold Ray" in lines[2] and "not measured" in lines[2]
    assert "16 logical GPUs" in lines[3] and "warm Ray" in lines[3] and lines[3].endswith("yes")
