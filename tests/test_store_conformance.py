"""Store conformance under load and at its edges, on SQLite and PostgreSQL (the ``store_url`` fixture).

Concurrent writers (8 processes x 200 writes through the Store API), non-finite and extreme floats, the schema
created exactly once when many processes open an empty store at the same moment, an out-of-date schema refused with
the exact upgrade command, and readers that never create or change anything.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import struct
import time
import traceback
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

WRITERS = 8  # studies (drivers) writing one store at once; each is a spawned process, seconds of imports
CELLS = 100  # each writer: per cell one add_curve_points and one finish_run -> 200 write transactions
OPENERS = 8


# --- running N processes at the same moment --------------------------------------------------------------------

def _entry(target, barrier, errors, args) -> None:
    try:
        target(barrier, *args)
    except BaseException:
        errors.put(traceback.format_exc())
        raise


def run_together(target, args_list: list[tuple], timeout: float = 300) -> float:
    """Start one spawned process per args tuple; each calls ``target(barrier, *args)`` and waits on the barrier
    when it is ready for the part that must overlap. Returns the seconds from the barrier's release to the last
    exit; fails with the children's tracebacks if any of them raised."""
    ctx = mp.get_context("spawn")  # no fork: every child opens its own engine and connections
    barrier = ctx.Barrier(len(args_list) + 1)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_entry, args=(target, barrier, errors, args)) for args in args_list]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + timeout
        while barrier.n_waiting < len(procs) and time.monotonic() < deadline:
            if any(proc.exitcode is not None for proc in procs):  # one died getting ready: release the others
                barrier.abort()
                break
            time.sleep(0.05)
        else:
            barrier.wait(timeout=10)
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
    failures = []
    while True:
        try:
            failures.append(errors.get(timeout=0.5))
        except Exception:  # noqa: BLE001 (queue.Empty)
            break
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return elapsed


def value_of(writer: int, cell: int) -> float:
    return writer * 1000 + cell + 0.25  # exact in binary floating point


def key_of(writer: int, cell: int) -> str:
    return f"conformance-w{writer:02d}-c{cell:03d}"


def _write(barrier, url: str, writer: int) -> None:
    from orchestrator.run_record import RunResult, RunStatus
    from orchestrator.store import Store

    db = Store(url)
    barrier.wait(timeout=300)
    for cell in range(CELLS):
        key, value = key_of(writer, cell), value_of(writer, cell)
        db.add_curve_points([(key, cell, {"train_loss": -value})])
        db.finish_run(key, RunResult(status=RunStatus.COMPLETE, metrics={"loss": value}, host=f"writer-{writer}"))
    db.close()


def _open(barrier, url: str) -> None:
    from orchestrator.store import Store

    barrier.wait(timeout=300)
    Store(url).close()


def start_studies(url: str, count: int, cells: int):
    """``count`` studies with one wave of ``cells`` PENDING runs each, through the Store API."""
    from orchestrator.cells import Cell, WavePlan
    from orchestrator.spec import parse_spec
    from orchestrator.store import Store
    from tests.conftest import synthetic_spec

    db = Store(url)
    for writer in range(count):
        study_id = db.open_study(parse_spec(synthetic_spec(f"writer{writer:02d}")))
        plan = WavePlan(cells=[Cell(key=key_of(writer, c), levels={"x": 1, "y": c}, seed=0) for c in range(cells)],
                        design="conformance", reason="concurrent writers")
        db.add_wave(study_id, plan)
    return db


def integrity_problems(url: str) -> list:
    """What the database itself says is broken: SQLite's integrity and foreign-key checks; on PostgreSQL, rows
    whose parent is missing (the constraints should make that impossible)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                integrity = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
                return ([] if integrity == ["ok"] else integrity) + list(conn.exec_driver_sql("PRAGMA foreign_key_check"))
            orphans = {
                "waves": "SELECT count(*) FROM waves w LEFT JOIN studies s ON s.id = w.study_id WHERE s.id IS NULL",
                "runs.wave": "SELECT count(*) FROM runs r LEFT JOIN waves w ON w.id = r.wave_id WHERE w.id IS NULL",
                "runs.study": "SELECT count(*) FROM runs r LEFT JOIN studies s ON s.id = r.study_id WHERE s.id IS NULL",
                "run_metrics": "SELECT count(*) FROM run_metrics m LEFT JOIN runs r ON r.id = m.run_id "
                               "WHERE r.id IS NULL",
                "curve_points": "SELECT count(*) FROM curve_points c LEFT JOIN runs r ON r.id = c.run_id "
                                "WHERE r.id IS NULL",
                "waves in another study than their runs": "SELECT count(*) FROM runs r JOIN waves w ON w.id = r.wave_id "
                                                          "WHERE w.study_id <> r.study_id",
            }
            found = [(name, conn.execute(text(sql)).scalar_one()) for name, sql in orphans.items()]
            return [(name, n) for name, n in found if n]
    finally:
        engine.dispose()


# --- concurrent writers ------------------------------------------------------------------------------------------

def test_concurrent_writers_lose_and_duplicate_nothing(store_url):
    db = start_studies(store_url, WRITERS, CELLS)
    elapsed = run_together(_write, [(store_url, w) for w in range(WRITERS)])
    print(f"\n{WRITERS} writers x {2 * CELLS} writes on {db.engine.dialect.name}: {elapsed:.1f} s")
    # SQLite writers queue on BEGIN IMMEDIATE (busy_timeout 30 s); on 2 busy cores this takes ~10-20 s.
    assert elapsed < 90, f"{WRITERS * 2 * CELLS} writes took {elapsed:.0f} s"

    for writer in range(WRITERS):
        runs = db.runs(f"writer{writer:02d}")
        assert [r["cell_key"] for r in runs] == [key_of(writer, c) for c in range(CELLS)]
        assert [r["metric.loss"] for r in runs] == [value_of(writer, c) for c in range(CELLS)]
        assert {(r["status"], r["attempts"], r["host"]) for r in runs} == {("COMPLETE", 1, f"writer-{writer}")}
        for cell in (0, CELLS // 2, CELLS - 1):
            assert db.curve(key_of(writer, cell)) == [(cell, "train_loss", -value_of(writer, cell))]
    with db.engine.connect() as conn:
        count = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                 for table in ("studies", "waves", "runs", "run_metrics", "curve_points")}
        assert count == {"studies": WRITERS, "waves": WRITERS, "runs": WRITERS * CELLS,
                         "run_metrics": WRITERS * CELLS, "curve_points": WRITERS * CELLS}
        # every written row once, with its value
        metrics = conn.execute(text("SELECT r.cell_key, m.value FROM run_metrics m JOIN runs r ON r.id = m.run_id "
                                    "WHERE m.name = 'loss' AND m.kind = 'finite'")).all()
        points = conn.execute(text("SELECT r.cell_key, c.step, c.value FROM curve_points c "
                                   "JOIN runs r ON r.id = c.run_id WHERE c.name = 'train_loss'")).all()
    expected = {key_of(w, c): value_of(w, c) for w in range(WRITERS) for c in range(CELLS)}
    assert len(metrics) == len(points) == WRITERS * CELLS
    assert dict(metrics) == expected
    assert {key: (step, value) for key, step, value in points} == {
        key_of(w, c): (c, -value_of(w, c)) for w in range(WRITERS) for c in range(CELLS)}
    db.close()
    assert integrity_problems(store_url) == []


# --- floats that databases disagree about -------------------------------------------------------------------------

SPECIAL = {"nan": math.nan, "inf": math.inf, "neg_inf": -math.inf, "huge": 1e308, "neg_huge": -1.7976931348623157e308,
           "subnormal": 5e-324, "tiny": 2.2250738585072014e-308, "third": 1 / 3, "zero": 0.0}


def same_float(a: float, b: float) -> bool:
    """Equal to the bit, NaN equal to NaN (its payload is not kept)."""
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def round_trip(url: str, values: dict[str, float]) -> tuple[dict[str, float], dict[str, tuple[int, float]]]:
    """``values`` written as a run's final metrics and as its curve (one step each), read back through a reader."""
    from orchestrator.cells import Cell, WavePlan
    from orchestrator.run_record import RunResult, RunStatus
    from orchestrator.spec import parse_spec
    from orchestrator.store import Store
    from tests.conftest import synthetic_spec

    db = Store(url)
    study_id = db.open_study(parse_spec(synthetic_spec("floats")))
    db.add_wave(study_id, WavePlan(cells=[Cell(key="floats-1", levels={"x": 1, "y": 0.1}, seed=0)],
                                   design="conformance", reason="floats"))
    db.add_curve_points([("floats-1", step, {name: value}) for step, (name, value) in enumerate(values.items())])
    db.finish_run("floats-1", RunResult(status=RunStatus.COMPLETE, metrics=values))
    db.close()
    db = Store(url, writer=False)  # a fresh engine: nothing comes from a session's cache
    [run] = db.runs("floats")
    curve = {name: (step, value) for step, name, value in db.curve("floats-1")}
    db.close()
    return {name: run[f"metric.{name}"] for name in values}, curve


def test_non_finite_and_extreme_floats_round_trip_exactly(store_url):
    metrics, curve = round_trip(store_url, SPECIAL)
    for step, (name, value) in enumerate(SPECIAL.items()):
        assert same_float(metrics[name], value), (name, metrics[name], value)
        assert curve[name][0] == step and same_float(curve[name][1], value), (name, curve[name], value)
    assert len(curve) == len(SPECIAL)


def test_negative_zero_keeps_its_sign(store_url):
    metrics, curve = round_trip(store_url, {"neg_zero": -0.0})
    assert same_float(metrics["neg_zero"], -0.0) and same_float(curve["neg_zero"][1], -0.0)


# --- the schema, created once ------------------------------------------------------------------------------------

def test_schema_is_created_once_when_many_processes_open_an_empty_store(store_url):
    from orchestrator.store.engine import head_revision, make_engine

    run_together(_open, [(store_url,)] * OPENERS)
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                head_revision(engine)]
        assert set(inspect(engine).get_table_names()) == {
            "alembic_version", "studies", "waves", "runs", "run_metrics", "curve_points"}
    finally:
        engine.dispose()
    assert integrity_problems(store_url) == []


# --- an out-of-date schema -------------------------------------------------------------------------------------------

def with_password(url: str, password: str) -> str:
    """The URL with a password (PostgreSQL here trusts local connections, so any password logs in)."""
    scheme, rest = url.split("://", 1)
    user, _, host = rest.partition("@")
    return f"{scheme}://{user}:{password}@{host}" if host else url  # SQLite has no password


def test_an_out_of_date_schema_is_refused_with_the_exact_upgrade_command(store_url):
    """tests/test_store.py upgrades such a store keeping its rows; this checks the words, masked, and the CLI."""
    from alembic import command

    from orchestrator.errors import SchemaOutOfDate
    from orchestrator.store import Store, mask, resolve_url
    from orchestrator.store.engine import alembic_config, make_engine
    from tests.test_cli import wavesweep

    url = with_password(store_url, "pw-0001-secret")
    engine = make_engine(url)
    command.upgrade(alembic_config(engine), "0001")
    engine.dispose()
    masked = mask(resolve_url(url))
    upgrade = f"wavesweep db upgrade --store '{masked}'"
    if "pw-0001-secret" in url:
        assert masked.count("***") == 1

    with pytest.raises(SchemaOutOfDate) as info:
        Store(url)
    assert str(info.value).endswith(f"Back it up, then run: {upgrade}")
    assert "pw-0001-secret" not in str(info.value)
    with pytest.raises(SchemaOutOfDate, match="has schema 0001"):
        Store(url, writer=False)  # a reader is refused too, and upgrades nothing

    for args in (["status"], ["export", "toy"], ["analyze", "toy"]):
        out = wavesweep(*args, "--store", url)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert upgrade in out.stderr and "Traceback" not in out.stderr
        assert "pw-0001-secret" not in out.stdout + out.stderr
    out = wavesweep("status", env={"WAVESWEEP_STORE": url})
    assert out.returncode == 1 and upgrade in out.stderr and "pw-0001-secret" not in out.stderr
    engine = make_engine(url)
    with engine.connect() as conn:  # still at 0001: nobody upgraded it on the way
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0001"
    engine.dispose()


# --- readers -------------------------------------------------------------------------------------------------------

def tables_of(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_reader_never_creates_a_store(store_url, tmp_path):
    from orchestrator.errors import StoreError
    from orchestrator.store import Store
    from tests.test_cli import wavesweep

    sqlite_file = Path(store_url.removeprefix("sqlite:///")) if store_url.startswith("sqlite") else None
    for attempt in ("missing", "empty"):
        if sqlite_file is not None and attempt == "empty":
            sqlite_file.write_bytes(b"")  # an empty file (e.g. touched) is an empty database
        with pytest.raises(StoreError, match="no store at .*: run a study first"):
            Store(store_url, writer=False)
        commands = (["status"], ["status", "toy"], ["export", "toy"], ["analyze", "toy"])
        for args in commands if attempt == "missing" else commands[1:2]:
            out = wavesweep(*args, "--store", store_url, cwd=tmp_path)
            assert out.returncode == 1, (args, out.stdout, out.stderr)
            assert "no store at" in out.stderr and "run a study first" in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr
        if sqlite_file is None:
            assert tables_of(store_url) == []
            break
        if attempt == "missing":
            assert not sqlite_file.exists()
        else:
            assert sqlite_file.read_bytes() == b""
        assert sorted(os.listdir(sqlite_file.parent)) == ([sqlite_file.name] if attempt == "empty" else [])
    # `plan` only looks for history: no store, no history, and still nothing created
    from tests.conftest import synthetic_spec, write_spec

    spec = write_spec(tmp_path / "toy.yaml", synthetic_spec())
    out = wavesweep("plan", str(spec), "--store", store_url, cwd=tmp_path)
    assert out.returncode == 0 and "Cost: unknown" in out.stdout, out.stderr
    if sqlite_file is None:
        assert tables_of(store_url) == []
    else:
        assert sqlite_file.read_bytes() == b""


def test_a_writer_creates_the_store_a_reader_then_opens(store_url):
    from orchestrator.store import Store

    Store(store_url).close()
    reader = Store(store_url, writer=False)
    assert reader.study_names() == []
    reader.close()
