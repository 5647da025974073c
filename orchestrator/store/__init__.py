"""The SQL store (SQLAlchemy 2.0 + Alembic): SQLite file by default, any SQLAlchemy URL (PostgreSQL) by --store."""

from orchestrator.store.engine import DEFAULT_STORE, is_new_file, mask, resolve_url
from orchestrator.store.store import Store

__all__ = ["DEFAULT_STORE", "Store", "is_new_file", "mask", "resolve_url"]
