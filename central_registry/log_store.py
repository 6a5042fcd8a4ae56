"""Appending many lookups to the log at once (screening) with dense, unique indexes.

A screening message logs up to thousands of lookups. They are appended in one
statement with consecutive indexes computed from the log's current size;
another writer that took the same indexes makes the primary key refuse the
insert, and the append is retried in a savepoint, so no index is ever used
twice and none is skipped.

Every value is held to its column's size here, on both backends (SQLite does
not enforce ``VARCHAR`` lengths): identifiers that do not fit are refused, a
refusal's reason is cut to :data:`central_registry.request_limits.MAX_REASON_CHARS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import LogEntry
from central_registry.request_limits import bounded_reason
from central_registry.transparency import append_leaves, lock_log
from credence.errors import AlreadyExists, InvalidInput, Unavailable

_ATTEMPTS = 5
OUTCOME_DISPATCHED = "dispatched"
OUTCOME_REFUSED = "refused"
#: ``basis`` is ``consent <id>``, ``mandate <statute / case>`` (each at most 256
#: characters in the token) or ``public register``.
MAX_BASIS_CHARS = 600


def _column_length(name: str) -> int:
    length = getattr(LogEntry.__table__.c[name].type, "length", None)
    assert isinstance(length, int), f"log_entries.{name} has no length"
    return length


#: The bounded text columns and their sizes, read from the model: one source of truth.
_TEXT_LIMITS = {
    name: _column_length(name) for name in ("query_id", "requester", "kinds", "grant_id", "outcome")
}


@dataclass(frozen=True, slots=True)
class LogRow:
    """One entry to append. Holds no raw identifier."""

    query_id: str
    requester: str
    subject_type: int
    subject_ref: bytes
    purpose: int
    kinds: str
    grant_id: str
    basis: str
    outcome: str
    reason: str
    issued_at: datetime
    salt: bytes
    commitment: bytes
    embargo_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.outcome not in (OUTCOME_DISPATCHED, OUTCOME_REFUSED):
            raise InvalidInput(f"log outcome must be dispatched or refused, got {self.outcome!r}")
        for name, limit in (*_TEXT_LIMITS.items(), ("basis", MAX_BASIS_CHARS)):
            value = getattr(self, name)
            if len(value) > limit:
                raise InvalidInput(
                    f"log entry {name} is {len(value)} characters, over its column's "
                    f"{limit}: refuse the request before logging it"
                )
        # A reason describes; cutting it loses nothing a subject or auditor relies on.
        object.__setattr__(self, "reason", bounded_reason(self.reason))
        for name, value, size in (
            ("subject reference", self.subject_ref, 32),
            ("salt", self.salt, 16),
            ("commitment", self.commitment, 32),
        ):
            if len(value) != size:
                raise InvalidInput(f"log entry {name} must be {size} bytes, got {len(value)}")


def append_entries(session: Session, rows: Sequence[LogRow]) -> int:
    """Append ``rows`` in order; returns the index of the first (the rest follow).

    Raises:
        AlreadyExists: a query id or commitment is in the log already.
        Unavailable: concurrent appends kept taking the same indexes.
    """
    if not rows:
        return int(session.scalar(select(func.coalesce(func.max(LogEntry.idx) + 1, 0))) or 0)
    lock_log(session)
    for _ in range(_ATTEMPTS):
        first = int(session.scalar(select(func.coalesce(func.max(LogEntry.idx) + 1, 0))) or 0)
        values = [
            {
                "idx": first + offset,
                "query_id": row.query_id,
                "requester": row.requester,
                "subject_type": row.subject_type,
                "subject_ref": row.subject_ref,
                "purpose": row.purpose,
                "kinds": row.kinds,
                "grant_id": row.grant_id,
                "basis": row.basis,
                "outcome": row.outcome,
                "reason": row.reason,
                "issued_at": row.issued_at,
                "salt": row.salt,
                "commitment": row.commitment,
                "embargo_until": row.embargo_until,
            }
            for offset, row in enumerate(rows)
        ]
        try:
            with session.begin_nested():
                session.execute(insert(LogEntry), values)
                # The tree grows in the same transaction: it always matches the log.
                append_leaves(session, first, [row.commitment for row in rows])
        except IntegrityError:
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
        return first
    raise Unavailable(
        f"could not append to the log after {_ATTEMPTS} attempts (concurrent appends): retry"
    )
