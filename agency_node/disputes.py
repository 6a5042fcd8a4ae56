"""The agency's side of a contest: list open disputes, resolve them, tell the registry.

A resolution is one of three outcomes:

* ``upheld``: the record stands as it is; it is no longer marked disputed;
* ``corrected``: the agency fixed the record (re-import the corrected row);
  it is no longer marked disputed;
* ``removed``: the record was wrong and is deleted.

The change and the signed report to the registry succeed together: if the
registry cannot be told, nothing changes locally and the operator retries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from agency_node import database
from agency_node.models import Record, RecordDispute
from credence import payloads
from credence.envelope import Envelope, sign
from credence.errors import FailedPrecondition, InvalidInput, NotFound
from credence.keys import SigningKey
from credence.storage import immediate_writer
from credence.v1 import registry_pb2

OUTCOMES = ("upheld", "corrected", "removed")


@dataclass(frozen=True)
class OpenDispute:
    """A contest with records still flagged."""

    contest_id: str
    records: int
    kinds: tuple[str, ...]
    filed_at: datetime
    statement: str


def open_disputes(session: Session) -> list[OpenDispute]:
    """Every contest with records in state ``open``, oldest first."""
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
        result.append(OpenDispute(contest_id, int(count), tuple(sorted(kinds)), filed_at, note))
    return result


def resolve(
    engine: Engine,
    contest_id: str,
    outcome: str,
    *,
    note: str,
    member_id: str,
    signing_key: SigningKey,
    now: datetime,
    report: Callable[[Envelope], None],
) -> int:
    """Resolve a contest locally and report it; returns how many records it touched.

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
        resolution = registry_pb2.ContestResolution(
            contest_id=contest_id, agency=member_id, outcome=outcome, note=note
        )
        resolution.resolved_at.FromDatetime(now)
        # Told the registry first: if it refuses, the transaction rolls back.
        report(sign(payloads.CONTEST_RESOLUTION, resolution.SerializeToString(), [signing_key]))
        return len(record_pks)
