"""Store conformance: the same suite on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from orchestrator.errors import SchemaOutOfDate, StudyMismatch
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.strategies import Grid
from tests.conftest import insert_old_study, synthetic_spec


@pytest.fixture
def store(store_url):
    db = Store(store_url)
    yield db
    db.close()


def start_study(store: Store, **overrides):
    spec = parse_spec(synthetic_spec(**overrides))
    study_id = store.open_study(spec)
    plan = Grid(spec).next_wave(store.known_keys(study_id), 4)
    number = store.add_wave(study_id, plan)
    return spec, study_id, number, plan.cells


def test_round_trip_of_a_run_with_curve_and_non_finite_metrics(store):
    spec, study_id, number, cells = start_study(store)
    assert number == 1
    cell = cells[0]
    t0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    store.mark_running(cell.key, host="node-1", device="cuda:3", started_at=t0)
    store.add_curve_points([(cell.key, 1, {"train_loss": 2.5, "lr": 1e-4}), (cell.key, 2, {"train_loss": math.nan}),
                            (cell.key, 3, {"train_loss": math.inf})])
    metrics = {"loss": 0.125, "grad_norm": -math.inf, "odd": math.nan, "huge": 1e300}
    store.finish_run(cell.key, RunResult(status=RunStatus.COMPLETE, metrics=metrics, started_at=t0,
                                         finished_at=t0 + timedelta(seconds=12), wall_s=12.0))
    store.finish_wave(study_id, number)

    (run,) = [r for r in store.runs(spec.study) if r["cell_key"] == cell.key]
    assert run["status"] == "COMPLETE" and run["attempts"] == 1 and run["wave"] == 1
    assert run["param.x"] == cell.levels["x"] and run["param.y"] == cell.levels["y"] and run["seed"] == cell.seed
    assert run["metric.loss"] == 0.125 and run["metric.huge"] == 1e300
    assert run["metric.grad_norm"] == -math.inf and math.isnan(run["metric.odd"])
    assert run["started_at"] == t0 and run["started_at"].tzinfo is not None
    assert run["host"] == "node-1" and run["device"] == "cuda:3" and run["wall_s"] == 12.0
    curve = store.curve(cell.key)
    assert curve[:2] == [(1, "lr", 1e-4), (1, "train_loss", 2.5)]
    assert math.isnan(curve[2][2]) and curve[3] == (3, "train_loss", math.inf)
    assert store.status_counts(spec.study) == {"COMPLETE": 1, "PENDING": len(cells) - 1}
    assert store.waves(spec.study)[0]["finished_at"] is not None


def test_failure_keeps_kind_and_traceback_and_a_retry_clears_them(store):
    spec, study_id, _, cells = start_study(store)
    key = cells[0].key
    now = datetime.now(timezone.utc)
    store.mark_running(key, host="h", device="cpu", started_at=now)
    store.add_curve_points([(key, 1, {"train_loss": 1.0})])
    store.finish_run(key, RunResult(status=RunStatus.FAILED, metrics={}, error_kind="exception",
                                    error_message="RuntimeError: boom", traceback="Traceback ...\nRuntimeError: boom"))
    (failed,) = [r for r in store.runs(spec.study) if r["cell_key"] == key]
    assert (failed["status"], failed["error_kind"], failed["error_message"]) == ("FAILED", "exception", "RuntimeError: boom")
    assert [(n, [c.key for c in cs]) for n, cs in store.unfinished_waves(study_id)] == [(1, [c.key for c in cells])]

    store.mark_running(key, host="h", device="cpu", started_at=now)
    assert store.curve(key) == []  # a new attempt starts a new curve
    store.finish_run(key, RunResult(status=RunStatus.COMPLETE, metrics={"loss": 1.0}))
    (retried,) = [r for r in store.runs(spec.study) if r["cell_key"] == key]
    assert retried["attempts"] == 2 and retried["error_kind"] is None and retried["status"] == "COMPLETE"


def test_cells_are_unique_and_waves_numbered_in_order(store):
    spec, study_id, _, cells = start_study(store)
    plan2 = Grid(spec).next_wave(store.known_keys(study_id), 4)
    assert store.add_wave(study_id, plan2) == 2
    assert not {c.key for c in plan2.cells} & {c.key for c in cells}
    from orchestrator.errors import StoreError
    with pytest.raises(StoreError, match="store .*IntegrityError"):
        store.add_wave(study_id, plan2)  # the same cells again: refused by the unique cell key, nothing written
    assert [w["number"] for w in store.waves(spec.study)] == [1, 2]
    assert len(store.known_keys(study_id)) == 8


def test_reopening_a_study_with_other_fixed_params_is_refused(store):
    start_study(store)
    changed = synthetic_spec()
    changed["fixed"] = {**changed["fixed"], "noise_sd": 0.5}
    with pytest.raises(StudyMismatch, match=r"fixed \(recorded .*'noise_sd': 0.1.*spec .*'noise_sd': 0.5"):
        store.open_study(parse_spec(changed))
    # More levels are fine: a study may grow.
    grown = synthetic_spec()
    grown["factors"]["x"]["levels"] = [1, 2, 3]
    store.open_study(parse_spec(grown))


def test_schema_from_an_unknown_version_is_refused(store_url):
    Store(store_url).close()
    db = Store(store_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    db.close()
    with pytest.raises(SchemaOutOfDate, match="schema 9999, which this wavesweep does not know"):
        Store(store_url)


def test_an_older_schema_is_refused_then_upgraded_keeping_its_rows(store_url):
    from alembic import command

    from orchestrator.store.engine import alembic_config, head_revision, make_engine

    engine = make_engine(store_url)
    command.upgrade(alembic_config(engine), "0001")  # a store made by the first release
    with engine.begin() as conn:
        insert_old_study(conn, wave=False)
    engine.dispose()
    with pytest.raises(SchemaOutOfDate) as info:
        Store(store_url)
    assert f"has schema 0001, this wavesweep needs {head_revision(engine)}" in str(info.value)
    assert "wavesweep db upgrade --store '" in str(info.value)

    out = subprocess.run([sys.executable, "-m", "orchestrator", "db", "upgrade", "--store", store_url],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    db = Store(store_url)
    assert db.study_names() == ["old"]
    db.close()


def test_password_is_masked_in_messages():
    from orchestrator.store import mask

    assert mask("postgresql+psycopg://alice:s3cret@db.example/x") == "postgresql+psycopg://alice:***@db.example/x"


def test_sqlite_reader_does_not_block_the_writer(sqlite_url):
    from sqlalchemy import select

    from orchestrator.store.models import RunModel

    writer = Store(sqlite_url)
    spec, study_id, _, cells = start_study(writer)
    reader = Store(sqlite_url, writer=False)
    with reader.session() as s:  # a long read transaction, as a dashboard query would hold
        assert len(s.scalars(select(RunModel)).all()) == len(cells)
        writer.finish_run(cells[0].key, RunResult(status=RunStatus.COMPLETE, metrics={"loss": 1.0}))
    assert reader.status_counts(spec.study)["COMPLETE"] == 1
    reader.close()
    writer.close()


def test_reader_refuses_a_missing_sqlite_file(tmp_path):
    from orchestrator.errors import StoreError

    with pytest.raises(StoreError, match="no store at .*nope.db: run a study first"):
        Store(f"sqlite:///{tmp_path / 'nope.db'}", writer=False)
    assert not (tmp_path / "nope.db").exists()


def test_a_stop_reason_is_stored_shown_and_cleared_by_a_new_wave(store):
    spec, study_id, _, _ = start_study(store)
    assert store.study_info(spec.study)["stop_reason"] is None and store.study_info("nope") is None
    store.stop_study(study_id, "max_gpu_hours reached: 7.1 GPU-h used, max_gpu_hours 7")
    info = store.study_info(spec.study)
    assert info["stop_reason"] == "max_gpu_hours reached: 7.1 GPU-h used, max_gpu_hours 7"
    assert info["stopped_at"].tzinfo is not None and info["name"] == spec.study
    store.add_wave(study_id, Grid(spec).next_wave(store.known_keys(study_id), 4))  # the study goes on
    assert store.study_info(spec.study)["stop_reason"] is None and store.study_info(spec.study)["stopped_at"] is None


def test_upgrade_from_0002_adds_the_stop_reason_and_keeps_every_row(store_url):
    from alembic import command

    from orchestrator.store.engine import alembic_config, head_revision, make_engine, upgrade

    engine = make_engine(store_url)
    command.upgrade(alembic_config(engine), "0002")  # a store made before studies recorded why they stopped
    with engine.begin() as conn:
        insert_old_study(conn)
        conn.execute(text("INSERT INTO runs (study_id, wave_id, cell_key, params, seed, status, attempts, created_at, "
                          "artifact_dir) VALUES (1, 1, 'k1', '{\"x\": 1}', 0, 'COMPLETE', 1, CURRENT_TIMESTAMP, '/a')"))
        conn.execute(text("INSERT INTO run_metrics (run_id, name, value, kind) VALUES (1, 'loss', 0.5, 'finite')"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=f"has schema 0002, this wavesweep needs {head_revision(engine)}"):
        Store(store_url)
    upgrade(make_engine(store_url))
    db = Store(store_url)
    assert db.study_names() == ["old"]
    assert db.study_info("old")["stop_reason"] is None
    (run,) = db.runs("old")
    assert (run["cell_key"], run["param.x"], run["metric.loss"], run["artifact_dir"]) == ("k1", 1, 0.5, "/a")
    assert db.waves("old")[0]["reason"] == "first wave"
    db.stop_study(1, "the waves strategy converged")
    assert db.study_info("old")["stop_reason"] == "the waves strategy converged"
    db.close()
