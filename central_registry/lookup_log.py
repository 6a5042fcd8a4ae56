"""What a lookup writes, each in one transaction: its limits, its log rows, its grant uses.

A request spends its rate and log-row quota first, in a transaction of its
own, before anything else is written for it (:meth:`LookupLog.admit`). Then
its grant uses are counted, its rows appended and its subjects counted in one
transaction, for one subject (:meth:`LookupLog.record`) as for a screening
message (:meth:`LookupLog.record_screened`, where a grant that is used up or
revoked refuses its row alone). Refusals are logged within the requester's
quotas, or go unlogged with a warning (:meth:`LookupLog.record_refusals`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow
from central_registry.store import grant_rows
from credence.errors import CredenceError

__all__ = ["LookupLog"]

_log = logging.getLogger(__name__)

#: Seconds between two reports of a requester's unlogged refusals.
UNLOGGED_REPORT_SECONDS = 60.0


class LookupLog:
    """The transactions of lookups over the registry database."""

    def __init__(self, sessions: sessionmaker[Session], quotas: LookupQuotas) -> None:
        self._sessions = sessions
        self._quotas = quotas
        #: Per requester: when its unlogged refusals were last reported, and how
        #: many went unlogged since. A flood must not grow the server's own log.
        self._unlogged: dict[str, tuple[datetime, int]] = {}

    def admit(self, requester: str, now: datetime, rows: int) -> None:
        """Spend a request of ``requester``'s rate and ``rows`` of its log-row quota.

        In the database, so the limits hold across every registry process.

        Raises:
            ResourceExhausted: the rate or the quota is spent.
        """
        with self._sessions.begin() as session:
            self._quotas.take_request(session, requester, rows, now)

    def record(
        self,
        rows: Sequence[LogRow],
        requester: str,
        now: datetime,
        subjects: Sequence[bytes],
        grant_ids: Sequence[str] = (),
    ) -> int:
        """Count grant uses, append log rows and count distinct subjects: one transaction.

        Returns:
            The log index of the first row.

        Raises:
            CredenceError: a grant allows no more use, or the requester is over its
                daily subjects; nothing was written.
        """
        with self._sessions.begin() as session:
            for grant_id in grant_ids:
                grant_rows.use_grant(session, grant_id, now)
            first = append_entries(session, rows)
            self._quotas.note_subjects(session, requester, subjects, now)
            return first

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

    def record_refusals(
        self, rows: Sequence[LogRow], requester: str, now: datetime, *, single: bool = False
    ) -> None:
        """Log refused rows within the requester's quotas, or warn that they went unlogged.

        A single refused lookup is logged whatever its size, so that its
        subject sees it; the refused-rows quota bounds what a flood of them adds.
        """
        if not rows:
            return
        try:
            with self._sessions.begin() as session:
                self._quotas.take_rows(session, requester, len(rows), now)
                if single:
                    self._quotas.take_refused_rows(session, requester, len(rows), now)
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
