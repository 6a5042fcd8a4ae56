"""What single lookups write, for a group of them in one transaction.

Each lookup (a :class:`VerdictWrite`) spends its requester's rate and log-row
quota, counts its grant's use, and is logged, dispatched or refused, in the
transaction of its group (:func:`write_verdicts`). Every decision is its own:
a lookup refused by its rate, its grant or its checks is refused alone and
logged within its requester's quotas of refused rows, or goes unlogged. What
refuses a group as a whole (the daily subject limit, a log append that keeps
failing) makes the caller roll it back and write each lookup in a transaction
of its own (:class:`central_registry.lookup_log.LookupLog`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.limits.rate_store import HeldBuckets
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow
from central_registry.store import grant_rows
from credence.errors import CredenceError, ResourceExhausted

__all__ = ["VerdictOutcome", "VerdictWrite", "write_verdicts"]


@dataclass(frozen=True, slots=True)
class VerdictWrite:
    """One single lookup, checked, waiting to be written.

    ``row`` is its dispatched row when its checks passed; ``error`` the
    refusal of its checks otherwise. ``refusal`` builds its refused row for
    whatever refuses it (None: nothing identifiable to log). A lookup refused
    by its shape (``admitted`` false) spends no rate.
    """

    requester: str
    now: datetime
    refusal: Callable[[CredenceError], LogRow | None]
    row: LogRow | None = None
    grant_id: str = ""
    error: CredenceError | None = None
    admitted: bool = True

    def __post_init__(self) -> None:
        if (self.row is None) == (self.error is None):
            raise ValueError("a lookup to write has a dispatched row or a refusal, not both")


@dataclass(frozen=True, slots=True)
class VerdictOutcome:
    """What became of one lookup: its log index, or its refusal.

    ``unlogged`` is the quota that kept a refusal out of the log, if one did.
    """

    index: int | None = None
    error: CredenceError | None = None
    unlogged: CredenceError | None = None


def write_verdicts(
    session: Session, quotas: LookupQuotas, writes: Sequence[VerdictWrite]
) -> list[VerdictOutcome]:
    """Spend the limits of ``writes``, count their grants' uses and log them: caller's transaction.

    Returns:
        Each lookup's outcome, in order.

    Raises:
        CredenceError: the group as a whole was refused (the daily subject
            limit, or the log append); roll the transaction back.
    """
    held = quotas.hold(session, {write.requester for write in writes}, writes[0].now)
    errors = [_spend_rate(quotas, held, write) for write in writes]
    _use_grants(session, writes, errors)
    rows: list[LogRow] = []
    logged: list[int] = []  # position in ``writes`` of each row
    unlogged: dict[int, CredenceError] = {}
    for position, (write, error) in enumerate(zip(writes, errors, strict=True)):
        row = write.row if error is None else write.refusal(error)
        if row is None:
            continue
        if error is not None:
            try:
                quotas.spend_refusal(held, write.requester, write.now)
            except ResourceExhausted as exc:
                unlogged[position] = exc
                continue
        rows.append(row)
        logged.append(position)
    indexes: dict[int, int] = {}
    if rows:
        # append_entries takes the log's lock after the buckets and grants: every
        # writer takes them in this order.
        first = append_entries(session, rows)
        indexes = {position: first + offset for offset, position in enumerate(logged)}
    _note_subjects(session, quotas, writes, errors)
    held.write()
    return [
        VerdictOutcome(
            index=indexes.get(position) if error is None else None,
            error=error,
            unlogged=unlogged.get(position),
        )
        for position, error in enumerate(errors)
    ]


def _spend_rate(
    quotas: LookupQuotas, held: HeldBuckets, write: VerdictWrite
) -> CredenceError | None:
    """The lookup's refusal so far: by its rate first, then by its checks."""
    if write.admitted:
        try:
            quotas.spend_request(held, write.requester, 1, write.now)
        except ResourceExhausted as exc:
            return exc
    return write.error


def _use_grants(
    session: Session, writes: Sequence[VerdictWrite], errors: list[CredenceError | None]
) -> None:
    """Count each lookup's grant use; a use refused refuses its lookup alone."""
    # In grant order, so concurrent groups never wait on each other's rows in a cycle.
    for position in sorted(range(len(writes)), key=lambda position: writes[position].grant_id):
        write = writes[position]
        if errors[position] is None and write.grant_id:
            try:
                grant_rows.use_grant(session, write.grant_id, write.now)
            except CredenceError as exc:
                errors[position] = exc  # a refused use writes nothing


def _note_subjects(
    session: Session,
    quotas: LookupQuotas,
    writes: Sequence[VerdictWrite],
    errors: Sequence[CredenceError | None],
) -> None:
    """Count the subjects of the dispatched lookups, per requester.

    Raises:
        ResourceExhausted: a requester went over its daily subjects.
    """
    dispatched: dict[str, tuple[datetime, list[bytes]]] = {}
    for write, error in zip(writes, errors, strict=True):
        if error is None and write.row is not None:
            dispatched.setdefault(write.requester, (write.now, []))[1].append(write.row.subject_ref)
    for requester, (now, subjects) in dispatched.items():
        quotas.note_subjects(session, requester, subjects, now)
