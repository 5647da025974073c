"""Buffered reports on real Ray (``ray_tasks.py``): every point of a run arrives, in order, with its result; a curve
longer than ``resources.max_curve_points`` is thinned evenly and keeps its last point; a worker killed mid-run loses
at most the batch it had not sent yet, never a recorded point."""

from __future__ import annotations

import pytest

from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.execution.ray_tasks import FLUSH_S
from orchestrator.spec import parse_spec
from orchestrator.store import Store

pytestmark = pytest.mark.slow


def _study(name: str, tmp_path, levels: list[int], fixed: dict, resources: dict | None = None):
    return parse_spec({
        "study": name, "experiment": "experiments.synthetic:run",
        "fixed": {"surface": {"x": 1.0}, "curve_as": "loss", **fixed},
        "factors": {"x": {"levels": levels}}, "response": {"metric": "loss"},
        "strategy": {"mode": "grid", "runs_per_wave": len(levels), "prune": False},
        "resources": {"gpus_per_run": 0, "cpus_per_run": 1, **(resources or {})},
        "artifacts": str(tmp_path / "artifacts"),
    })


def _steps(store: Store, key: str) -> list[int]:
    return [step for step, name, _ in store.curve(key) if name == "loss"]


def test_every_point_arrives_in_order_and_a_long_curve_is_thinned_keeping_its_last_point(sqlite_url, tmp_path):
    # Two runs of 3,000 reports as fast as a loop goes: many batches each (1,000 points or 0.5 s), the last one
    # carried back with the result.
    store = Store(sqlite_url)
    with RayExecutor(num_cpus=2, num_gpus=0) as executor:
        run_study(_study("all", tmp_path, [1, 2], {"steps": 3000}, {"max_curve_points": 5000}), store, executor)
        run_study(_study("capped", tmp_path, [1, 2], {"steps": 3000}, {"max_curve_points": 100}), store, executor)
    for run in store.runs("all"):
        assert run.status == "COMPLETE" and _steps(store, run["cell_key"]) == list(range(1, 3001))
    for run in store.runs("capped"):
        steps = _steps(store, run["cell_key"])
        assert run.status == "COMPLETE" and len(steps) <= 100 and steps[0] == 1 and steps[-1] == 3000
        gaps = {b - a for a, b in zip(steps[:-2], steps[1:-1])}
        assert len(gaps) == 1, gaps  # evenly spaced (the last point aside)
    store.close()


def test_a_worker_killed_mid_run_loses_at_most_its_unsent_batch(sqlite_url, tmp_path):
    # 40 steps of 0.1 s; SIGKILLed right after reporting step 30, with no retry: the curve stored is steps 1..m,
    # every one of them, where the points after m (at most FLUSH_S of reports, plus the flusher's delay on a busy
    # machine) were still in the worker's buffer.
    store = Store(sqlite_url)
    spec = _study("killed", tmp_path, [1, 2], {"steps": 40, "sleep_s": 4.0, "kill_if": {"x": 1}, "kill_at": 30},
                  {"max_retries": 0})
    with RayExecutor(num_cpus=2, num_gpus=0) as executor:
        run_study(spec, store, executor)
    runs = {r["param.x"]: r for r in store.runs("killed")}
    assert (runs[1].status, runs[1]["error_kind"]) == ("FAILED", "worker_died")
    steps = _steps(store, runs[1]["cell_key"])
    assert steps == list(range(1, len(steps) + 1)) and 30 - 3 * FLUSH_S / 0.1 <= len(steps) <= 30, steps
    assert runs[2].status == "COMPLETE" and _steps(store, runs[2]["cell_key"]) == list(range(1, 41))
    store.close()


def _kill_inbox_when(store: Store, study: str, keys_reporting: int, killed: list[int]) -> None:
    """SIGKILL the inbox actor's process once ``keys_reporting`` runs of ``study`` have stored a point (its batches
    then are in flight), as the kernel's OOM killer would."""
    import os
    import signal
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = store.runs(study)
        if sum(bool(_steps(store, r["cell_key"])) for r in runs) >= keys_reporting:
            break
        time.sleep(0.05)
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::Inbox"):
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
        except (OSError, ValueError):
            continue


def test_runs_outlive_their_inbox_and_later_runs_get_a_new_one(sqlite_url, tmp_path):
    # Two runs of 40 steps over 4 s on 2 CPUs, a third queued behind them. The inbox dies once both have stored a
    # point: their later batches go back with their results (Outbox), so each stores its last point and at most the
    # batches the dead inbox held undrained are missing (about a drain interval of reports); the driver drops the
    # dead inbox and the third run, launched after, reports to a new one, every point. Nobody is killed as lost.
    import threading

    store = Store(sqlite_url)
    spec = _study("orphaned", tmp_path, [1, 2, 3], {"steps": 40, "sleep_s": 4.0}, {"heartbeat_grace_s": 120})
    killed: list[int] = []
    with RayExecutor(num_cpus=2, num_gpus=0) as executor:
        killer = threading.Thread(target=lambda: _kill_inbox_when(Store(sqlite_url), "orphaned", 2, killed))
        killer.start()
        run_study(spec, store, executor)
        killer.join(timeout=150)
    assert len(killed) == 1
    runs = {r["param.x"]: r for r in store.runs("orphaned")}
    logs = store.attempt_logs("orphaned")
    for r in runs.values():  # one attempt each, its start logged once (from the result where the inbox was dead)
        assert r.status == "COMPLETE" and r["attempts"] == 1, r
        assert len(logs[r["cell_key"]]) == 1 and logs[r["cell_key"]][0]["started_at"] is not None, logs
    first_two = [_steps(store, runs[x]["cell_key"]) for x in (1, 2)]
    for steps in first_two:
        assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 40 and len(steps) >= 40 - 20, steps
    assert _steps(store, runs[3]["cell_key"]) == list(range(1, 41))
    store.close()


def test_an_outbox_whose_inbox_died_keeps_every_event_for_the_result():
    # The flusher's put to a dead inbox fails: the run is not held up at its start, and that batch and every later
    # one stay buffered, in order, for the result (which the driver reads whatever became of the inbox).
    import threading
    import time

    import ray

    from orchestrator.execution.ray_tasks import Inbox, Outbox

    with RayExecutor(num_cpus=1, num_gpus=0):
        inbox = Inbox.options(num_cpus=0).remote()
        ray.get(inbox.node.remote())
        ray.kill(inbox)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(inbox.node.remote())
        outbox = Outbox(inbox, "k", 1)
        got: list[bool] = []
        start = threading.Thread(target=lambda: got.append(outbox.add("started", {"n": 0})), daemon=True)
        start.start()
        start.join(timeout=30)
        assert got == [False], "the run's start waited on a dead inbox"
        for step in (1, 2, 3):
            outbox.add("progress", (step, {"loss": 1.0}))
        outbox.wake.set()
        time.sleep(2 * FLUSH_S)  # the flusher's turn comes and goes: nothing sent, nothing dropped
        tail = outbox.close()
    assert tail == [("started", {"n": 0})] + [("progress", (step, {"loss": 1.0})) for step in (1, 2, 3)]
    assert outbox.sent == 0 and outbox.unreachable
