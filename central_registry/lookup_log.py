"""What a lookup writes: its limits, its log rows, its grant uses.

A single lookup writes everything in one transaction, shared with the other
single lookups waiting at that moment (group commit,
:meth:`LookupLog.write_verdict` over :mod:`central_registry.verdict_writes`):
its rate and log-row quota, its grant's use, its row (dispatched or refused)
and its subject's count. A screening message spends its rate and quota first,
in a transaction of its own (:meth:`LookupLog.admit`), then counts its grant
uses, appends its rows and counts its subjects in one transaction
(:meth:`LookupLog.record_screened`, where a grant that is used up or revoked
refuses its row alone). Refusals are logged within the requester's quotas, or
go unlogged with a warning (:meth:`LookupLog.record_refusals`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.entries import append_entries
from central_registry.log.group_commit import GroupCommit
from central_registry.log.rows import LogRow
from central_registry.store import grant_rows
from central_registry.verdict_writes import VerdictOutcome, VerdictWrite, write_verdicts
from credence.errors import CredenceError

__all__ = ["LookupLog"]

_log = logging.getLogger(__name__)

#: Seconds between two reports of a requester's unlogged refusals.
UNLOGGED_REPORT_SECONDS = 60.0
#: Transactions a group of single lookups may take when other processes hold
#: the rows it needs (PostgreSQL deadlock or serialisation failure).
_GROUP_ATTEMPTS = 5
#: PostgreSQL's deadlock_detected and serialization_failure.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


class LookupLog:
    """The transactions of lookups over the registry database."""

    def __init__(self, sessions: sessionmaker[Session], quotas: LookupQuotas) -> None:
        self._sessions = sessions
        self._quotas = quotas
        #: Per requester: when its unlogged refusals were last reported, and how
        #: many went unlogged since. A flood must not grow the server's own log.
        self._unlogged: dict[str, tuple[datetime, int]] = {}
        # Looked up at each group, not bound now: a test may stand in for it.
        self._verdicts: GroupCommit[VerdictWrite, VerdictOutcome] = GroupCommit(
            lambda writes: self.write_verdicts(writes)  # noqa: PLW0108
        )

    def admit(self, requester: str, now: datetime, rows: int) -> None:
        """Spend a request of ``requester``'s rate and ``rows`` of its log-row quota.

        In the database, so the limits hold across every registry process.

        Raises:
            ResourceExhausted: the rate or the quota is spent.
        """
        with self._sessions.begin() as session:
            self._quotas.take_request(session, requester, rows, now)

    async def write_verdict(self, write: VerdictWrite) -> int:
        """Write one single lookup with the others waiting now; its log index.

        Its rate, grant use, log row and subject count are written in one
        transaction, that of its group; it is committed when this returns.

        Raises:
            CredenceError: the lookup is refused; its refusal is logged (within
                its quotas) or reported as unlogged.
        """
        outcome = await self._verdicts.submit(write)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.index is not None, "a dispatched lookup has its log index"
        return outcome.index

    def write_verdicts(self, writes: Sequence[VerdictWrite]) -> list[VerdictOutcome]:
        """Write a group of single lookups in one transaction, or each alone.

        A refusal of the group as a whole (the daily subject limit, a failing
        append) rolls it back; each lookup is then written in a transaction of
        its own, where the same refusal is that lookup's alone and is logged.
        """
        try:
            outcomes = self._write_group(writes)
        except CredenceError as exc:
            if len(writes) > 1:
                return [self.write_verdicts([write])[0] for write in writes]
            refused = replace(writes[0], row=None, grant_id="", error=exc)
            try:
                outcomes = self._write_group([refused])
            except CredenceError as again:
                outcomes = [VerdictOutcome(error=exc, unlogged=again)]
        for write, outcome in zip(writes, outcomes, strict=True):
            if outcome.unlogged is not None:
                self._report_unlogged(write.requester, 1, write.now, outcome.unlogged)
        return outcomes

    def _write_group(self, writes: Sequence[VerdictWrite]) -> list[VerdictOutcome]:
        for attempt in range(_GROUP_ATTEMPTS):
            try:
                with self._sessions.begin() as session:
                    return write_verdicts(session, self._quotas, writes)
            except DBAPIError as exc:
                # A bucket created or a grant row locked by another process
                # meanwhile (PostgreSQL): the group is written again from the start.
                if attempt + 1 == _GROUP_ATTEMPTS or not _retryable(exc):
                    raise
        raise AssertionError("unreachable")

    def record_screened(
        self,
        dispatched: Sequence[LogRow],
        requester: str,
        now: datetime,
        refusal_rows: Callable[[Mapping[int, CredenceError]], Sequence[LogRow]],
    ) -> dict[int, CredenceError]:
        """Log a screening message's rows with their grant uses, in one transaction.

        Each dispatched row's grant (if any) is counted first; a row whose
        grant allows no more use is refused alone. ``refusal_rows`` is then
        given those refusals, by position in ``dispatched``, and returns the
        refusal rows to log (the message's other refusals too, within its
        budget); they are appended before the rows still dispatched.

        Returns:
            The refusals of grant use, by position in ``dispatched``.

        Raises:
            CredenceError: the log or the daily subject limit refused the message;
                nothing was written, no grant use counted.
        """
        with self._sessions.begin() as session:
            used_up: dict[int, CredenceError] = {}
            for position, row in enumerate(dispatched):
                if row.grant_id:
                    try:
                        # A refused use writes nothing: the transaction goes on.
                        grant_rows.use_grant(session, row.grant_id, now)
                    except CredenceError as exc:
                        used_up[position] = exc
            kept = [row for position, row in enumerate(dispatched) if position not in used_up]
            append_entries(session, [*refusal_rows(used_up), *kept])
            self._quotas.note_subjects(session, requester, [row.subject_ref for row in kept], now)
            return used_up

    def record_recovery(self, rows: Sequence[LogRow]) -> int:
        """Append a recovery request's leaves (one per missing agency); the first's log index.

        Committed before the request leaves (:mod:`central_registry.mask_recovery`).

        Raises:
            CredenceError: the log refused them (a leaf already logged: one
                missing set per query).
        """
        with self._sessions.begin() as session:
            return append_entries(session, rows)

    def record_refusals(self, rows: Sequence[LogRow], requester: str, now: datetime) -> None:
        """Log a screening message's refused rows within its quota, or warn that they went unlogged.

        (A single refused lookup is logged with its group,
        :func:`central_registry.verdict_writes.write_verdicts`, within the
        refused-rows quota that bounds what a flood of them adds.)
        """
        if not rows:
            return
        try:
            with self._sessions.begin() as session:
                self._quotas.take_rows(session, requester, len(rows), now)
                append_entries(session, rows)
        except CredenceError as exc:
            # A refusal cannot itself be refused: it goes unlogged, and says so at
            # most once a minute per requester, with the count since.
            self._report_unlogged(requester, len(rows), now, exc)

    def _report_unlogged(
        self, requester: str, count: int, now: datetime, reason: CredenceError
    ) -> None:
        last, pending = self._unlogged.get(requester, (None, 0))
        pending += count
        if last is not None and (now - last).total_seconds() < UNLOGGED_REPORT_SECONDS:
            self._unlogged[requester] = (last, pending)
            return
        self._unlogged[requester] = (now, 0)
        _log.warning("%d refused lookups by %r not logged: %s", pending, requester, reason)
