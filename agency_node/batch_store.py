"""The batch path's writes: replay claims and query-log rows, straight through the driver.

A batch of 1,000 subjects writes 1,000 replay-cache rows and 1,000 log rows.
Through the ORM that cost more than everything else the node does for the
batch (bind processing per row and per column, three commits); here the
statements are prepared once per dialect, the shared values (times, requester)
are converted once per batch, and the caller runs everything in one
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from agency_node.models import AnswerVectors, QueryLogEntry, SeenQuery, UTCDateTime

#: The query-log columns the answer paths write, in the order their values come.
LOG_COLUMNS = (
    "query_id",
    "received_at",
    "requester",
    "purpose",
    "kinds",
    "subject_ref",
    "outcome",
    "status_code",
    "reason",
    "entry_commitment",
    "log_promise",
    "answer_hash",
)

#: One query-log row in ``LOG_COLUMNS`` order, times already converted.
LogValues = tuple[Any, ...]

#: The ``answer_vectors`` columns (blind aggregation), in the order their values come.
VECTOR_COLUMNS = (
    "query_id",
    "batch",
    "layout_id",
    "audience",
    "item_ids",
    "vectors",
    "masks",
    "answered_at",
)


class BatchStore:
    """Prepared driver-level inserts for one database dialect."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        # The dialect's own implementation: on SQLite it also renders the stored text.
        processor = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._time: Callable[[datetime], Any] = processor or (lambda value: value)
        self._insert_seen = (
            # Names and markers are constants of this module: nothing from a caller.
            f"INSERT INTO {SeenQuery.__tablename__} (query_id, expires_at) "  # noqa: S608
            f"VALUES ({marker}, {marker})"
        )
        self._insert_log = (
            f"INSERT INTO {QueryLogEntry.__tablename__} ({', '.join(LOG_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([marker] * len(LOG_COLUMNS))})"
        )
        self.insert_vectors = (
            f"INSERT INTO {AnswerVectors.__tablename__} ({', '.join(VECTOR_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([marker] * len(VECTOR_COLUMNS))})"
        )

    def time(self, value: datetime) -> Any:
        """``value`` as the driver stores it (convert once, use for many rows)."""
        return self._time(value)

    def claim(
        self, connection: Connection, query_ids: Sequence[str], expires_at: datetime
    ) -> set[str]:
        """Record ids as seen; returns those not seen before (the replay check).

        An id that appears twice in ``query_ids`` is refused both times. Two
        processes racing on the same new id: one insert fails on the primary
        key and the caller's transaction fails with it, so no id is ever
        answered twice.
        """
        counts: dict[str, int] = {}
        for query_id in query_ids:
            counts[query_id] = counts.get(query_id, 0) + 1
        unique = [query_id for query_id, count in counts.items() if count == 1]
        if not unique:
            return set()
        stored = self._time(expires_at)
        # The common case has no replay at all: one insert, no lookup first.
        try:
            with connection.begin_nested():
                connection.exec_driver_sql(
                    self._insert_seen, [(query_id, stored) for query_id in unique]
                )
        except IntegrityError:
            pass  # some were seen before: the savepoint undid the insert; find which
        else:
            return set(unique)
        seen: set[str] = set()
        for start in range(0, len(unique), 900):
            chunk = unique[start : start + 900]
            seen.update(
                connection.scalars(select(SeenQuery.query_id).where(SeenQuery.query_id.in_(chunk)))
            )
        fresh = [query_id for query_id in unique if query_id not in seen]
        if fresh:
            connection.exec_driver_sql(
                self._insert_seen, [(query_id, stored) for query_id in fresh]
            )
        return set(fresh)

    def keep_vectors(self, connection: Connection, row: LogValues) -> None:
        """Keep one answer's vectors and masks (values in ``VECTOR_COLUMNS`` order)."""
        connection.exec_driver_sql(self.insert_vectors, [row])

    def log(self, connection: Connection, rows: Sequence[LogValues]) -> None:
        """Append query-log rows (each in ``LOG_COLUMNS`` order)."""
        if rows:
            connection.exec_driver_sql(self._insert_log, list(rows))
