"""Engines, sessions and the schema check: the only place that knows which database is behind a URL."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import SchemaOutOfDate, StoreError

DEFAULT_STORE = "sqlite:///wavesweep.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def resolve_url(url: str | None) -> str:
    """--store, else $WAVESWEEP_STORE (keeps a password out of shell history), else ./wavesweep.db."""
    url = url or os.environ.get("WAVESWEEP_STORE") or DEFAULT_STORE
    # A bare postgresql:// would pick psycopg2, which we do not depend on; psycopg 3 is the maintained driver.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # An absolute SQLite path names the same file from every working directory (a Ray job's is a temp dir).
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser().resolve())
    return url


def mask(url: str) -> str:
    """The URL with its password replaced by ***, for every message and log line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable store URL>"


def make_engine(url: str, *, writer: bool = True) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"store URL {mask(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///wavesweep.db or "
                         "postgresql+psycopg://user@host/db)") from None
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser()
        if not writer and not path.exists():
            raise StoreError(f"no store at {path}: run a study first, or pass --store / set WAVESWEEP_STORE")
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    _tune_sqlite(engine, writer)
    return engine


def _tune_sqlite(engine: Engine, writer: bool) -> None:
    # WAL lets readers (the dashboard, `wavesweep status`) read while the driver writes; BEGIN IMMEDIATE takes the
    # write lock at the start of a transaction, so two writers queue on busy_timeout instead of failing mid-way
    # with "database is locked". Readers (status, export, the dashboard) use a plain deferred BEGIN: an IMMEDIATE
    # one would take the write lock for every read and stall the driver.
    # Recipe: https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#pysqlite-serializable
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def alembic_config(engine: Engine):  # -> alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()  # type: ignore[return-value]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def ensure_schema(engine: Engine, url: str) -> None:
    """Create the schema in an empty database; refuse an out-of-date one with the command that upgrades it."""
    try:
        current = current_revision(engine)
        if current is None:
            if inspect(engine).get_table_names():
                raise StoreError(f"store {mask(url)} has tables but no wavesweep schema version; point --store "
                                 "at an empty or wavesweep database")
            upgrade(engine)
            return
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open store {mask(url)}: {exc.__class__.__name__}: {exc.orig if hasattr(exc, 'orig') else exc}") from None
    head = head_revision(engine)
    if current == head:
        return
    from alembic.script import ScriptDirectory

    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config(engine)).walk_revisions()}
    if current in known:
        raise SchemaOutOfDate(f"store {mask(url)} has schema {current}, this wavesweep needs {head}. Back it up, "
                              f"then run: wavesweep db upgrade --store '{mask(url)}'")
    raise SchemaOutOfDate(f"store {mask(url)} has schema {current}, which this wavesweep does not know (a newer "
                          "version wrote it); upgrade wavesweep")


@contextmanager
def session_scope(factory: sessionmaker[Session], url: str) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, map database errors to StoreError, close."""
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise StoreError(f"store {mask(url)}: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
