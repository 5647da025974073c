"""A store opened so that the dashboard physically cannot write to it, and the check that it can read it.

SQLite: a ``mode=ro`` URI connection with ``PRAGMA query_only``, no ``BEGIN`` of our own (each SELECT is its own
short read snapshot in WAL mode, so the driver's writes never wait for us and we never hold the write lock: the
failure optuna-dashboard#545 reports is a dashboard taking that lock). PostgreSQL: every transaction read-only.
Unlike :class:`orchestrator.store.Store`, nothing here creates tables or runs migrations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from orchestrator.store.engine import current_revision, mask, resolve_url, schema_mismatch


class StoreUnreadable(Exception):
    """The store cannot be shown; the message says why and what to do (passwords masked)."""


def open_readonly(url: str | None = None) -> Engine:
    """A read-only engine on ``url`` (default: $WAVESWEEP_STORE, else ./wavesweep.db)."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUnreadable(f"store URL {mask(url)!r} is not a SQLAlchemy URL") from None
    if parsed.get_backend_name() != "sqlite":
        # libpq option: the server refuses any write in every transaction of these connections.
        return create_engine(url, pool_pre_ping=True,
                             connect_args={"options": "-c default_transaction_read_only=on"})
    if not parsed.database or parsed.database == ":memory:":
        raise StoreUnreadable("an in-memory SQLite store has nothing to show: pass the file of a study's store")
    path = Path(parsed.database).expanduser().resolve()
    if not path.is_file():
        raise StoreUnreadable(f"no store at {path}: run a study first, or pass --store / set WAVESWEEP_STORE")

    def connect() -> sqlite3.Connection:
        # timeout = busy_timeout: a reader waits (never fails) in the rare moments WAL readers must, e.g. while
        # the writer restarts the WAL file.
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    return create_engine(f"sqlite:///{path}", creator=connect)


def check_schema(engine: Engine) -> None:
    """Raise :class:`StoreUnreadable` unless the store holds this wavesweep's schema (read-only checks only)."""
    where = engine.url.render_as_string(hide_password=True)
    try:
        current = current_revision(engine)
        if current is None:
            if inspect(engine).get_table_names():
                raise StoreUnreadable(f"{where} holds tables but no wavesweep schema: point --store at a wavesweep "
                                      "store")
            raise StoreUnreadable(f"{where} has no wavesweep schema yet: run a study into it first "
                                  "(wavesweep run SPEC --store URL)")
    except SQLAlchemyError as exc:
        raise StoreUnreadable(f"cannot read {where}: {exc.__class__.__name__}: {getattr(exc, 'orig', exc)}") from None
    if why := schema_mismatch(engine, current, where, "this dashboard reads"):
        raise StoreUnreadable(why)
