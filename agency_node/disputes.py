"""The agency's side of a contest: list open disputes, resolve them, tell the registry.

A resolution is one of three outcomes:

* ``upheld``: the record stands as it is; it is no longer marked disputed;
* ``corrected``: the agency fixed the record (re-import the corrected row);
  it is no longer marked disputed;
* ``removed``: the record was wrong and is deleted.

The change and the signed report to the registry succeed together: if the
registry cannot be told, nothing changes locally and the operator retries.

The dispute clock: an open contest is due its filing time plus the manifest's
``contest_deadline_days``; past it, it is overdue and its records stop
counting. A resolution clears a record's ``contest_due_at``, or moves it to
the due date of the record's next oldest open contest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from agency_node import database
from agency_node.models import Record, RecordDispute
from credence import payloads
from credence.contest_clock import is_overdue
from credence.encoding import format_time
from credence.envelope import Envelope, sign
from credence.errors import FailedPrecondition, InvalidInput, NotFound
from credence.keys import SigningKey
from credence.storage import immediate_writer, reader
from credence.v1 import registry_pb2

_log = logging.getLogger(__name__)

OUTCOMES = ("upheld", "corrected", "removed")
# Records per IN list: under SQLite's default limit of 999 host parameters.
_IN_CHUNK = 900


@dataclass(frozen=True)
class OpenDispute:
    """A contest with records still flagged, and its clock."""

    contest_id: str
    records: int
    kinds: tuple[str, ...]
    filed_at: datetime
    statement: str
    #: When the agency must have resolved it: ``filed_at`` + the deadline.
    due_at: datetime

    def age(self, now: datetime) -> timedelta:
        """How long it has been open at ``now``."""
        return max(now - self.filed_at, timedelta(0))

    def overdue(self, now: datetime) -> bool:
        """Open past its due date at ``now``: its records do not count."""
        return is_overdue(self.due_at, open_=True, now=now)


def open_disputes(session: Session, deadline: timedelta) -> list[OpenDispute]:
    """Every contest with records in state ``open``, oldest first, due ``deadline`` after filing."""
    rows = session.execute(
        select(
            RecordDispute.contest_id,
            func.count(RecordDispute.id),
            func.min(RecordDispute.at),
            func.min(RecordDispute.note),
        )
        .where(RecordDispute.state == "open")
        .group_by(RecordDispute.contest_id)
        .order_by(func.min(RecordDispute.at))
    ).all()
    result = []
    for contest_id, count, filed_at, note in rows:
        kinds = session.scalars(
            select(Record.kind)
            .join(RecordDispute, RecordDispute.record_pk == Record.id)
            .where(RecordDispute.contest_id == contest_id)
            .distinct()
        ).all()
        result.append(
            OpenDispute(
                contest_id, int(count), tuple(sorted(kinds)), filed_at, note, filed_at + deadline
            )
        )
    return result


def open_filings(session: Session) -> dict[str, datetime]:
    """Each open contest's filing time (its clock's start), by contest id."""
    return dict(
        session.execute(
            select(RecordDispute.contest_id, func.min(RecordDispute.at))
            .where(RecordDispute.state == "open")
            .group_by(RecordDispute.contest_id)
        ).all()
    )


class OverdueWatch:
    """Warns once in the node's log for each contest that newly fell overdue.

    The line names the contest and its due date, never the subject: the
    operator looks the contest up with ``credence node disputes list``.
    """

    def __init__(self, sessions: sessionmaker[Session], deadline: Callable[[], timedelta]) -> None:
        self._sessions = sessions
        self._deadline = deadline
        self._warned: set[str] = set()

    def check(self, now: datetime) -> list[str]:
        """Warn about contests overdue at ``now`` and not warned about yet; returns their ids."""
        deadline = self._deadline()
        with reader(self._sessions()) as session:
            filings = open_filings(session)
        overdue = {
            contest_id: filed + deadline
            for contest_id, filed in filings.items()
            if is_overdue(filed + deadline, open_=True, now=now)
        }
        fresh = sorted(set(overdue) - self._warned)
        for contest_id in fresh:
            _log.warning(
                "contest %s is overdue: it was due by %s; its records do not count in "
                "answers until you resolve it (credence node disputes resolve)",
                contest_id,
                format_time(overdue[contest_id]),
            )
        # A resolved contest drops out; one reopened under the same id would warn again.
        self._warned = set(overdue)
        return fresh


def restart_clocks(session: Session, record_pks: Collection[int], deadline: timedelta) -> None:
    """Set each record's ``contest_due_at`` from the open contests it has left.

    The record's next oldest open contest sets it (its filing time plus
    ``deadline``); with none left open it is cleared, and the record counts again.
    """
    pks = list(record_pks)
    for start in range(0, len(pks), _IN_CHUNK):
        chunk = pks[start : start + _IN_CHUNK]
        oldest = dict(
            session.execute(
                select(RecordDispute.record_pk, func.min(RecordDispute.at))
                .where(RecordDispute.record_pk.in_(chunk), RecordDispute.state == "open")
                .group_by(RecordDispute.record_pk)
            ).all()
        )
        cleared = [pk for pk in chunk if pk not in oldest]
        if cleared:
            session.execute(
                update(Record).where(Record.id.in_(cleared)).values(contest_due_at=None)
            )
        for pk, filed_at in oldest.items():
            session.execute(
                update(Record).where(Record.id == pk).values(contest_due_at=filed_at + deadline)
            )


def resolve(
    engine: Engine,
    contest_id: str,
    outcome: str,
    *,
    note: str,
    member_id: str,
    signing_key: SigningKey,
    now: datetime,
    deadline: timedelta,
    report: Callable[[Envelope], None],
) -> int:
    """Resolve a contest locally and report it; returns how many records it touched.

    ``deadline`` is the manifest's contest deadline: a record with another
    contest still open keeps counting only until that one falls due.

    Raises:
        InvalidInput: an unknown outcome.
        NotFound: no open dispute with this contest id.
        CredenceError: the registry refused the report (nothing changed).
    """
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    with database.session_factory(immediate_writer(engine)).begin() as session:
        record_pks = list(
            session.scalars(
                select(RecordDispute.record_pk).where(
                    RecordDispute.contest_id == contest_id, RecordDispute.state == "open"
                )
            )
        )
        if not record_pks:
            known = session.scalar(
                select(func.count()).where(RecordDispute.contest_id == contest_id)
            )
            if known:
                raise FailedPrecondition(f"contest {contest_id} is already resolved")
            raise NotFound(
                f"no dispute for contest {contest_id}: see `credence node disputes list`"
            )
        session.execute(
            update(RecordDispute)
            .where(RecordDispute.contest_id == contest_id)
            .values(state=outcome, note=note or RecordDispute.note, at=now)
        )
        if outcome == "removed":
            session.execute(delete(Record).where(Record.id.in_(record_pks)))
            database.bump_record_generation(session)
        else:
            still_open = set(
                session.scalars(
                    select(RecordDispute.record_pk).where(
                        RecordDispute.record_pk.in_(record_pks), RecordDispute.state == "open"
                    )
                )
            )
            session.execute(
                update(Record)
                .where(Record.id.in_(set(record_pks) - still_open))
                .values(disputed=False)
            )
            restart_clocks(session, record_pks, deadline)
        resolution = registry_pb2.ContestResolution(
            contest_id=contest_id, agency=member_id, outcome=outcome, note=note
        )
        resolution.resolved_at.FromDatetime(now)
        # Told the registry first: if it refuses, the transaction rolls back.
        report(sign(payloads.CONTEST_RESOLUTION, resolution.SerializeToString(), [signing_key]))
        return len(record_pks)
