"""Database plumbing shared by the node and the registry.

Each server package owns its models and Alembic migrations; what they share
lives here: UTC timestamps, SQLite tuning, sessions, and running migrations
programmatically (no ``alembic.ini``) with a clear refusal when a database's
schema is not the code's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Dialect, Engine, MetaData, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from credence.encoding import require_utc
from credence.errors import FailedPrecondition

#: Constraint names that are stable across backends and migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: refuses naive values, always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC; naive for backends without a zoned timestamp type.

        Raises:
            ValueError: ``value`` is naive, a programming error.
        """
        if value is None:
            return None
        value = require_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 - the signature TypeDecorator calls
    ) -> datetime | None:
        """Attach UTC to a stored naive value, or convert a zoned one."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# MEASURED.md: a larger page cache and a 256 MiB memory map added 10-40% to
# lookups. Negative cache_size is in KiB.
_SQLITE_CACHE_KIB = 64 * 1024
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024
_SQLITE_BUSY_MS = 10_000


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
    # A deferred transaction that reads and then writes fails at once with
    # "database is locked" when another writer got there first (no busy wait
    # can help: it would deadlock). Writers that read first ask for IMMEDIATE.
    immediate = connection.get_execution_options().get(IMMEDIATE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: Execution option: begin SQLite transactions with BEGIN IMMEDIATE.
IMMEDIATE_OPTION = "credence_sqlite_immediate"


def reader(session: Session) -> Session:
    """Mark a fresh session as read-only work: on SQLite it begins DEFERRED.

    A read on an :func:`immediate_writer` engine would otherwise take the
    write lock and queue behind appends. Call before the session's first query.
    """
    session.connection(execution_options={IMMEDIATE_OPTION: False})
    return session


def immediate_writer(engine: Engine) -> Engine:
    """The same engine (same pool), but SQLite transactions take the write lock up front.

    For code whose transactions read and then write (log appends, grant uses):
    concurrent writers then wait their turn (up to the busy timeout) instead of
    failing. Other databases ignore the option.
    """
    return engine.execution_options(**{IMMEDIATE_OPTION: True})


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite database file, by its absolute path.

    Absolute, so that the URL names the same file whatever directory the
    process later runs in.
    """
    return f"sqlite:///{path.resolve()}"


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


@dataclass(frozen=True)
class Migrations:
    """One component's Alembic scripts, run programmatically.

    Attributes:
        script_location: the folder holding ``env.py`` and ``versions/``.
        migrate_command: what an operator types to upgrade, for error messages
            (``credence node migrate``).
    """

    script_location: Path
    migrate_command: str

    def _config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def head(self) -> str:
        """The revision the code needs.

        Raises:
            RuntimeError: the scripts have no revision or more than one head.
        """
        head = ScriptDirectory.from_config(self._config()).get_current_head()
        if head is None:
            raise RuntimeError(f"{self.script_location} has no revisions")
        return head

    def revision(self, engine: Engine) -> str | None:
        """The revision the database is at, or None for a database never migrated."""
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def upgrade(self, engine: Engine) -> None:
        """Bring the database up to :meth:`head`, in one transaction where possible."""
        with engine.begin() as connection:
            command.upgrade(self._config(connection), "head")

    def is_current(self, engine: Engine) -> bool:
        """Whether the database is at the revision the code needs."""
        return self.revision(engine) == self.head()

    def require_current(self, engine: Engine) -> None:
        """Refuse to run against a database whose schema is not the code's.

        Raises:
            FailedPrecondition: the schema is behind (or ahead of) the code; the
                message names both revisions and the command that fixes it.
        """
        current = self.revision(engine)
        head = self.head()
        if current != head:
            shown = current if current is not None else "none (never migrated)"
            raise FailedPrecondition(
                f"database schema is at revision {shown}, the code needs {head}: "
                f"run `{self.migrate_command} --dir {_data_dir_hint(engine)}`"
            )


def _data_dir_hint(engine: Engine) -> str:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return str(Path(database).parent)
    return "<data dir>"


def run_alembic_env(metadata: MetaData) -> None:
    """The body of a component's Alembic ``env.py``.

    :class:`Migrations` hands over an open connection in
    ``config.attributes["connection"]``; there is no ``alembic.ini``. With a
    ``sqlalchemy.url`` option instead (``alembic revision --autogenerate``
    during development) it opens its own.
    """
    from alembic import context  # noqa: PLC0415 - only inside a migration run

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things in place: later migrations copy the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    engine = create_engine(url)
    try:
        with engine.begin() as own:
            run(own)
    finally:
        engine.dispose()
