"""The central registry's database: engine, schema version, sessions.

SQLite in the registry's data directory is the default (``registry.db``); any
SQLAlchemy URL works (PostgreSQL through ``postgresql+psycopg://``). Schema
changes are the Alembic migrations in :mod:`central_registry.migrations`, run
programmatically: there is no ``alembic.ini`` on disk.

The repositories in :mod:`central_registry.store` (and the log and limits)
receive a ``Session``; the caller owns ``with session.begin():``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from central_registry.config import DATABASE_FILE
from credence import storage
from credence.storage import Migrations, session_factory, sqlite_url

__all__ = [
    "create_engine_for",
    "require_current_schema",
    "schema_head",
    "schema_is_current",
    "schema_revision",
    "session_factory",
    "sqlite_url_for",
    "upgrade_schema",
]

_SCHEMA = Migrations(Path(__file__).resolve().parent / "migrations", "credence registry migrate")


def sqlite_url_for(data_dir: Path) -> str:
    """The default database URL: ``registry.db`` in the registry's data directory."""
    return sqlite_url(data_dir / DATABASE_FILE)


def schema_head() -> str:
    """The revision the code needs: the head of :mod:`central_registry.migrations`."""
    return _SCHEMA.head()


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    return _SCHEMA.revision(engine)


def upgrade_schema(engine: Engine) -> None:
    """Bring the database up to :func:`schema_head`."""
    _SCHEMA.upgrade(engine)


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the revision the code needs."""
    return _SCHEMA.is_current(engine)


def require_current_schema(engine: Engine) -> None:
    """Refuse a database whose schema is not the code's.

    Raises:
        FailedPrecondition: the schema differs; the message says what to run.
    """
    _SCHEMA.require_current(engine)


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for the registry's database whose SQLite transactions begin IMMEDIATE.

    Nearly every registry transaction reads before it writes (the next log
    index, a grant's uses), and several run at once; on SQLite they must take
    the write lock up front to queue instead of failing.
    """
    return storage.immediate_writer(storage.create_engine_for(url, **kwargs))
