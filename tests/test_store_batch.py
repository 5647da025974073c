"""Store.apply: a batch of writes in one transaction, on SQLite and PostgreSQL (the ``store_url`` fixture).

A mixed batch leaves exactly the rows that one call per event leaves (the single methods, and the ORM code they
replaced, kept here as the reference); the cell key -> run id cache holds across batches and finds runs added
later; a batch that fails midway leaves nothing of itself written.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import JSON, Text, cast, event, select
from sqlalchemy.orm import selectinload

from orchestrator.cells import Cell, WavePlan
from orchestrator.errors import StoreError
from orchestrator.run_record import RunResult, RunStatus
from orchestrator.spec import parse_spec
from orchestrator.store import Store
from orchestrator.store import store as store_module
from orchestrator.store.models import CurvePointModel, MetricModel, RunModel, encode_float
from tests.conftest import synthetic_spec

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
NOW = datetime(2026, 3, 4, 9, 0, 0, tzinfo=UTC)  # the store's clock, fixed: an attempt closed without a time
KEYS = [f"k{i}" for i in range(8)]


@pytest.fixture
def store(store_url, monkeypatch):
    monkeypatch.setattr(store_module, "utcnow", lambda: NOW)
    db = Store(store_url)
    yield db
    db.close()


def add_study(store: Store, prefix: str, keys=KEYS) -> int:
    study_id = store.open_study(parse_spec(synthetic_spec(f"{prefix}study")))
    cells = [Cell(key=prefix + key, levels={"x": 1, "y": i}, seed=0) for i, key in enumerate(keys)]
    store.add_wave(study_id, WavePlan(cells, "batch", "test"))
    return study_id


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def result(status: RunStatus, end: float, metrics=None, **fields) -> RunResult:
    return RunResult(status=status, metrics=metrics or {}, finished_at=at(end), **fields)


def start(key: str, t: float, **extra) -> tuple[str, dict]:
    return "start", {"cell_key": key, "host": "node-1", "device": "cuda:0", "started_at": at(t), **extra}


def script() -> list[tuple[str, object]]:
    """Every operation kind and the rules between them, for runs k0..k7 (keys without the study's prefix)."""
    decision = {"rule": "bound", "step": 2, "value": 3.5, "threshold": 1.0}
    return [
        start("k0", 0, inputs={"adapter": "s/abc"}, gpus=0.5), start("k1", 1), start("k2", 2), start("k3", 3),
        ("points", [("k0", 1, {"loss": 2.5, "lr": 1e-4}), ("k1", 1, {"loss": 3.0}), ("k0", 2, {"loss": math.nan}),
                    ("k2", 1, {"loss": -0.0, "flag": True})]),
        ("prune", ("k1", decision)),
        ("finish", ("k1", result(RunStatus.PRUNED, 10, {"loss": 3.5}, wall_s=9.0))),  # ends PRUNED: keeps it
        ("prune", ("k2", decision)),
        ("finish", ("k2", result(RunStatus.COMPLETE, 11, {"loss": 0.5}, wall_s=9.0, host="node-2",
                                 artifact_dir="/a/k2"))),  # completed first: the decision is dropped
        ("retry", ("k3", result(RunStatus.FAILED, 12, error_kind="worker_died", error_message="x" * 600,
                                traceback="Traceback ..."))),
        start("k3", 13, gpus=1.0),  # its second attempt: the error is cleared
        ("points", [("k3", 1, {"loss": 1.5})]),
        ("thin", ("k0", "loss", [1])),  # the loss at step 1 only: the lr at step 1 stays
        ("points", [("k0", 3, {"loss": math.inf}), ("k0", 1, {"loss": 2.0})]),  # a point after the thin stays
        ("finish", ("k0", result(RunStatus.COMPLETE, 14, {"loss": 0.25, "grad": -math.inf, "odd": math.nan},
                                 started_at=at(0), wall_s=14.0))),
        start("k4", 15), ("points", [("k4", 1, {"loss": 9.0})]),
        start("k4", 16),  # k4 was RUNNING: its open attempt is closed as driver_died, its curve starts again
        ("finish", ("k3", result(RunStatus.FAILED, 17, error_kind="exception", error_message="boom",
                                 traceback="Traceback ...\nRuntimeError: boom"))),
        ("finish", ("k5", result(RunStatus.FAILED, 18, error_kind="worker_died"))),  # never said it started
        start("k6", 19), ("points", [("k6", step, {"loss": 1.0 / step}) for step in range(1, 6)]),
        ("prune", ("k6", {**decision, "step": 5})),  # pruned, its worker not yet stopped
        ("thin", ("k6", "loss", [2, 4])),
        start("k7", 20), ("retry", ("k7", result(RunStatus.OOM, 21, error_kind="oom"))), start("k7", 22),
        ("finish", ("k7", result(RunStatus.COMPLETE, 23, {"loss": 1.25}))),
        ("finish", ("k1", result(RunStatus.PRUNED, 24, {"loss": 3.5}))),  # a second finish replaces the metrics
    ]


def prefixed(ops, prefix: str):
    out = []
    for kind, payload in ops:
        if kind == "start":
            payload = {**payload, "cell_key": prefix + payload["cell_key"]}
        elif kind == "points":
            payload = [(prefix + key, step, metrics) for key, step, metrics in payload]
        else:
            payload = (prefix + payload[0], *payload[1:])
        out.append((kind, payload))
    return out


def call_single(store, kind, payload) -> None:
    """The operation through the single method that names it."""
    if kind == "start":
        store.mark_running(**payload)
    elif kind == "points":
        store.add_curve_points(payload)
    elif kind == "thin":
        store.apply([(kind, payload)])  # no single method: the driver only thins in a batch
    else:
        {"prune": store.prune_run, "retry": store.retry_run, "finish": store.finish_run}[kind](*payload)


class Legacy:
    """The store's writes as they were before ``Store.apply``, one ORM load-and-flush per event: the reference the
    batch must match row for row (kept verbatim but for the thin, which they did not have)."""

    def __init__(self, store: Store):
        self.store = store

    def call(self, kind, payload) -> None:
        if kind == "start":
            self.mark_running(**payload)
        elif kind == "points":
            self.add_curve_points(payload)
        elif kind == "thin":
            key, name, steps = payload
            with self.store.session() as s:
                run_id = s.scalar(select(RunModel.id).where(RunModel.cell_key == key))
                s.query(CurvePointModel).filter(CurvePointModel.run_id == run_id, CurvePointModel.name == name,
                                                CurvePointModel.step.in_(steps)).delete()
        else:
            getattr(self, {"prune": "prune_run", "retry": "retry_run", "finish": "finish_run"}[kind])(*payload)

    def mark_running(self, cell_key, *, host, device, started_at, inputs=None, gpus=None):
        from sqlalchemy import delete

        with self.store.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key))
            s.execute(delete(CurvePointModel).where(CurvePointModel.run_id == run.id))
            if run.status == RunStatus.RUNNING:
                legacy_end_attempt(run, None, RunStatus.RUNNING, "driver_died",
                                   "the driver stopped while this attempt ran; the next driver requeued it")
            run.status, run.host, run.device, run.started_at = RunStatus.RUNNING, host, device, started_at
            run.finished_at = None
            run.inputs = inputs or None
            run.attempts += 1
            run.error_kind = run.error_message = run.traceback = None
            entry = {"attempt": run.attempts, "started_at": started_at.isoformat(), "host": host, "device": device}
            if gpus is not None:
                entry["gpus"] = gpus
            run.attempt_log = [*(run.attempt_log or []), entry]

    def retry_run(self, cell_key, result):
        with self.store.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key)
                           .options(selectinload(RunModel.metrics)))
            legacy_end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
            run.status, run.started_at, run.finished_at, run.wall_s = RunStatus.PENDING, None, None, None
            run.error_kind, run.error_message, run.traceback = result.error_kind, result.error_message, result.traceback
            run.prune = run.prune_step = None
            run.metrics.clear()

    def add_curve_points(self, points):
        points = list(points)
        with self.store.session() as s:
            ids = dict(s.execute(select(RunModel.cell_key, RunModel.id)
                                 .where(RunModel.cell_key.in_({key for key, _, _ in points}))).all())
            rows = []
            for key, step, metrics in points:
                for name, value in metrics.items():
                    stored, kind = encode_float(value)
                    rows.append({"run_id": ids[key], "step": step, "name": name, "value": stored, "kind": kind})
            s.execute(CurvePointModel.__table__.insert(), rows)

    def prune_run(self, cell_key, decision):
        from sqlalchemy import update

        with self.store.session() as s:
            s.execute(update(RunModel).where(RunModel.cell_key == cell_key)
                      .values(prune=decision, prune_step=decision["step"]))

    def finish_run(self, cell_key, result):
        with self.store.session() as s:
            run = s.scalar(select(RunModel).where(RunModel.cell_key == cell_key)
                           .options(selectinload(RunModel.metrics)))
            legacy_end_attempt(run, result.finished_at, result.status, result.error_kind, result.error_message)
            run.status = result.status
            run.started_at = result.started_at or run.started_at
            run.finished_at = result.finished_at or store_module.utcnow()
            run.wall_s, run.error_kind = result.wall_s, result.error_kind
            run.error_message, run.traceback = result.error_message, result.traceback
            run.artifact_dir = result.artifact_dir
            if result.status != RunStatus.PRUNED:
                run.prune = run.prune_step = None
            run.host = result.host or run.host
            run.device = result.device or run.device
            run.metrics.clear()
            s.flush()
            for name, value in result.metrics.items():
                stored, kind = encode_float(value)
                run.metrics.append(MetricModel(name=name, value=stored, kind=kind))


def legacy_end_attempt(run, finished_at, status, error_kind, error_message):
    log = list(run.attempt_log or [])
    if run.status != RunStatus.RUNNING:
        run.attempts += 1
        log.append({"attempt": run.attempts, "started_at": None})
    elif not log or "status" in log[-1]:
        log.append({"attempt": run.attempts, "started_at": run.started_at.isoformat() if run.started_at else None})
    log[-1] = {**log[-1], "finished_at": (finished_at or store_module.utcnow()).isoformat(),
               "status": RunStatus(status).value, "error_kind": error_kind,
               "error_message": (error_message or "")[:500] or None}
    run.attempt_log = log


def dump(store: Store, prefix: str) -> dict:
    """Every row the study of ``prefix`` holds, as the database holds it (JSON as its text: a JSON null and an SQL
    NULL differ), keyed by cell key without the prefix; no surrogate ids."""
    runs, curve, metrics = RunModel.__table__, CurvePointModel.__table__, MetricModel.__table__
    columns = [cast(c, Text).label(c.name) if isinstance(c.type, JSON) else c for c in runs.c
               if c.name not in ("id", "study_id", "wave_id", "created_at", "cell_key")]
    mine = runs.c.cell_key.startswith(prefix)
    with store.engine.connect() as conn:
        rows = {}
        for row in conn.execute(select(runs.c.cell_key, *columns).where(mine)).mappings():
            row = dict(row)
            rows[row.pop("cell_key")[len(prefix):]] = row
        points = conn.execute(select(runs.c.cell_key, curve.c.name, curve.c.step, curve.c.value, curve.c.kind)
                              .join(runs, runs.c.id == curve.c.run_id).where(mine)
                              .order_by(runs.c.cell_key, curve.c.name, curve.c.step, curve.c.id)).all()
        finals = conn.execute(select(runs.c.cell_key, metrics.c.name, metrics.c.value, metrics.c.kind)
                              .join(runs, runs.c.id == metrics.c.run_id).where(mine)
                              .order_by(runs.c.cell_key, metrics.c.name)).all()
    strip = [(key[len(prefix):], *rest) for key, *rest in points]
    return {"runs": rows, "points": strip, "metrics": [(key[len(prefix):], *rest) for key, *rest in finals]}


def test_a_mixed_batch_leaves_exactly_the_rows_of_one_call_per_event(store):
    ops = script()
    for prefix in ("legacy-", "single-", "batch-", "chunks-"):
        add_study(store, prefix)
    legacy = Legacy(store)
    for kind, payload in prefixed(ops, "legacy-"):
        legacy.call(kind, payload)
    for kind, payload in prefixed(ops, "single-"):
        call_single(store, kind, payload)
    store.apply(prefixed(ops, "batch-"))
    chunks = prefixed(ops, "chunks-")
    for i in range(0, len(chunks), 5):
        store.apply(chunks[i:i + 5])

    expected = dump(store, "legacy-")
    for prefix in ("single-", "batch-", "chunks-"):
        got = dump(store, prefix)
        for table in ("runs", "points", "metrics"):
            assert got[table] == expected[table], (prefix, table)

    # And what they hold is what the rules say.
    runs = {r["cell_key"].removeprefix("batch-"): r for r in store.runs("batch-study")}
    assert {k: runs[k]["status"] for k in KEYS} == {
        "k0": "COMPLETE", "k1": "PRUNED", "k2": "COMPLETE", "k3": "FAILED", "k4": "RUNNING", "k5": "FAILED",
        "k6": "RUNNING", "k7": "COMPLETE"}
    assert runs["k1"].prune["step"] == 2 and runs["k2"]["prune"] is None and runs["k6"]["prune"]["step"] == 5
    assert runs["k0"]["inputs"] == {"adapter": "s/abc"} and runs["k2"]["host"] == "node-2"
    assert runs["k0"].metrics["grad"] == -math.inf and math.isnan(runs["k0"].metrics["odd"])
    assert [(s, n) for s, n, _ in store.curve("batch-k0")] == [(1, "loss"), (2, "loss"), (3, "loss"), (1, "lr")]
    assert store.curve("batch-k4") == [] and [s for s, _, _ in store.curve("batch-k6")] == [1, 3, 5]
    logs = store.attempt_logs("batch-study")
    assert [e["error_kind"] for e in logs["batch-k4"][:-1]] == ["driver_died"] and len(logs["batch-k4"]) == 2
    assert logs["batch-k4"][0]["finished_at"] == NOW.isoformat()
    assert logs["batch-k5"] == [{"attempt": 1, "started_at": None, "finished_at": at(18).isoformat(),
                                 "status": "FAILED", "error_kind": "worker_died", "error_message": None}]
    assert [e["status"] for e in logs["batch-k3"]] == ["FAILED", "FAILED"] and runs["k3"]["attempts"] == 2
    assert len(logs["batch-k3"][0]["error_message"]) == 500 and logs["batch-k3"][1]["gpus"] == 1.0
    assert runs["k7"]["attempts"] == 2 and runs["k7"]["error_kind"] is None


def test_run_ids_are_cached_across_batches_and_a_run_added_later_is_found(store):
    study_id = add_study(store, "c-", KEYS[:2])
    selects = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, *args):  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT") and " runs" in statement:
            selects.append(statement)

    store.apply([("points", [("c-k0", 1, {"loss": 1.0})])])
    assert len(selects) == 1  # the ids of the batch's keys, once
    store.apply([("points", [("c-k0", 2, {"loss": 2.0}), ("c-k1", 1, {"loss": 3.0})])])
    store.apply([("thin", ("c-k0", "loss", [1])), ("prune", ("c-k1", {"step": 1}))])
    assert len(selects) == 2  # only c-k1 was new: no SELECT at all for the third batch

    store.add_cells(study_id, 1, [Cell(key="c-later", levels={"x": 2, "y": 0}, seed=0)])
    store.apply([start("c-later", 5), ("points", [("c-later", 1, {"loss": 4.0}), ("c-k0", 3, {"loss": 5.0})])])
    assert store.curve("c-later") == [(1, "loss", 4.0)]
    assert store.curve("c-k0") == [(2, "loss", 2.0), (3, "loss", 5.0)]
    assert {r["cell_key"]: r["status"] for r in store.runs("c-study")}["c-later"] == "RUNNING"
    event.remove(store.engine, "before_cursor_execute", _seen)


def test_a_batch_that_fails_midway_writes_nothing(store):
    add_study(store, "f-", KEYS[:4])
    store.apply([start("f-k0", 0), start("f-k1", 1), start("f-k2", 2),
                 ("points", [("f-k0", step, {"loss": float(step)}) for step in range(1, 4)]),
                 ("points", [("f-k1", step, {"loss": float(step)}) for step in range(1, 4)])])
    before = dump(store, "f-")

    # An unknown run: refused before anything is written, naming it.
    with pytest.raises(StoreError, match=r"no run with cell key 'f-nope'; nothing written"):
        store.apply([("finish", ("f-k2", result(RunStatus.COMPLETE, 5, {"loss": 1.0}))), start("f-nope", 5)])
    assert dump(store, "f-") == before

    # A database error in the last statement (the runs' UPDATE), after the batch deleted a curve, thinned another,
    # inserted points and replaced metrics: the whole batch is rolled back.
    naive = datetime(2026, 3, 4, 5, 6, 7)
    with pytest.raises(StoreError, match="naive datetime"):
        store.apply([("finish", ("f-k2", result(RunStatus.COMPLETE, 5, {"loss": 1.0}))),
                     ("thin", ("f-k1", "loss", [1, 2])), start("f-k0", 6), ("points", [("f-k0", 1, {"loss": 0.0})]),
                     ("start", {"cell_key": "f-k3", "host": "h", "device": "cpu", "started_at": naive})])
    assert dump(store, "f-") == before

    # The store and its id cache are whole: the next batch is written.
    store.apply([("finish", ("f-k2", result(RunStatus.COMPLETE, 5, {"loss": 1.0}))), start("f-k3", 7)])
    runs = {r["cell_key"]: r for r in store.runs("f-study")}
    assert runs["f-k2"]["status"] == "COMPLETE" and runs["f-k2"].metrics == {"loss": 1.0}
    assert runs["f-k3"]["status"] == "RUNNING" and len(store.curve("f-k0")) == 3


def test_an_unknown_operation_and_an_empty_batch(store):
    with pytest.raises(ValueError, match="unknown store operation 'stop'"):
        store.apply([("stop", "k0")])
    store.apply([])  # nothing to do: no transaction
    store.add_curve_points([])


def test_a_thin_of_many_steps_deletes_exactly_those(store):
    add_study(store, "t-", KEYS[:2])
    points = [(key, step, {"loss": 1.0, "lr": 0.1}) for step in range(1_500) for key in ("t-k0", "t-k1")]
    store.apply([start("t-k0", 0), start("t-k1", 0), ("points", points)])
    store.apply([("thin", ("t-k0", "loss", list(range(1, 1_500, 2))))])  # 750 steps: more than one IN (...)
    curve = store.curve("t-k0")
    assert [s for s, n, _ in curve if n == "loss"] == list(range(0, 1_500, 2))
    assert len([n for _, n, _ in curve if n == "lr"]) == 1_500 and len(store.curve("t-k1")) == 3_000
