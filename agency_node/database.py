"""The agency node's database: engine, schema version, sessions, replay cache.

SQLite in the node's data directory is the default (``node.db``); any
SQLAlchemy URL works (PostgreSQL through ``postgresql+psycopg://``). Schema
changes are the Alembic migrations in :mod:`agency_node.migrations`, run
programmatically: there is no ``alembic.ini`` on disk.

Repositories here and in :mod:`agency_node.importer` receive a ``Session``;
the caller owns ``with session.begin():``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from agency_node.config import DATABASE_FILE
from agency_node.models import RECORD_GENERATION, NodeCounter, Record, SeenQuery
from credence.encoding import require_utc
from credence.storage import Migrations, create_engine_for, session_factory, sqlite_url

__all__ = [
    "bump_record_generation",
    "create_engine_for",
    "iter_all_subject_refs",
    "prune_seen_queries",
    "record_count",
    "record_generation",
    "require_current_schema",
    "schema_head",
    "schema_is_current",
    "schema_revision",
    "session_factory",
    "sqlite_url_for",
    "upgrade_schema",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def sqlite_url_for(data_dir: Path) -> str:
    """The default database URL: ``node.db`` in the node's data directory."""
    return sqlite_url(data_dir / DATABASE_FILE)


# --- schema ----------------------------------------------------------------


_SCHEMA = Migrations(_MIGRATIONS, "credence node migrate")


def schema_head() -> str:
    """The revision the code needs: the head of :mod:`agency_node.migrations`."""
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


# --- replay cache ----------------------------------------------------------


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


# --- records: what the Bloom filter needs -----------------------------------


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
