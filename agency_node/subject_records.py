"""A subject's own records, sealed to the subject's key (sealed subject access).

The registry relays a subject's request unchanged: a subject proof (action
``list-records``) naming the hash of a fresh HPKE public key, the binding of
the subject's personal key, and that public key. The node checks all three
against its manifest alone (:func:`credence.sealed_records.verify_request`),
reads every record it holds about the subject, expired ones not yet purged
included, and seals them to the subject's key, so the registry relays
ciphertext it cannot open. Amounts leave as a band, never the exact figure,
and no source-system record id leaves at all.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, func, select

from agency_node import database
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import Record
from credence import sealed_records
from credence.clock import Clock
from credence.envelope import Envelope
from credence.keys import SigningKey
from credence.storage import reader
from credence.v1 import subject_records_pb2

_log = logging.getLogger(__name__)

#: Upper bounds of the amount bands, in major units (amounts are kept in minor units, 1/100).
_BANDS = (100, 1_000, 10_000, 100_000, 1_000_000)


def amount_band(amount_minor: int | None, currency: str | None) -> str:
    """An amount as its band: ``1,000-9,999 EUR``; empty without an amount."""
    if amount_minor is None or currency is None:
        return ""
    major = abs(amount_minor) // 100
    lower = 0
    for upper in _BANDS:
        if major < upper:
            return f"{lower:,}-{upper - 1:,} {currency}"
        lower = upper
    return f"{lower:,} or more {currency}"


def how_to_contest(agency: str) -> str:
    """What the subject does when a record is wrong."""
    return (
        f"If a record is wrong, contest it: credence me contest --agency {agency} "
        "--statement 'what is wrong' (add --kind KIND for one kind of record). "
        f"{agency} flags the records disputed at once, verdicts show the dispute, "
        "and `credence me contests` shows how it was resolved. If it is not resolved "
        "by its due date, the records stop counting in verdicts until it is."
    )


def held_record(record: Record) -> subject_records_pb2.HeldRecord:
    """One record as its subject sees it, with its open contest's due date if any."""
    held = subject_records_pb2.HeldRecord(
        kind=record.kind,
        category=record.category,
        status=record.status,
        amount_band=amount_band(record.amount_minor, record.currency),
        # An open contest is a dispute even when a re-import rewrote the flag.
        disputed=record.disputed or record.contest_due_at is not None,
        days_overdue=max(record.days_overdue or 0, 0),
    )
    held.occurred_at.FromDatetime(record.occurred_at)
    held.expires_at.FromDatetime(record.expires_at)
    if record.contest_due_at is not None:
        held.contest_due_at.FromDatetime(record.contest_due_at)
    return held


class RecordDesk:
    """Answers a subject's relayed request with its records, sealed to the subject's key."""

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
        self._sessions = database.session_factory(engine)
        self._clock = clock

    def records(self, request: subject_records_pb2.ListSubjectRecordsRequest) -> Envelope:
        """The subject's records, sealed to the request's key, in an envelope the node signs.

        Raises:
            VerificationError: the binding or the subject proof does not verify
                against this node's manifest, or they do not name the key sent.
            InvalidInput: a malformed binding, proof or recipient key.
        """
        now = self._clock()
        manifest = self._manifests.current()
        checked = sealed_records.verify_request(
            subject_proof=request.subject_proof,
            binding=request.binding,
            recipient_key=bytes(request.recipient_key),
            identity_keys=manifest.identity_verifier_keys(),
            registry_id=manifest.registry.member_id,
            now=now,
        )
        subject = bytes.fromhex(checked.subject_ref)
        with reader(self._sessions()) as session:
            total = session.scalar(
                select(func.count()).select_from(Record).where(Record.subject_ref == subject)
            )
            rows = session.scalars(
                select(Record)
                .where(Record.subject_ref == subject)
                .order_by(Record.occurred_at, Record.id)
                .limit(sealed_records.MAX_RECORDS)
            )
            listed = [held_record(row) for row in rows]
        plain = subject_records_pb2.SubjectRecordList(
            agency=self._member_id,
            request_id=checked.request_id,
            records=listed,
            total=int(total or 0),
            how_to_contest=how_to_contest(self._member_id),
        )
        # The node's own log: the request id, never the subject or what was sealed.
        _log.info("sealed records for subject access request %s", checked.request_id)
        return sealed_records.seal(
            plain, request=checked, agency=self._member_id, signing_key=self._key, now=now
        )
