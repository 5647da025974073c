"""Engines, sessions and the schema check: the only place that knows which database is behind a URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.errors import SchemaOutOfDate, StoreError
from orchestrator.extras import require

DEFAULT_STORE = "sqlite:///wavesweep.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def resolve_url(url: str | None) -> str:
    """--store, else $WAVESWEEP_STORE (keeps a password out of shell history), else ./wavesweep.db."""
    url = url or os.environ.get("WAVESWEEP_STORE") or DEFAULT_STORE
    # A bare postgresql:// would pick psycopg2, which we do not depend on; psycopg 3 is the maintained driver.
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # An absolute SQLite path names the same file from every working directory (a Ray job's is a temp dir).
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser().resolve())
    return url


def mask(url: str) -> str:
    """The URL with its password replaced by ***, for every message and log line."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        return "<unparseable store URL>"


def _parse(url: str) -> URL:
    parsed = make_url(url)
    # SQLAlchemy ends the password at its first '@': the rest of an unescaped 'p@ss' would show as part of the host.
    if parsed.host and "@" in parsed.host:
        parsed = parsed.set(host=parsed.host.rsplit("@", 1)[1])
    return parsed


def scrub(message: str, url: str) -> str:
    """``message`` (e.g. a database driver's error) with the URL's password, should it echo it, replaced by ***."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return message
    # A very short password would also match inside ordinary words; such a one is not worth hiding anyway.
    return message.replace(str(password), "***") if password and len(str(password)) >= 4 else message


def no_store(url: str) -> StoreError:
    return StoreError(f"no store at {mask(url)}: run a study first (wavesweep run SPEC --store URL), or pass --store "
                      "/ set WAVESWEEP_STORE to the store it wrote")


def is_new_file(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet: a writer opening it would create it."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return False  # make_engine says what is wrong with it
    return (parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            and not Path(parsed.database).expanduser().exists())


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine on ``url``. A reader's (``writer=False``) never creates a file or writes: SQLite opens an existing
    file only, with ``query_only``; PostgreSQL runs every transaction read-only."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"store URL {mask(url)!r} is not a SQLAlchemy URL (e.g. sqlite:///wavesweep.db or "
                         "postgresql+psycopg://user@host/db)") from None
    if parsed.host and "@" in parsed.host:
        raise StoreError(f"store URL {mask(url)!r}: its password holds an '@' that is not escaped; write it as %40 "
                         "(and ':' as %3A, '/' as %2F), or pass the URL in WAVESWEEP_STORE")
    if parsed.get_backend_name() == "postgresql":
        require("postgres")
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if not writer and parsed.get_backend_name() == "postgresql":
            # The server itself refuses any write from a reader (libpq option; kept with the URL's own options).
            options = " ".join(filter(None, [str(parsed.query.get("options", "")),
                                             "-c default_transaction_read_only=on"]))
            connect_args["options"] = options
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser()
        if not writer and not path.is_file():
            raise no_store(url)
        if writer:
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
        if writer:  # WAL is a property of the file, set by its writer; a reader must not convert (write) a file
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if not writer:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def alembic_config(engine: Engine, connection: Connection | None = None):  # -> alembic.config.Config
    """Alembic's configuration: the engine (or one connection, already in a transaction, to migrate on)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(engine: Engine) -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()  # type: ignore[return-value]


def current_revision(engine: Engine | Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    if isinstance(engine, Connection):
        return MigrationContext.configure(engine).get_current_revision()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# Any fixed 64-bit number, the same in every wavesweep: the PostgreSQL advisory lock that first use and
# `wavesweep db upgrade` take, so that one process creates or migrates the schema while the others wait.
SCHEMA_LOCK = 0x77617665737765  # "wavesweep", roughly


@contextmanager
def _schema_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction that holds the store's schema lock: a second process opening the same store waits in here
    until the first has committed, then sees its schema. SQLite: the writer's BEGIN IMMEDIATE is the lock (the
    database's write lock). PostgreSQL: a transaction-level advisory lock, in READ COMMITTED so the waiter's next
    statement sees what the first one committed."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
            yield conn


def upgrade(engine: Engine) -> None:
    """Bring the schema to head (an empty database gets all of it), under the schema lock, in one transaction."""
    url = engine.url.render_as_string(hide_password=False)
    try:
        with _schema_transaction(engine) as conn:
            _upgrade_on(engine, conn)
    except SQLAlchemyError as exc:
        raise StoreError(scrub(f"cannot upgrade store {mask(url)}: {exc.__class__.__name__}: "
                               f"{getattr(exc, 'orig', None) or exc}", url)) from None


def _upgrade_on(engine: Engine, conn: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(engine, conn), "head")


def ensure_schema(engine: Engine, url: str, *, writer: bool = True) -> None:
    """Check the store's schema. A writer creates it in an empty database (one process only, however many open it
    at once); a reader never creates or changes anything: an empty database is refused as no store. An out-of-date
    schema is refused with the command that upgrades it."""
    try:
        if writer:
            with _schema_transaction(engine) as conn:
                current = current_revision(conn)
                if current is None:
                    _refuse_foreign_tables(conn, url)
                    _upgrade_on(engine, conn)
                    return
        else:
            with engine.connect() as conn:
                current = current_revision(conn)
                if current is None:
                    _refuse_foreign_tables(conn, url)
                    raise no_store(url)
    except SQLAlchemyError as exc:
        raise StoreError(scrub(f"cannot open store {mask(url)}: {exc.__class__.__name__}: "
                               f"{getattr(exc, 'orig', None) or exc}", url)) from None
    if why := schema_mismatch(engine, current, mask(url), "this wavesweep needs"):
        raise SchemaOutOfDate(why)


def schema_mismatch(engine: Engine, current: str, shown: str, needs: str) -> str | None:
    """Why a store at schema ``current`` cannot be used by this wavesweep, and what to do; None when it is at head.
    ``shown`` is its masked URL, ``needs`` how the reader words its own version ("this dashboard reads")."""
    head = head_revision(engine)
    if current == head:
        return None
    if current in known_revisions(engine):
        return (f"store {shown} has schema {current}, {needs} {head}. Back it up, then run: "
                f"wavesweep db upgrade --store '{shown}'")
    return (f"store {shown} has schema {current}, which this wavesweep does not know (a newer version wrote it); "
            "upgrade wavesweep")


def known_revisions(engine: Engine) -> set[str]:
    """Every schema revision this wavesweep's migrations know (older ones can be upgraded; others are newer)."""
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config(engine)).walk_revisions()}


def _refuse_foreign_tables(conn: Connection, url: str) -> None:
    if inspect(conn).get_table_names():
        raise StoreError(f"store {mask(url)} has tables but no wavesweep schema version; point --store at an empty "
                         "or wavesweep database")


@contextmanager
def session_scope(factory: sessionmaker[Session], url: str) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error, map database errors to StoreError, close."""
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise StoreError(scrub(f"store {mask(url)}: {exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}",
                               url)) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
