"""The GPU-hours budget counts the attempts a run made before its last one (a worker died, it ran out of memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.run_record import RunResult, RunStatus, run_cost_s, spent_hours
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.strategies import Grid
from tests.conftest import synthetic_spec

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def recorded(store_url):
    """A study whose first wave's runs were retried in every way the store records, with explicit times."""
    spec = parse_spec(synthetic_spec("budget", strategy={"mode": "grid", "runs_per_wave": 4, "max_gpu_hours": 1.0}))
    store = Store(store_url)
    study_id = store.open_study(spec)
    plan = Grid(spec).next_wave(store.known_keys(study_id), 4)
    store.add_wave(study_id, plan)
    retried, waiting, running, restarted = (c.key for c in plan.cells)

    # Half a GPU for 30 min, the worker dies; the retry on a whole GPU finishes after 20 min.
    store.mark_running(retried, host="n1", device="cuda:0", started_at=at(0), gpus=0.5)
    store.retry_run(retried, RunResult(status=RunStatus.FAILED, metrics={}, finished_at=at(1800),
                                       error_kind="worker_died", error_message="ActorDiedError"))
    store.mark_running(retried, host="n1", device="cuda:1", started_at=at(1900), gpus=1.0)
    store.finish_run(retried, RunResult(status=RunStatus.COMPLETE, metrics={"loss": 0.5, "gpu_s": 1200.0,
                                                                             "wall_s": 1200.0},
                                        started_at=at(1900), finished_at=at(3100), wall_s=1200.0))
    # Two GPUs for 15 min, out of memory; its retry has not started: no final cost yet.
    store.mark_running(waiting, host="n2", device="cuda:0,1", started_at=at(0), gpus=2.0)
    store.retry_run(waiting, RunResult(status=RunStatus.OOM, metrics={}, finished_at=at(900), error_kind="oom"))
    # No GPU (a CPU slot) for 60 s, lost heartbeat; its retry is running now.
    store.mark_running(running, host="n3", device="cpu", started_at=at(0))
    store.retry_run(running, RunResult(status=RunStatus.FAILED, metrics={}, finished_at=at(60), error_kind="lost"))
    store.mark_running(running, host="n3", device="cpu", started_at=at(100))
    # The driver died while it ran; the next driver restarted it ten hours later.
    store.mark_running(restarted, host="n4", device="cuda:0", started_at=at(0), gpus=1.0)
    store.mark_running(restarted, host="n4", device="cuda:0", started_at=at(36000), gpus=1.0)
    runs = {r["cell_key"]: r for r in store.runs(spec.study)}
    store.close()
    return spec, runs, (retried, waiting, running, restarted)


def test_each_run_record_carries_the_gpu_seconds_of_its_earlier_attempts(recorded):
    _, runs, (retried, waiting, running, restarted) = recorded
    assert runs[retried]["earlier_attempts_s"] == pytest.approx(1800 * 0.5)  # the last attempt is in metric.gpu_s
    assert runs[waiting]["earlier_attempts_s"] == pytest.approx(900 * 2.0)  # PENDING: every ended attempt
    assert runs[running]["earlier_attempts_s"] == pytest.approx(60)  # no GPU: wall time alone
    # Its end is unknown (the driver noticed nothing until it came back): ten hours counted would be invented.
    assert runs[restarted]["earlier_attempts_s"] == 0.0
    assert run_cost_s(runs[retried]) == pytest.approx(900 + 1200)
    assert run_cost_s(runs[waiting]) == pytest.approx(1800)  # only earlier attempts: still counted
    assert run_cost_s(runs[restarted]) is None


def test_spent_hours_counts_every_attempt_and_the_mean_only_finished_runs(recorded):
    _, runs, _ = recorded
    spent, per_run = spent_hours(list(runs.values()))
    assert spent == pytest.approx((900 + 1200 + 1800 + 60) / 3600)
    assert per_run == pytest.approx((900 + 1200) / 3600)  # the one run that reported its cost, with its retry


def test_budget_stop_stops_on_the_gpu_hours_of_earlier_attempts(recorded):
    spec, runs, _ = recorded
    # The final attempts alone cost 1200 s = 0.33 GPU-h, far under max_gpu_hours 1.
    assert Grid(spec).budget_stop(list(runs.values())) == (
        "GPU-hours budget spent: 1.1 GPU-h used, max_gpu_hours 1")


def test_budget_stop_predicts_the_next_wave_with_the_retries_included(recorded):
    spec, runs, _ = recorded
    looser = spec.model_copy(update={"strategy": spec.strategy.model_copy(update={"max_gpu_hours": 3.0})})
    cells = Grid(looser).next_wave(set(runs), 4).cells
    # 4 runs at 0.583 GPU-h (one finished run: 2100 s with its failed attempt) need 2.33, and 1.9 of 3 are left.
    assert Grid(looser).budget_stop(list(runs.values()), cells) == (
        "the next wave would need ~2.33 GPU-h (4 runs at 0.583 GPU-h each), 1.9 left of max_gpu_hours 3")


def test_the_dashboard_counts_the_gpu_hours_the_budget_counts(recorded, store_url):
    from dashboard.data import load_study, studies
    from dashboard.reader import open_readonly

    spec, runs, _ = recorded
    engine = open_readonly(store_url)
    try:
        row = studies(engine).set_index("study").loc[spec.study]
        shown = load_study(engine, spec.study).runs.set_index("cell_key")["cost_s"]
    finally:
        engine.dispose()
    assert row["gpu_hours"] == pytest.approx(spent_hours(list(runs.values()))[0])
    for key, run in runs.items():
        expected = run_cost_s(run)
        assert (shown[key] != shown[key]) if expected is None else shown[key] == pytest.approx(expected), key
