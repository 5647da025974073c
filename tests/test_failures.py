"""Each failure kind through real Ray worker processes: its status, its retries, what the store records.

One local Ray (4 logical CPUs, 1 logical GPU) serves the whole module. The synthetic experiment's knobs make runs
die (SIGKILL), freeze (SIGSTOP), run out of memory, raise, diverge or run long; ``log_starts`` counts executions.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from orchestrator.execution.driver import run_study
from orchestrator.execution.executor import RayExecutor
from orchestrator.execution.retry import RULES
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import REPO
from tests.test_cli import wavesweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executor():
    with RayExecutor(num_cpus=4, num_gpus=1) as ex:
        yield ex


def run_toy(executor, url: str, tmp_path, levels: list[int], fixed: dict, resources: dict):
    """One wave over x in ``levels`` (seed 0); returns {x: run record}, {x: attempt log}, {x: [(attempt, pid)]}."""
    starts = tmp_path / "starts.log"
    spec = parse_spec({
        "study": "failures", "experiment": "experiments.synthetic:run",
        "fixed": {"surface": {"x": 1.0}, "steps": 2, "log_starts": str(starts), **fixed},
        "factors": {"x": {"levels": levels}}, "response": {"metric": "loss"},
        "strategy": {"mode": "grid", "runs_per_wave": len(levels)},
        "resources": {"gpus_per_run": 0, "cpus_per_run": 1, **resources},
        "artifacts": str(tmp_path / "artifacts"),
    })
    store = Store(url)
    run_study(spec, store, executor)
    runs = {r["param.x"]: r for r in store.runs("failures")}
    logs = store.attempt_logs("failures")
    store.close()
    by_key = {r["cell_key"]: x for x, r in runs.items()}
    executions: dict[int, list[tuple[int, int]]] = {x: [] for x in runs}
    for line in starts.read_text().splitlines():
        key, attempt, pid = line.split()
        executions[by_key[key]].append((int(attempt), int(pid)))
    return runs, {x: logs.get(r["cell_key"], []) for x, r in runs.items()}, executions


def assert_gone(pids: list[int], within_s: float = 30.0) -> None:
    """Every process in ``pids`` is dead (killed, not left frozen or running), polling up to ``within_s``."""
    deadline = time.monotonic() + within_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        if alive:
            time.sleep(0.2)
    assert not alive, f"worker processes still alive: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie is dead, only not reaped yet
    except FileNotFoundError:
        return False


def test_a_killed_worker_is_retried_and_fails_as_worker_died_past_max_retries(executor, sqlite_url, tmp_path):
    # x=1 is SIGKILLed on its first attempt only, x=2 on every attempt; x=3 and x=4 are fine.
    runs, logs, execs = run_toy(executor, sqlite_url, tmp_path, [1, 2, 3, 4],
                                {"kill_if": [{"x": 1, "until_attempt": 1}, {"x": 2}]}, {"max_retries": 2})
    assert (runs[1]["status"], runs[1]["attempts"], runs[1]["error_kind"]) == ("COMPLETE", 2, None)
    assert [a["error_kind"] for a in logs[1]] == ["worker_died", None]
    assert logs[1][0]["status"] == "FAILED" and "WorkerCrashedError" in logs[1][0]["error_message"]
    assert (runs[2]["status"], runs[2]["attempts"], runs[2]["error_kind"]) == ("FAILED", 3, "worker_died")
    assert [a["error_kind"] for a in logs[2]] == ["worker_died"] * 3
    assert all(a["started_at"] is not None for a in logs[1] + logs[2])  # every attempt's start is recorded
    assert [a for a, _ in execs[2]] == [1, 2, 3] and len({pid for _, pid in execs[2]}) == 3
    # The rest of the wave is unaffected.
    assert [(runs[x]["status"], runs[x]["attempts"]) for x in (3, 4)] == [("COMPLETE", 1)] * 2

    status = wavesweep("status", "failures", "--store", sqlite_url)
    assert status.returncode == 0, status.stderr
    assert f"FAILED run {runs[2]['run_id']} (worker_died, 3 attempts)" in status.stdout
    assert f"COMPLETE run {runs[1]['run_id']} after 2 attempts (earlier: worker_died)" in status.stdout


def test_an_exception_fails_once_and_a_nan_loss_diverges_without_retry(executor, sqlite_url, tmp_path):
    runs, logs, execs = run_toy(executor, sqlite_url, tmp_path, [1, 2, 3],
                                {"fail_if": {"x": 1}, "diverge_if": {"x": 2}}, {"max_retries": 2})
    assert (runs[1]["status"], runs[1]["attempts"], runs[1]["error_kind"]) == ("FAILED", 1, "exception")
    assert "RuntimeError: fail_if matched" in runs[1]["error_message"]
    store = Store(sqlite_url)
    with store.session() as s:
        from orchestrator.store.models import RunModel

        assert "Traceback (most recent call last)" in s.get(RunModel, runs[1]["run_id"]).traceback
    store.close()
    assert (runs[2]["status"], runs[2]["attempts"], runs[2]["error_kind"]) == ("DIVERGED", 1, "diverged")
    assert (runs[3]["status"], runs[3]["attempts"]) == ("COMPLETE", 1)
    assert [len(execs[x]) for x in (1, 2, 3)] == [1, 1, 1]
    assert logs[1][0]["status"] == "FAILED" and logs[2][0]["status"] == "DIVERGED"


def test_a_run_past_its_timeout_is_killed_and_its_gpu_goes_to_the_next_run(executor, sqlite_url, tmp_path):
    # One logical GPU, one run per GPU: the quick run x=2 waits for the slot that the slow x=1 holds.
    runs, _logs, execs = run_toy(executor, sqlite_url, tmp_path, [1, 2],
                                {"slow_if": {"x": 1}, "slow_s": 300}, {"gpus_per_run": 1, "timeout_s": 3})
    slow, quick = runs[1], runs[2]
    assert (slow["status"], slow["error_kind"], slow["attempts"]) == ("TIMEOUT", "timeout", 1)
    assert "resources.timeout_s = 3 s" in slow["error_message"]
    assert slow["wall_s"] == pytest.approx(3, abs=2.5) and slow["metric.gpu_s"] == pytest.approx(slow["wall_s"])
    assert (quick["status"], quick["attempts"]) == ("COMPLETE", 1)
    # The freed GPU went to the quick run, within the same wave, after the timeout.
    assert quick["device"] == slow["device"] == "cuda:0"
    assert quick["started_at"] >= slow["started_at"] + timedelta(seconds=3)
    assert quick["started_at"] >= slow["finished_at"] - timedelta(seconds=1)
    assert_gone([pid for _, pid in execs[1]])  # force-cancelled: the worker process was killed


def test_a_frozen_worker_is_lost_by_its_heartbeat_then_retried_or_failed(executor, sqlite_url, tmp_path):
    # SIGSTOP freezes the whole process, heartbeat thread included; Ray sees nothing wrong.
    runs, logs, execs = run_toy(executor, sqlite_url, tmp_path, [1, 2, 3],
                                {"stop_if": [{"x": 1, "until_attempt": 1}, {"x": 2}]},
                                {"max_retries": 1, "heartbeat_grace_s": 3})
    assert (runs[1]["status"], runs[1]["attempts"]) == ("COMPLETE", 2)
    assert logs[1][0]["error_kind"] == "lost" and "no heartbeat" in logs[1][0]["error_message"]
    assert (runs[2]["status"], runs[2]["attempts"], runs[2]["error_kind"]) == ("FAILED", 2, "lost")
    assert (runs[3]["status"], runs[3]["attempts"]) == ("COMPLETE", 1)  # heartbeats keep a healthy run alive
    assert_gone([pid for x in (1, 2) for attempt, pid in execs[x] if (x, attempt) != (1, 2)])


def test_oom_is_retried_alone_on_a_whole_gpu(executor, sqlite_url, tmp_path):
    # Two runs share the one GPU (0.5 each); x=1 runs out of memory on its first attempt.
    runs, logs, _execs = run_toy(executor, sqlite_url, tmp_path, [1, 2],
                                {"oom_if": {"x": 1, "until_attempt": 1}, "slow_if": {"x": 2}, "slow_s": 3,
                                 "report_resources": True},
                                {"gpus_per_run": 0.5})
    oom, neighbour = runs[1], runs[2]
    assert (oom["status"], oom["attempts"]) == ("COMPLETE", 2)
    assert [(a["error_kind"], a["gpus"]) for a in logs[1]] == [("oom", 0.5), (None, 1.0)]
    assert "OutOfMemoryError: CUDA out of memory" in logs[1][0]["error_message"]
    assert oom["metric.assigned_gpu"] == 1.0 and neighbour["metric.assigned_gpu"] == 0.5
    # Alone: the retry waited for the neighbour to free its half of the GPU.
    first_start = logs[1][0]["started_at"]
    assert first_start < neighbour["finished_at"].isoformat()  # the first attempt shared the GPU
    assert oom["started_at"] >= neighbour["finished_at"] - timedelta(seconds=0.5)
    assert oom["metric.gpu_s"] == pytest.approx(oom["wall_s"])  # a whole GPU is what the retry cost


def test_oom_past_max_retries_is_recorded_as_oom_and_alone_without_gpus_means_a_whole_node(executor, sqlite_url,
                                                                                             tmp_path):
    # No GPU in the spec: x=1 runs out of memory on every attempt, x=3 on its first only.
    runs, logs, execs = run_toy(executor, sqlite_url, tmp_path, [1, 2, 3],
                                {"oom_if": [{"x": 1}, {"x": 3, "until_attempt": 1}], "report_resources": True},
                                {"max_retries": 1})
    assert (runs[1]["status"], runs[1]["attempts"], runs[1]["error_kind"]) == ("OOM", 2, "oom")
    assert [a["error_kind"] for a in logs[1]] == ["oom", "oom"] and len(execs[1]) == 2
    assert runs[2]["metric.assigned_cpu"] == 1.0
    # Its retry took every CPU of the node (4 here), so nothing ran beside it.
    assert (runs[3]["status"], runs[3]["attempts"], runs[3]["metric.assigned_cpu"]) == ("COMPLETE", 2, 4.0)


def test_the_rules_table_is_documented():
    design = (REPO / "docs" / "design.md").read_text()
    for kind, rule in RULES.items():
        assert f"| `{kind}` |" in design and rule.status.value in design


def test_retry_rules():
    from orchestrator.execution.retry import alone_request, decide

    assert decide("worker_died", attempt=1, max_retries=2).retry and decide("lost", 2, 2).retry
    assert not decide("worker_died", attempt=3, max_retries=2).retry  # 1 attempt + 2 retries
    assert not any(decide(kind, 1, 2).retry for kind in ("exception", "bad_result", "diverged", "timeout", None, "?"))
    oom = decide("oom", 1, 2)
    assert oom.retry and oom.alone and not decide("oom", 1, 0).retry
    assert alone_request(0.5, 2, 16) == (1.0, 2) and alone_request(1, 2, 16) == (1.0, 2)
    assert alone_request(1.5, 2, 16) == (2.0, 2) and alone_request(0.0, 2, 16) == (0.0, 16)
