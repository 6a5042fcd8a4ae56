"""The agency node's database: engine, schema version, sessions, replay cache.

SQLite in the node's data directory is the default (``node.db``); any
SQLAlchemy URL works (PostgreSQL through ``postgresql+psycopg://``). Schema
changes are the Alembic migrations in :mod:`agency_node.migrations`, run
programmatically: there is no ``alembic.ini`` on disk.

Repositories here and in :mod:`agency_node.importer` receive a ``Session``;
the caller owns ``with session.begin():``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agency_node.models import RECORD_GENERATION, NodeCounter, Record, SeenQuery
from credence.encoding import require_utc
from credence.errors import FailedPrecondition, Replayed

__all__ = [
    "DB_FILE_NAME",
    "bump_record_generation",
    "create_engine_for",
    "iter_all_subject_refs",
    "prune_seen_queries",
    "record_count",
    "record_generation",
    "remember_query",
    "require_current_schema",
    "schema_head",
    "schema_is_current",
    "schema_revision",
    "session_factory",
    "sqlite_url_for",
    "upgrade_schema",
]

DB_FILE_NAME = "node.db"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# MEASURED.md: a larger page cache and a 256 MiB memory map added 10-40% to
# lookups. Negative cache_size is in KiB.
_SQLITE_CACHE_KIB = 64 * 1024
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024
_SQLITE_BUSY_MS = 10_000


def sqlite_url_for(data_dir: Path) -> str:
    """The default database URL: ``node.db`` in the node's data directory."""
    return f"sqlite:///{(data_dir / DB_FILE_NAME).resolve()}"


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # Hand transaction control to SQLAlchemy: pysqlite's own implicit BEGIN
    # skips some statements, so a rollback could leave part of a change.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the server read while an import writes; NORMAL is durable
        # against process crashes, and in WAL mode never corrupts the file.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite enforces foreign keys (dispute cascade) only when asked.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
        cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA mmap_size={_SQLITE_MMAP_BYTES}")
        cursor.execute("PRAGMA temp_store=FILE")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def create_engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``, tuned for SQLite when the URL is one.

    Args:
        url: any SQLAlchemy URL, e.g. :func:`sqlite_url_for` or
            ``postgresql+psycopg://user@host/db``.
        **kwargs: passed to :func:`sqlalchemy.create_engine`.

    Returns:
        The engine; the caller disposes of it.
    """
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


# --- schema ----------------------------------------------------------------


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def schema_head() -> str:
    """The revision the code needs: the head of :mod:`agency_node.migrations`.

    Raises:
        RuntimeError: the migration scripts have more than one head.
    """
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("agency_node.migrations has no revisions")
    return head


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_schema(engine: Engine) -> None:
    """Bring the database up to :func:`schema_head`, in one transaction where possible."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the revision the code needs."""
    return schema_revision(engine) == schema_head()


def _data_dir_hint(engine: Engine) -> str:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return str(Path(database).parent)
    return "<data dir>"


def require_current_schema(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not the code's.

    Raises:
        FailedPrecondition: the schema is behind (or ahead of) the code; the
            message names both revisions and the command that fixes it.
    """
    current = schema_revision(engine)
    head = schema_head()
    if current != head:
        shown = current if current is not None else "none (never migrated)"
        raise FailedPrecondition(
            f"database schema is at revision {shown}, the code needs {head}: "
            f"run `credence node migrate --dir {_data_dir_hint(engine)}`"
        )


# --- replay cache ----------------------------------------------------------


def remember_query(session: Session, query_id: str, expires_at: datetime) -> None:
    """Record ``query_id`` as seen; the replay check.

    The insert runs in a savepoint so that a refused replay leaves the
    caller's transaction usable (to log the refusal). The primary key makes
    the check atomic across every process sharing the database.

    Raises:
        Replayed: the id was seen before.
    """
    try:
        with session.begin_nested():
            session.execute(
                insert(SeenQuery).values(query_id=query_id, expires_at=require_utc(expires_at))
            )
    except IntegrityError:
        raise Replayed(f"query {query_id} was already received; send a new query id") from None


def prune_seen_queries(session: Session, now: datetime, skew: timedelta) -> int:
    """Forget ids whose queries expired more than ``skew`` ago.

    Such a query is refused as expired before the replay check, so its id
    is no longer needed.

    Returns:
        How many ids were forgotten.
    """
    cutoff = require_utc(now) - skew
    result = session.execute(delete(SeenQuery).where(SeenQuery.expires_at <= cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- records: what the membership filter needs ------------------------------


def record_generation(connection: Connection | Session) -> int:
    """A number that changes whenever records are written (0 for a fresh database)."""
    value = connection.scalar(
        select(NodeCounter.value).where(NodeCounter.name == RECORD_GENERATION)
    )
    return int(value or 0)


def bump_record_generation(connection: Connection | Session) -> None:
    """Mark the set of records as changed, in the caller's transaction."""
    connection.execute(
        update(NodeCounter)
        .where(NodeCounter.name == RECORD_GENERATION)
        .values(value=NodeCounter.value + 1)
    )


def record_count(connection: Connection | Session) -> int:
    """How many records are stored (expired ones included until purged)."""
    return int(connection.scalar(select(func.count()).select_from(Record)) or 0)


def iter_all_subject_refs(
    connection: Connection | Session, *, batch: int = 10_000
) -> Iterator[bytes]:
    """Every distinct subject reference held, streamed ``batch`` rows at a time."""
    statement = select(Record.subject_ref).distinct().execution_options(yield_per=batch)
    for ref in connection.execute(statement).scalars():
        yield bytes(ref)
