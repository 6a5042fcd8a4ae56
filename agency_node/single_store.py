"""The single path's database work: one transaction, three statements, through the driver.

A single query claims its id (the replay check), reads its subject's records
and appends its query-log row. Through SQLAlchemy's ORM and Core that cost
more than the two signature checks and the signature together (statement
building, result processing, events, a savepoint, a second connection for
the membership filter's generation). Here the statements are plain text
prepared once per dialect and run on one pooled driver connection in one
transaction, committed once:

* the claim is ``INSERT ... ON CONFLICT DO NOTHING``: no row inserted means
  the id was seen before, by this process or another sharing the database
  (the primary key decides, atomically), and no savepoint is needed;
* the records are read by the indexed ``subject_ref`` directly: one lookup
  costs less than asking whether the membership filter is still current;
* the log row is written in the same transaction, so a query is never
  answered without its row, and a refusal's row is written before the
  refusal leaves.

The batch path reads records the same way (:meth:`SingleStore.records_of_many`
for the subjects its membership filter lets through, and the filter's
generation check); its writes are :mod:`agency_node.batch_store`'s.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from agency_node.batch_store import LOG_COLUMNS, VECTOR_COLUMNS
from agency_node.evaluation import RecordFacts
from agency_node.models import (
    RECORD_GENERATION,
    AnswerVectors,
    NodeCounter,
    QueryLogEntry,
    Record,
    SeenQuery,
    UTCDateTime,
)

#: The record columns evaluation reads, in :meth:`SingleStore.facts`'s order.
_RECORD_COLUMNS = (
    "kind, category, status, occurred_at, expires_at, disputed, days_overdue, contest_due_at"
)
# References per IN list: under SQLite's default limit of 999 host parameters.
_IN_CHUNK = 900


class SingleTransaction:
    """The statements of one single query, on one driver cursor inside one transaction."""

    __slots__ = ("_cursor", "_store")

    def __init__(self, store: SingleStore, cursor: Any) -> None:
        self._store = store
        self._cursor = cursor

    def claim(self, query_id: str, expires_at: datetime) -> bool:
        """Record ``query_id`` as seen; False when it was seen before (a replay)."""
        store = self._store
        self._cursor.execute(store.claim_sql, (query_id, store.time(expires_at)))
        return bool(self._cursor.rowcount == 1)

    def records(self, subject_ref: bytes) -> list[RecordFacts]:
        """Every stored record of ``subject_ref``."""
        self._cursor.execute(self._store.records_sql, (subject_ref,))
        facts = self._store.facts
        return [facts(row) for row in self._cursor.fetchall()]

    def log(self, values: tuple[Any, ...]) -> None:
        """Append one query-log row, its values in :data:`LOG_COLUMNS` order, times converted."""
        self._cursor.execute(self._store.log_sql, values)

    def keep_vectors(self, values: tuple[Any, ...]) -> None:
        """Keep the answer's vector and masks, values in :data:`VECTOR_COLUMNS` order."""
        self._cursor.execute(self._store.vectors_sql, values)


class SingleStore:
    """The single path's prepared statements for one engine's dialect."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect
        self._sqlite = dialect.name == "sqlite"
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        stored = UTCDateTime().dialect_impl(dialect)
        self._bind_time: Callable[[datetime], Any] = stored.bind_processor(dialect) or (
            lambda value: value
        )
        self._read_time: Callable[[Any], Any] = stored.result_processor(dialect, None) or (
            lambda value: value
        )
        # Names and markers are constants of this module and the models: nothing from a caller.
        self.claim_sql = (
            f"INSERT INTO {SeenQuery.__tablename__} (query_id, expires_at) "  # noqa: S608
            f"VALUES ({marker}, {marker}) ON CONFLICT (query_id) DO NOTHING"
        )
        self._marker = marker
        self.records_sql = (
            f"SELECT {_RECORD_COLUMNS} FROM {Record.__tablename__} "  # noqa: S608
            f"WHERE subject_ref = {marker}"
        )
        self.generation_sql = (
            f"SELECT value FROM {NodeCounter.__tablename__} "  # noqa: S608
            f"WHERE name = '{RECORD_GENERATION}'"
        )
        self.log_sql = (
            f"INSERT INTO {QueryLogEntry.__tablename__} ({', '.join(LOG_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([marker] * len(LOG_COLUMNS))})"
        )
        self.vectors_sql = (
            f"INSERT INTO {AnswerVectors.__tablename__} ({', '.join(VECTOR_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([marker] * len(VECTOR_COLUMNS))})"
        )

    def facts(self, row: Sequence[Any]) -> RecordFacts:
        """A row of the record columns (kind ... contest_due_at) as :class:`RecordFacts`."""
        kind, category, status, occurred, expires, disputed, overdue, contest_due = row
        read_time = self._read_time
        return RecordFacts(
            kind=kind,
            category=category,
            status=status,
            occurred_at=read_time(occurred),
            expires_at=read_time(expires),
            # An open contest shows as a dispute even when a re-import rewrote the flag.
            disputed=bool(disputed) or contest_due is not None,
            days_overdue=overdue,
            contest_due_at=None if contest_due is None else read_time(contest_due),
        )

    def record_generation(self) -> int:
        """The record generation now (see :func:`agency_node.database.record_generation`)."""
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(self.generation_sql)
            row = cursor.fetchone()
            cursor.close()
        finally:
            connection.close()
        return int(row[0]) if row and row[0] is not None else 0

    def records_of_many(self, refs: Sequence[bytes]) -> dict[bytes, list[RecordFacts]]:
        """Every stored record of each subject in ``refs`` (absent: none held)."""
        found: dict[bytes, list[RecordFacts]] = defaultdict(list)
        facts = self.facts
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            for start in range(0, len(refs), _IN_CHUNK):
                chunk = refs[start : start + _IN_CHUNK]
                cursor.execute(
                    f"SELECT subject_ref, {_RECORD_COLUMNS} FROM {Record.__tablename__} "  # noqa: S608
                    f"WHERE subject_ref IN ({', '.join([self._marker] * len(chunk))})",
                    chunk,
                )
                for row in cursor.fetchall():
                    found[bytes(row[0])].append(facts(row[1:]))
            cursor.close()
        finally:
            connection.close()
        return found

    def time(self, value: datetime) -> Any:
        """``value`` as the driver stores it."""
        return self._bind_time(value)

    def read_time(self, value: Any) -> datetime:
        """A stored time as an aware UTC datetime."""
        result: datetime = self._read_time(value)
        return result

    @contextmanager
    def transaction(self) -> Iterator[SingleTransaction]:
        """One transaction on a pooled connection: committed on exit, rolled back on an error.

        Raises:
            Exception: the driver's own error (``sqlite3.Error``,
                ``psycopg.Error``) when the database fails; nothing of the
                transaction is kept.
        """
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                if self._sqlite:
                    # The connection runs in autocommit mode (credence.storage): begin
                    # explicitly. The first statement writes, so DEFERRED takes the
                    # write lock at once.
                    cursor.execute("BEGIN")
                yield SingleTransaction(self, cursor)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool
