"""Appending rows to the log and reading them back.

A screening message logs up to thousands of lookups. They are appended in one
statement with consecutive indexes computed from the log's current size;
another writer that took the same indexes makes the primary key refuse the
insert, and the append is retried in a savepoint, so no index is ever used
twice and none is skipped. The appended leaves are integrated into the tree
(:func:`central_registry.transparency.append_leaves`) in the same savepoint,
so the tree always matches the log.

Every function receives a ``Session`` and runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from central_registry.log.rows import LogRow
from central_registry.models import LogEntry
from central_registry.store.driver import Driver
from central_registry.transparency import append_leaves, lock_log, log_size
from credence.encoding import require_utc
from credence.errors import AlreadyExists, NotFound, Unavailable

__all__ = [
    "ERASED_REF",
    "ERASED_SALT",
    "append_entries",
    "entries_for_subject",
    "erase_expired",
    "log_entry",
]

_ATTEMPTS = 5
ERASED_REF = bytes(32)
ERASED_SALT = bytes(16)


_COLUMNS = (
    "idx", "query_id", "requester", "subject_type", "subject_ref", "purpose", "kinds",
    "grant_id", "basis", "outcome", "reason", "issued_at", "salt", "commitment", "embargo_until",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO log_entries ({', '.join(_COLUMNS)}) "  # noqa: S608 - our names
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


def append_entries(session: Session, rows: Sequence[LogRow]) -> int:
    """Append ``rows`` in order; returns the index of the first (the rest follow).

    Driver statements (:mod:`central_registry.store.driver`): every lookup
    appends. The log's size is read once per attempt, the rows inserted in one
    statement and their subtrees in one more.

    Raises:
        AlreadyExists: a query id or commitment is in the log already.
        Unavailable: concurrent appends kept taking the same indexes.
    """
    if not rows:
        return log_size(session)
    lock_log(session)
    driver = Driver(session)
    time = driver.time
    for _ in range(_ATTEMPTS):
        first = log_size(session)
        values = [
            (
                first + offset, row.query_id, row.requester, row.subject_type, row.subject_ref,
                row.purpose, row.kinds, row.grant_id, row.basis, row.outcome, row.reason,
                time(row.issued_at), row.salt, row.commitment, time(row.embargo_until),
            )
            for offset, row in enumerate(rows)
        ]  # fmt: skip
        driver.execute("SAVEPOINT log_append")
        try:
            driver.many(_INSERT, values)
            # The tree grows in the same transaction: it always matches the log.
            append_leaves(session, first, [row.commitment for row in rows])
        except driver.integrity_error:
            driver.execute("ROLLBACK TO SAVEPOINT log_append")
            driver.execute("RELEASE SAVEPOINT log_append")
            duplicate = session.execute(
                select(LogEntry.idx, LogEntry.query_id)
                .where(
                    or_(
                        LogEntry.query_id.in_([row.query_id for row in rows]),
                        LogEntry.commitment.in_([row.commitment for row in rows]),
                    )
                )
                .limit(1)
            ).first()
            if duplicate is not None:
                raise AlreadyExists(
                    f"log entry {duplicate.idx} already holds query {duplicate.query_id} or "
                    f"its commitment: log each query once, with a fresh salt"
                ) from None
            continue
        driver.execute("RELEASE SAVEPOINT log_append")
        return first
    raise Unavailable(
        f"could not append to the log after {_ATTEMPTS} attempts (concurrent appends): retry"
    )


def log_entry(session: Session, idx: int) -> LogEntry:
    """The entry at leaf index ``idx``.

    Raises:
        NotFound: the log has no entry at that index.
    """
    entry = session.get(LogEntry, idx)
    if entry is None:
        raise NotFound(
            f"no log entry at index {idx}: the log has {log_size(session)} entries, from index 0"
        )
    return entry


def entries_for_subject(session: Session, subject_ref: bytes, now: datetime) -> list[LogEntry]:
    """The log entries about a subject that it may see now, in log order.

    Entries under a mandate's embargo stay hidden until the embargo ends.
    """
    now = require_utc(now)
    statement = (
        select(LogEntry)
        .where(
            LogEntry.subject_ref == bytes(subject_ref),
            or_(LogEntry.embargo_until.is_(None), LogEntry.embargo_until <= now),
        )
        .order_by(LogEntry.idx)
    )
    return list(session.scalars(statement))


def erase_expired(session: Session, before: datetime) -> int:
    """Erase the content of entries issued before ``before``; returns how many.

    The leaf (the salted commitment) stays, so every tree head and proof stays
    valid; who looked whom up, why and on what basis is gone, and with the
    salt gone the commitment can no longer be tested against a guess.
    """
    result = session.execute(
        update(LogEntry)
        .where(LogEntry.issued_at < before, LogEntry.requester != "")
        .values(
            requester="",
            subject_ref=ERASED_REF,
            kinds="",
            grant_id="",
            basis="",
            reason="",
            salt=ERASED_SALT,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
