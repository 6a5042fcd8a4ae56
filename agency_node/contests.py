"""Contests: a subject disputes records, the node flags them until resolved.

The registry routes a subject's contest to the agency as a signed
:class:`Contest`. The node flags every matching record disputed (verdicts then
show the dispute), writes a dispute history row for each, and returns a signed
receipt. Resolution (upheld, corrected, removed) is the agency's own decision.

The dispute clock: each flagged record's ``contest_due_at`` becomes the
earliest due date of its open contests, the registry's ``filed_at`` plus the
node's own verified manifest's ``contest_deadline_days``. Nothing the subject
sends sets or shortens it. Past it, evaluation stops counting the record.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, or_, select, update

from agency_node import database
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import Record, RecordDispute
from credence import payloads
from credence.clock import Clock
from credence.envelope import Envelope, sign, verify_message
from credence.errors import InvalidInput, NotFound
from credence.keys import SigningKey
from credence.statements import MAX_STATEMENT
from credence.storage import immediate_writer
from credence.v1 import agency_pb2


class ContestDesk:
    """Receives contests routed by the registry."""

    def __init__(
        self,
        *,
        member_id: str,
        manifests: ManifestHolder,
        signing_key: SigningKey,
        engine: Engine,
        clock: Clock,
    ) -> None:
        self._member_id = member_id
        self._manifests = manifests
        self._key = signing_key
        # Reads the records, then flags them, beside a busy server: lock up front.
        self._sessions = database.session_factory(immediate_writer(engine))
        self._clock = clock

    def file(self, envelope_bytes: bytes) -> Envelope:
        """Flag the contested records and return the signed receipt.

        Raises:
            VerificationError: the contest is not signed by the registry.
            InvalidInput: it lacks an id or subject, or the statement is too long.
            NotFound: the node holds no record of the subject (of the kind named).
        """
        contest = verify_message(
            Envelope.from_bytes(envelope_bytes),
            payloads.CONTEST,
            self._manifests.current().registry_keys,
            agency_pb2.Contest,
        )
        if not contest.contest_id or len(contest.subject.ref) != 32:
            raise InvalidInput("contest needs a contest_id and a 32-byte subject reference")
        if len(contest.statement) > MAX_STATEMENT:
            raise InvalidInput(f"contest statement is over {MAX_STATEMENT} characters")
        now = self._clock()
        filed = filed_at(contest, now)
        due = filed + self._manifests.current().contest_deadline
        where = [Record.subject_ref == bytes(contest.subject.ref)]
        if contest.record_kind:
            where.append(Record.kind == contest.record_kind)
        with self._sessions.begin() as session:
            record_pks = list(session.scalars(select(Record.id).where(*where)))
            if not record_pks:
                # Nothing to dispute: say so, rather than have an empty contest kept open.
                kind = f" of kind {contest.record_kind}" if contest.record_kind else ""
                raise NotFound(
                    f"{self._member_id} holds no record{kind} of this subject: there is "
                    "nothing to contest there, and no contest was filed"
                )
            already = set(
                session.scalars(
                    select(RecordDispute.record_pk).where(
                        RecordDispute.contest_id == contest.contest_id
                    )
                )
            )
            fresh = [pk for pk in record_pks if pk not in already]
            if fresh:
                session.execute(update(Record).where(Record.id.in_(fresh)).values(disputed=True))
                # The earliest open contest sets the clock: a later one never extends it.
                session.execute(
                    update(Record)
                    .where(
                        Record.id.in_(fresh),
                        or_(Record.contest_due_at.is_(None), Record.contest_due_at > due),
                    )
                    .values(contest_due_at=due)
                )
                session.add_all(
                    RecordDispute(
                        record_pk=pk,
                        contest_id=contest.contest_id,
                        state="open",
                        note=contest.statement,
                        # The clock's start: a resolution restarts later clocks from it.
                        at=filed,
                    )
                    for pk in fresh
                )
        receipt = agency_pb2.ContestReceipt(
            contest_id=contest.contest_id,
            agency=self._member_id,
            records_flagged=len(record_pks),
        )
        receipt.received_at.FromDatetime(now)
        return sign(payloads.CONTEST_RECEIPT, receipt.SerializeToString(), [self._key])


def filed_at(contest: agency_pb2.Contest, now: datetime) -> datetime:
    """When ``contest``'s clock started: the registry's filing time, never after ``now``.

    The filing time is the registry's (signed into the contest), so the node's
    due date is the one the subject sees; a contest without one, or dated
    after ``now``, runs from ``now``, so the clock never starts late.
    """
    filed = contest.filed_at.ToDatetime(tzinfo=UTC) if contest.HasField("filed_at") else now
    return min(filed, now)
