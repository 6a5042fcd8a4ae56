"""Driver statements in the caller's transaction, for the paths every lookup takes.

SQLAlchemy builds, caches and runs a statement in 60-300 µs on this machine
(MEASURED.md); the driver runs a prepared one in 10-20 µs. The few statements
a lookup runs (its buckets, its grant's use, its log row and subtrees, its
subject) go through :class:`Driver` instead: plain SQL with ``?`` parameters,
rewritten once to the driver's style, on the connection of the caller's
``Session`` (so inside its transaction: on SQLite, after its ``BEGIN
IMMEDIATE``). Values are bound as SQLAlchemy's column types store them, so
rows written here read back the same through the ORM.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from credence.encoding import require_utc

__all__ = ["Driver", "insert_ignoring"]


@functools.lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    return sql.replace("?", "%s")


class Driver:
    """The DBAPI cursor of a session's connection, and how its backend binds values."""

    def __init__(self, session: Session) -> None:
        if session.new or session.dirty or session.deleted:
            session.flush()  # what the ORM holds reaches the database first, as it would
        connection = session.connection()
        self.dialect = connection.dialect.name
        self._sqlite = self.dialect == "sqlite"
        raw = connection.connection.dbapi_connection
        assert raw is not None, "the session's connection is open"
        self._cursor = raw.cursor()
        #: The driver's IntegrityError (a unique or primary key refused a row).
        self.integrity_error: type[Exception] = connection.dialect.loaded_dbapi.IntegrityError
        #: ``FOR UPDATE``, or nothing on SQLite (its writer lock serialises writers).
        self.for_update = "" if self._sqlite else " FOR UPDATE"

    def _sql(self, sql: str) -> str:
        return sql if self._sqlite else _format_style(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return int(self._cursor.rowcount)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement for each of ``rows``; how many rows they changed in all."""
        params = [tuple(row) for row in rows]
        if not params:
            return 0
        if len(params) == 1:
            # psycopg runs executemany in pipeline mode, a cost one row does not repay.
            self._cursor.execute(self._sql(sql), params[0])
        else:
            self._cursor.executemany(self._sql(sql), params)
        return int(self._cursor.rowcount)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query; its rows."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return list(self._cursor.fetchall())

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run a query; the first column of its first row, or None."""
        self._cursor.execute(self._sql(sql), tuple(params))
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    def time(self, value: datetime | None) -> datetime | str | None:
        """``value`` bound as :class:`credence.storage.UTCDateTime` stores it.

        Raises:
            ValueError: a naive datetime.
        """
        if value is None:
            return None
        value = require_utc(value)
        if self._sqlite:
            # SQLAlchemy's SQLite DATETIME text: naive UTC, microseconds always.
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def read_time(self, value: datetime | str) -> datetime:
        """A stored :class:`credence.storage.UTCDateTime` value, aware UTC."""
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def insert_ignoring(table: str, columns: Sequence[str], conflict: Sequence[str]) -> str:
    """``INSERT`` into ``table`` that skips a row whose ``conflict`` key exists already.

    SQLite (3.24+) and PostgreSQL spell it the same way.
    """
    marks = ", ".join("?" for _ in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "  # noqa: S608 - our names
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
