"""`wavesweep run` fails a study that ended without a COMPLETE run (exit status 3, so that `ray job submit` reports
the job FAILED), and a greedy study whose start point failed says so and why. No Ray: the store is filled through the
Store API, and where a study has to run, `run_study` is replaced by what it records for such a study."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.cells import WavePlan, make_cell
from orchestrator.execution.outcome import NO_RESULT, Outcome, exit_code
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from tests.conftest import synthetic_spec, write_spec

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ERROR = "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: fail_if matched [rank0]"
GREEDY = {
    "study": "climb", "experiment": "experiments.synthetic:run",
    "fixed": {"surface": {"a": 1.0}, "noise_sd": 0.01},
    "factors": {"a": {"levels": [0, 1]}, "b": {"levels": [0, 1, 2]}, "c": {"levels": ["x", "y"]}},
    "response": {"metric": "loss", "goal": "minimize"},
    "strategy": {"mode": "greedy"}, "resources": {"cpus_per_run": 1}, "seeds": [0],
}


def finish(store: Store, cell, status: RunStatus, loss: float | None = None) -> None:
    store.mark_running(cell.key, host="node-1", device="cpu", started_at=T0)
    store.finish_run(cell.key, RunResult(
        status=status, metrics={} if loss is None else {"loss": loss}, started_at=T0,
        finished_at=T0 + timedelta(seconds=5), wall_s=5.0,
        error_kind=None if status == RunStatus.COMPLETE else "exception",
        error_message=None if status == RunStatus.COMPLETE else ERROR))


def test_the_exit_code_of_a_study_is_3_without_a_complete_run(sqlite_url):
    spec = synthetic_spec("failing", seeds=[0])
    store = Store(sqlite_url)
    sid = store.open_study(parse_spec(spec))
    cells = [make_cell("failing", {"x": x, "y": 0.1}, 0) for x in (1, 2)]
    store.add_wave(sid, WavePlan(cells, "full_factorial", "block 1"))
    for cell in cells:
        finish(store, cell, RunStatus.FAILED)
    assert exit_code(store.runs("failing")) == NO_RESULT == 3
    one = make_cell("failing", {"x": 1, "y": 0.2}, 0)
    store.add_wave(sid, WavePlan([one], "full_factorial", "block 2"))
    finish(store, one, RunStatus.COMPLETE, 1.5)
    assert exit_code(store.runs("failing")) == 0  # one result is a result
    store.close()


def test_rerunning_a_finished_study_without_a_complete_run_exits_3(tmp_path, sqlite_url):
    """Every cell of the grid DIVERGED: nothing is left to run (no Ray starts), and there is no result."""
    spec = synthetic_spec("diverged", seeds=[0], strategy={"mode": "grid", "runs_per_wave": 4})
    spec["factors"] = {"x": {"levels": [1, 2]}, "y": {"levels": [0.1, 0.2]}}
    store = Store(sqlite_url)
    sid = store.open_study(parse_spec(spec))
    cells = [make_cell("diverged", {"x": x, "y": y}, 0) for x in (1, 2) for y in (0.1, 0.2)]
    store.add_wave(sid, WavePlan(cells, "full_factorial", "full factorial, block 1 of 1"))
    for cell in cells:
        finish(store, cell, RunStatus.DIVERGED)
    store.close()
    out = CliRunner().invoke(cli.app, ["run", str(write_spec(tmp_path / "d.yaml", spec)), "--store", sqlite_url])
    assert out.exit_code == 3, out.output
    assert "nothing to run" in out.stdout
    assert "error: study diverged ended with no COMPLETE run (4 DIVERGED)" in out.stderr


class FakeRay:
    """Stands in for RayExecutor: records the address it was given."""

    addresses: ClassVar[list[str | None]] = []

    def __init__(self, *, address: str | None = None, num_gpus: int | None = None):
        FakeRay.addresses.append(address)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def check_fits(self, spec) -> None:
        pass  # the stand-in cluster holds any run (the refusal is tests/test_run_refusals.py's)

    def check_artifacts(self, spec) -> None:
        pass  # one node (the refusal is tests/test_artifacts_remote.py's)


def failing_start(spec, store, executor, listener=None) -> Outcome:
    """What run_study records for a greedy study whose experiment raises on every replicate of the start point:
    the strategy's first wave, each run FAILED, then the driver's own stop rule."""
    from orchestrator.execution.driver import stop_reason
    from orchestrator.strategies import create_strategy

    strategy = create_strategy(spec, 1)
    study_id = store.open_study(spec)
    plan = strategy.next_wave(store.known_keys(study_id), 1, [])
    store.add_wave(study_id, plan)
    for cell in plan.cells:
        finish(store, cell, RunStatus.FAILED)
    runs = store.runs(spec.study)
    assert strategy.next_wave(store.known_keys(study_id), 1, runs) is None
    stop = stop_reason(strategy, runs)
    store.stop_study(study_id, stop)
    return Outcome(spec.study, 0, len(plan.cells), 1, strategy.name, stop)


@pytest.fixture
def no_ray(monkeypatch):
    FakeRay.addresses = []
    monkeypatch.setattr("orchestrator.execution.executor.RayExecutor", FakeRay)
    monkeypatch.setattr("orchestrator.execution.driver.run_study", failing_start)


def test_a_greedy_study_whose_start_point_failed_says_why_and_exits_3(tmp_path, sqlite_url, no_ray):
    out = CliRunner().invoke(cli.app, ["run", str(write_spec(tmp_path / "climb.yaml", GREEDY)), "--store", sqlite_url],
                             env={"RAY_ADDRESS": "10.0.0.7:6379"})
    assert out.exit_code == 3, out.output
    assert ("Stopped: the start point (a=0, b=0, c=x) failed: none of its 2 replicates reported loss (2 FAILED; "
            "exception: RuntimeError: fail_if matched [rank0]). Greedy steps are measured against the start point, "
            "so no step can follow") in " ".join(out.stdout.split())
    assert "error: study climb ended with no COMPLETE run (2 FAILED)" in out.stderr
    assert Store(sqlite_url).study_info("climb")["stop_reason"].startswith("the start point (a=0, b=0, c=x) failed")
    assert FakeRay.addresses == ["10.0.0.7:6379"]  # $RAY_ADDRESS, read as --ray-address


def test_greedy_says_nothing_of_a_start_point_still_running():
    from orchestrator.strategies import create_strategy

    strategy = create_strategy(parse_spec(GREEDY), 1)
    start = [{"wave": 1, "status": status, "cell_key": f"k{i}", "seed": i, "param.a": 0, "param.b": 0,
              "param.c": "x", "error_kind": None, "error_message": None}
             for i, status in enumerate(("FAILED", "RUNNING"))]
    assert strategy.next_wave({"k0", "k1"}, 1, start) is None
    assert strategy.stop_reason is None  # the running replicate may still report the response
