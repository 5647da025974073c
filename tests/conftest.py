"""Shared fixtures: store URLs for SQLite and PostgreSQL, and helpers to write specs.

PostgreSQL tests run against $WAVESWEEP_TEST_PG (default: the local server on 127.0.0.1:5432, database `test`).
Each test gets a database of its own, created from that server and dropped afterwards. Without a server they
skip with a reason, except under CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.run_record import RunResult, RunStatus

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("WAVESWEEP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg

    conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=3)


@pytest.fixture
def pg_url():
    try:
        admin = _pg_admin()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_URL} ({exc}); start one (pg_ctlcluster <version> main start) or set "
                    "WAVESWEEP_TEST_PG to a server where this user may CREATE DATABASE")
    name = f"wavesweep_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    yield f"{base}/{name}"
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def one_thread():
    """Torch and BLAS on one thread, undone after the test. The tiny model's ops are too small to split (a second
    thread only waits, and slows to a crawl when other tests load the machine); and a GP fit on several threads
    can sum in another order when the machine is busy (MKL gives up threads under load), so a search driven by
    BoTorch proposes other points: one thread, as the benchmark's workers run, proposes the same ones every time."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request):
    """Runs a test once per backend: the store conformance suite."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return request.getfixturevalue(fixture)


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def synthetic_spec(study: str = "toy", **overrides) -> dict:
    """A small study over experiments.synthetic: 2 x 3 cells, 2 seeds, 4 runs per wave -> 3 waves."""
    spec = {
        "study": study,
        "experiment": "experiments.synthetic:run",
        "fixed": {"surface": {"x": 1.0, "y": -2.0, "x*y": 0.5}, "noise_sd": 0.1},
        "factors": {"x": {"levels": [1, 2]}, "y": {"levels": [0.1, 0.2, 0.5]}},
        "response": {"metric": "loss", "goal": "minimize"},
        "strategy": {"mode": "grid", "runs_per_wave": 4},
        "resources": {"cpus_per_run": 1},
        "seeds": [0, 1],
    }
    spec.update(overrides)
    return spec


def insert_old_study(conn, *, wave: bool = True) -> None:
    """Rows as an older schema holds them: study 'old' (id 1) and, with ``wave``, its wave 1; for upgrade tests,
    which insert with SQL because the models describe the newest schema."""
    from sqlalchemy import text

    conn.execute(text("INSERT INTO studies (name, spec, fingerprint, created_at, updated_at) "
                      "VALUES ('old', '{}', 'f', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    if wave:
        conn.execute(text("INSERT INTO waves (study_id, number, design, reason, created_at) "
                          "VALUES (1, 1, 'full_factorial', 'first wave', CURRENT_TIMESTAMP)"))


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory):
    """Three real small studies run through the driver and Ray (``tests.test_dashboard.build_store``), built once
    per session: the dashboard's views and its browser test only read them."""
    from tests.test_dashboard import build_store

    return build_store(tmp_path_factory.mktemp("dashboard"))


T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def record_wave(url: str, spec: dict, cells: list, reason: str, stop: str,
                result: Callable[[int, Any], tuple[RunStatus, dict, str | None]]) -> None:
    """A finished one-wave study written straight into the store at ``url``: cell ``i`` ran 5 s from ``T0`` + 10 i s
    and ended as ``result(i, cell)`` says (status, metrics, error message or None)."""
    from orchestrator.cells import WavePlan
    from orchestrator.spec import parse_spec
    from orchestrator.store import Store

    store = Store(url)
    sid = store.open_study(parse_spec(spec))
    store.add_wave(sid, WavePlan(cells, "full_factorial", reason))
    for i, cell in enumerate(cells):
        start = T0 + timedelta(seconds=10 * i)
        store.mark_running(cell.key, host="node-1", device="cpu", started_at=start)
        status, metrics, error = result(i, cell)
        store.finish_run(cell.key, RunResult(status=status, metrics=metrics, started_at=start,
                                             finished_at=start + timedelta(seconds=5), wall_s=5.0,
                                             error_kind="exception" if error else None, error_message=error))
    store.finish_wave(sid, 1)
    store.stop_study(sid, stop)
    store.close()
