"""A driver killed mid-wave resumes without re-running finished cells; one driver per study (the study lease).

The lease tests need no Ray. The end-to-end ones run `wavesweep run` as subprocesses in sessions of their own, so a
kill -9 of the process group takes the driver's local Ray down with it, as a crash would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from orchestrator.errors import SchemaOutOfDate
from orchestrator.execution.lease import LeaseLost, StudyBusy, StudyLease
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import REPO, insert_old_study, synthetic_spec, write_spec

HOST = socket.gethostname()


@pytest.fixture
def store(store_url):
    db = Store(store_url)
    yield db
    db.close()


def open_toy(store: Store) -> int:
    return store.open_study(parse_spec(synthetic_spec()))


# --- the lease, without Ray ------------------------------------------------------------------------------------------

def test_a_live_lease_refuses_a_second_driver_and_an_expired_one_is_taken_over(store):
    study_id = open_toy(store)
    assert store.take_lease(study_id, "gpu-node-7:4242:abcd1234", ttl_s=60)  # another machine's driver
    with pytest.raises(StudyBusy) as refused:
        StudyLease(store, study_id, "toy").__enter__()
    message = str(refused.value)
    assert "study 'toy'" in message and "is being run by another driver (host gpu-node-7, pid 4242), since " in message
    lease = store.lease(study_id)
    assert lease["until"].strftime("%Y-%m-%d %H:%M:%S UTC") in message and " UTC; its lease runs until " in message
    assert store.lease(study_id)["driver"] == "gpu-node-7:4242:abcd1234"  # untouched

    # That driver died: its lease is not renewed and expires; the next driver takes the study over.
    store.release_lease(study_id, "gpu-node-7:4242:abcd1234")
    assert store.take_lease(study_id, "gpu-node-7:4242:abcd1234", ttl_s=-1)
    with StudyLease(store, study_id, "toy") as mine:
        assert store.lease(study_id)["driver"] == mine.driver and mine.driver.startswith(f"{HOST}:{os.getpid()}:")
        with StudyLease(store, study_id, "toy") as nested:  # re-entrant: the CLI and run_study both take it
            assert nested is mine
        assert store.lease(study_id)["driver"] == mine.driver
    assert store.lease(study_id) is None  # released on exit


def test_a_dead_driver_on_this_host_is_taken_over_at_once_a_live_one_is_not(store):
    study_id = open_toy(store)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert store.take_lease(study_id, f"{HOST}:{dead.pid}:deadbeef", ttl_s=600)
    with StudyLease(store, study_id, "toy") as mine:
        assert store.lease(study_id)["driver"] == mine.driver
    alive = f"{HOST}:{os.getppid()}:cafecafe"  # a live process of this host
    assert store.take_lease(study_id, alive, ttl_s=600)
    with pytest.raises(StudyBusy, match=f"host {HOST}, pid {os.getppid()}"):
        StudyLease(store, study_id, "toy").__enter__()


def test_the_lease_is_renewed_and_a_driver_that_lost_it_stops(store):
    study_id = open_toy(store)
    with StudyLease(store, study_id, "toy", ttl_s=0.8) as mine:
        time.sleep(1.5)  # past the first TTL: renewed meanwhile (every ttl/4)
        assert store.lease(study_id)["driver"] == mine.driver
        mine.check()
        # Another driver took it over (as after a renewal failed for longer than the TTL).
        assert store.take_lease(study_id, "other:1:x", ttl_s=60, take_from=mine.driver)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and mine._lost is None:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="took the study over; stopping so that no run is executed twice"):
            mine.check()
    assert store.lease(study_id)["driver"] == "other:1:x"  # a driver that lost the lease does not release it


def test_upgrade_from_0003_adds_the_lease_and_attempt_log_and_keeps_every_row(store_url):
    from alembic import command

    from orchestrator.store.engine import alembic_config, head_revision, make_engine, upgrade

    engine = make_engine(store_url)
    command.upgrade(alembic_config(engine), "0003")
    with engine.begin() as conn:
        insert_old_study(conn)
        conn.execute(text("INSERT INTO runs (study_id, wave_id, cell_key, params, seed, status, attempts, created_at, "
                          "started_at) VALUES (1, 1, 'k1', '{\"x\": 1}', 0, 'RUNNING', 1, CURRENT_TIMESTAMP, "
                          "CURRENT_TIMESTAMP)"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=f"has schema 0003, this wavesweep needs {head_revision(engine)}"):
        Store(store_url)
    upgrade(make_engine(store_url))
    db = Store(store_url)
    (run,) = db.runs("old")
    assert (run["cell_key"], run["status"], run["attempts"]) == ("k1", "RUNNING", 1)
    # 0005, on a table with rows (SQLite must add the columns in place: foreign keys forbid rebuilding it).
    assert run["backfill"] is False
    assert {k: db.waves("old")[0][k] for k in ("idle_s", "deadline_at")} == {"idle_s": None, "deadline_at": None}
    assert db.lease(1) is None and db.attempt_logs("old") == {}
    with StudyLease(db, 1, "old"):
        assert db.lease(1)["driver"].startswith(HOST)
    # The run a pre-0004 driver left RUNNING: its attempt is logged as the dead driver's when the next one starts.
    db.mark_running("k1", host="h", device="cpu", started_at=run["started_at"])
    db.finish_run("k1", RunResult(status=RunStatus.COMPLETE, metrics={"loss": 1.0}))
    log = db.attempt_logs("old")["k1"]
    assert [(a["attempt"], a["status"], a["error_kind"]) for a in log] == [(1, "RUNNING", "driver_died"),
                                                                           (2, "COMPLETE", None)]
    db.close()


# --- end to end: kill -9 mid-wave, two drivers at once -------------------------------------------------------------

def start_driver(spec_path: Path, url: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(spec_path), "--store", url],
                            cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "COLUMNS": "250"})


def slow_spec(tmp_path: Path, study: str) -> dict:
    """8 runs in 2 waves of 4, all 4 at once (0.5 CPU each); x=2 runs take 6 s more; every start is logged."""
    spec = synthetic_spec(study=study, seeds=[0, 1], resources={"cpus_per_run": 0.5},
                          strategy={"mode": "grid", "runs_per_wave": 4})
    spec["factors"] = {"x": {"levels": [1, 2]}, "y": {"levels": [0.1, 0.2]}}
    spec["fixed"].update(sleep_s=1.0, slow_if={"x": 2}, slow_s=6, log_starts=str(tmp_path / "starts.log"),
                         surface={"x": 1.0, "y": -2.0})
    spec["artifacts"] = str(tmp_path / "artifacts")
    return spec


def executions(tmp_path: Path) -> Counter:
    return Counter(line.split()[0] for line in (tmp_path / "starts.log").read_text().splitlines())


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := predicate()) is not None:
            return value
        assert proc.poll() is None, f"the driver exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_a_driver_killed_mid_wave_resumes_without_rerunning_finished_cells(tmp_path, store_url):
    spec_path = write_spec(tmp_path / "slow.yaml", slow_spec(tmp_path, "slow"))
    Store(store_url).close()
    log = tmp_path / "first.log"
    first = start_driver(spec_path, store_url, log)
    reader = Store(store_url, writer=False)

    def mid_wave():
        if reader.study_id("slow") is None:
            return None
        runs = reader.runs("slow")
        states = Counter(r["status"] for r in runs)
        return runs if states["COMPLETE"] >= 1 and states["RUNNING"] >= 1 else None

    try:
        wait_for(mid_wave, 240, "a wave with COMPLETE and RUNNING runs", first, log)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its local Ray, as a crash or an OOM kill would
        first.wait(timeout=60)
    before = {r["cell_key"]: r for r in reader.runs("slow")}
    reader.close()
    done = {k for k, r in before.items() if r["status"] == "COMPLETE"}
    running = {k for k, r in before.items() if r["status"] == "RUNNING"}
    assert done and running
    started_before = executions(tmp_path)

    second_log = tmp_path / "second.log"
    second = start_driver(spec_path, store_url, second_log)
    assert second.wait(timeout=400) == 0, second_log.read_text()[-3000:]
    out = second_log.read_text()
    assert "resume of wave 1" in out and "Ran " in out

    db = Store(store_url)
    after = {r["cell_key"]: r for r in db.runs("slow")}
    logs = db.attempt_logs("slow")
    db.close()
    assert len(after) == 8 and {r["status"] for r in after.values()} == {"COMPLETE"}
    for key in done:  # untouched: same row, same timestamps, same result
        for field in ("run_id", "started_at", "finished_at", "attempts", "metric.loss", "host"):
            assert after[key][field] == before[key][field], (key, field)
    for key in running:  # requeued by the second driver, and completed
        assert after[key]["run_id"] == before[key]["run_id"] and after[key]["attempts"] == 2
        assert after[key]["started_at"] > before[key]["started_at"]
        assert [a["error_kind"] for a in logs[key]] == ["driver_died", None]
    # Nothing ran twice: a cell that completed under the first driver was never executed again; a cell that was
    # running when it died was executed once more; every other cell once, after any start the first driver had not
    # yet recorded (a worker starts its run as soon as its "started" event reaches the inbox, which the driver
    # drains every 0.5 s: a kill in that window cuts off a start the store never saw, like a RUNNING one).
    counts = executions(tmp_path)
    assert set(counts) == set(after)
    for key in after:
        expected = 1 if key in done else started_before[key] + 1
        assert counts[key] == expected, (key, after[key]["param.x"], counts[key], started_before[key])
        assert key in done or key in running or started_before[key] <= 1


@pytest.mark.slow
def test_two_drivers_of_the_same_study_at_once_one_runs_the_other_is_refused(tmp_path, store_url):
    spec_path = write_spec(tmp_path / "slow.yaml", slow_spec(tmp_path, "twice"))
    Store(store_url).close()  # the schema; the study itself is created by whichever driver comes first
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    drivers = [start_driver(spec_path, store_url, log) for log in logs]
    codes = [d.wait(timeout=400) for d in drivers]
    outputs = [log.read_text() for log in logs]
    assert sorted(codes) == [0, 1], outputs
    refused = outputs[codes.index(1)]
    assert "error: study 'twice' in" in refused and "is being run by another driver (host " in refused
    assert ", since " in refused and "its lease runs until " in refused
    assert "Ran 8 runs" in outputs[codes.index(0)]

    db = Store(store_url)
    runs = db.runs("twice")
    assert db.lease(db.study_id("twice")) is None  # released by the driver that finished
    db.close()
    assert len(runs) == 8 and len({r["cell_key"] for r in runs}) == 8
    assert {(r["status"], r["attempts"]) for r in runs} == {("COMPLETE", 1)}
    assert set(executions(tmp_path).values()) == {1} and len(executions(tmp_path)) == 8
