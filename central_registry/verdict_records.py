"""The verdicts the registry served: one ``verdict_records`` row each, written, read, erased.

Every served single verdict gets a row before its response returns (what a
subject's review names, and which agencies answered it), with the signed
explanation of a credit verdict. Concurrent lookups write their rows in one
transaction (:class:`VerdictRecords`, group commit as the log does). A row is
erased at its ``expires_at``, the lookup's data life, by the hourly
housekeeping (:func:`erase_expired_records`).

The functions receive a ``Session`` and run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from central_registry.log.group_commit import GroupCommit
from central_registry.models import LogEntry, VerdictRecord
from central_registry.store.driver import Driver
from credence.encoding import require_utc

__all__ = [
    "MAX_LISTED",
    "VerdictRecords",
    "VerdictRow",
    "erase_expired_records",
    "explanations_for_subject",
    "insert_rows",
    "verdict_ids",
]

#: A subject's listing of explanations holds at most this many, the newest.
MAX_LISTED = 500

_COLUMNS = (
    "verdict_id", "query_id", "subject_type", "subject_ref", "requester", "answered",
    "issued_at", "expires_at", "explanation",
)  # fmt: skip
_INSERT = (
    f"INSERT INTO verdict_records ({', '.join(_COLUMNS)}) "  # noqa: S608 - our names
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """One served verdict, to be written.

    Attributes:
        verdict_id: the verdict's id.
        query_id: the query it answers (the log entry's).
        subject_type: the subject's type (proto ``SubjectType`` value).
        subject_ref: the 32-byte subject reference.
        requester: the member it was served to.
        answered: the agencies whose answers are in its sum.
        issued_at: when it was signed.
        expires_at: when the row is erased (the lookup's data life).
        explanation: the signed explanation envelope's bytes, for a credit verdict.
    """

    verdict_id: str
    query_id: str
    subject_type: int
    subject_ref: bytes
    requester: str
    answered: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    explanation: bytes | None = None


def insert_rows(session: Session, rows: Sequence[VerdictRow]) -> None:
    """Insert ``rows`` in one statement (driver level: one per served verdict)."""
    driver = Driver(session)
    time = driver.time
    driver.many(
        _INSERT,
        [
            (
                row.verdict_id, row.query_id, row.subject_type, bytes(row.subject_ref),
                row.requester, ",".join(row.answered), time(row.issued_at),
                time(row.expires_at), row.explanation,
            )
            for row in rows
        ],
    )  # fmt: skip


def explanations_for_subject(
    session: Session, subject_ref: bytes, now: datetime, *, limit: int = MAX_LISTED
) -> list[bytes]:
    """The signed explanations of unexpired credit verdicts about a subject, newest first.

    A verdict under a mandate's embargo stays hidden until its log entry may
    be seen (:func:`central_registry.log.entries.entries_for_subject`).
    """
    now = require_utc(now)
    statement = (
        select(VerdictRecord.explanation)
        .join(LogEntry, LogEntry.query_id == VerdictRecord.query_id)
        .where(
            VerdictRecord.subject_ref == bytes(subject_ref),
            VerdictRecord.explanation.is_not(None),
            VerdictRecord.expires_at > now,
            or_(LogEntry.embargo_until.is_(None), LogEntry.embargo_until <= now),
        )
        .order_by(VerdictRecord.issued_at.desc(), VerdictRecord.verdict_id)
        .limit(limit)
    )
    return [bytes(data) for data in session.scalars(statement) if data is not None]


def verdict_ids(
    session: Session, subject_ref: bytes, query_ids: Iterable[str], now: datetime
) -> dict[str, str]:
    """Query id -> the id of the verdict served for it, among a subject's unexpired rows."""
    wanted = list(query_ids)
    if not wanted:
        return {}
    statement = select(VerdictRecord.query_id, VerdictRecord.verdict_id).where(
        VerdictRecord.subject_ref == bytes(subject_ref),
        VerdictRecord.query_id.in_(wanted),
        VerdictRecord.expires_at > require_utc(now),
    )
    return {str(row[0]): str(row[1]) for row in session.execute(statement)}


def erase_expired_records(session: Session, now: datetime) -> int:
    """Delete the rows whose ``expires_at`` is at or before ``now``; returns how many."""
    result = session.execute(
        delete(VerdictRecord).where(VerdictRecord.expires_at <= require_utc(now))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class VerdictRecords:
    """Writes served verdicts' rows, those of concurrent lookups in one transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._writes: GroupCommit[VerdictRow, None] = GroupCommit(self._write)

    def _write(self, rows: Sequence[VerdictRow]) -> list[None]:
        with self._sessions.begin() as session:
            insert_rows(session, rows)
        return [None] * len(rows)

    async def record(self, row: VerdictRow) -> None:
        """Write ``row`` with the others waiting now; committed when this returns.

        Raises:
            Exception: the database refused the group (every row in it is unwritten).
        """
        await self._writes.submit(row)
