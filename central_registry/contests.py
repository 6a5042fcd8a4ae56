"""Routing a subject's contest to the agency that holds the records, and its outcome back.

The subject files a contest through the registry (a signed subject proof names
the agency). The registry signs it and sends it to that agency's node, which
flags the records disputed (verdicts then show the dispute) and returns a
signed receipt. When the agency resolves it (upheld, corrected, removed), its
node reports the signed resolution, and the subject sees it.

The dispute clock: a contest is due ``filed_at`` plus the manifest's
``contest_deadline_days``; open past it, it is overdue, and the agency's node
no longer counts the contested records until it resolves the contest.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central_registry.keyring import RegistryKeys
from central_registry.models import Contest
from credence import payloads
from credence.contest_clock import is_overdue
from credence.envelope import Envelope, sign, verify_message
from credence.errors import (
    ClaimMismatch,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from credence.grants.subject_proofs import SubjectProof
from credence.manifest import TrustedManifest
from credence.rpc.tls import channel_credentials
from credence.statements import MAX_STATEMENT, check_statement
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2, manifest_pb2, registry_pb2

OUTCOMES = ("upheld", "corrected", "removed")
CONTEST_TIMEOUT = 10.0


def signed_contest(
    proof: SubjectProof,
    token: str,
    request: registry_pb2.ContestRecordsRequest,
    *,
    manifest: TrustedManifest,
    keys: RegistryKeys,
    now: datetime,
) -> tuple[agency_pb2.Contest, Envelope, str]:
    """Check a contest request and sign the contest for the agency.

    Returns:
        The contest, its signed envelope and the agency's endpoint.

    Raises:
        PermissionDenied: the proof names another agency, or it is not an agency.
        InvalidInput: an empty or too long statement, or a kind the agency does not hold.
    """
    if proof.target != request.agency:
        raise PermissionDenied("the subject proof names another agency than the request")
    agency = manifest.active_member(request.agency)
    if agency.role != manifest_pb2.ROLE_AGENCY:
        raise InvalidInput(f"{request.agency!r} is not an agency: only agencies hold records")
    if request.record_kind and request.record_kind not in agency.record_kinds:
        raise InvalidInput(
            f"{request.agency} holds {', '.join(agency.record_kinds)}, not {request.record_kind}"
        )
    check_statement(request.statement, what="a contest")
    contest = agency_pb2.Contest(
        contest_id=uuid.uuid4().hex,
        subject=common_pb2.SubjectRef(
            type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes.fromhex(proof.subject_ref)
        ),
        record_kind=request.record_kind,
        statement=request.statement,
        subject_proof=token,
    )
    contest.filed_at.FromDatetime(now)
    envelope = sign(payloads.CONTEST, contest.SerializeToString(), [keys.signing])
    return contest, envelope, agency.endpoint


async def deliver(
    envelope: Envelope,
    contest: agency_pb2.Contest,
    *,
    agency_id: str,
    endpoint: str,
    manifest: TrustedManifest,
    keys: RegistryKeys,
) -> int:
    """Send the signed contest to the agency's node; returns how many records it flagged.

    Raises:
        NotFound: the node holds no record of the subject.
        Unavailable: the node could not be reached or refused.
        VerificationError: the receipt is not the agency's, or not for this contest.
    """
    credentials = channel_credentials(keys.tls_key_pem, keys.tls_cert_pem, keys.ca.certificate_pem)
    async with grpc.aio.secure_channel(endpoint, credentials) as channel:
        stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        try:
            response = await stub.FileContest(
                agency_pb2.FileContestRequest(contest=envelope.to_proto()),
                timeout=CONTEST_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                # The node holds no record of the subject: nothing to contest, nothing kept.
                raise NotFound(exc.details() or f"agency {agency_id} holds no record") from exc
            raise Unavailable(
                f"agency {agency_id} did not take the contest ({exc.code().name}): try again later"
            ) from exc
    receipt = verify_message(
        Envelope.from_proto(response.receipt),
        payloads.CONTEST_RECEIPT,
        manifest.member_keys(agency_id),
        agency_pb2.ContestReceipt,
    )
    if receipt.contest_id != contest.contest_id or receipt.agency != agency_id:
        raise ClaimMismatch("the agency's receipt is for another contest or agency")
    return int(receipt.records_flagged)


async def file_contest(
    request: registry_pb2.ContestRecordsRequest,
    *,
    prove: Callable[[], SubjectProof],
    sessions: sessionmaker[Session],
    manifest: TrustedManifest,
    keys: RegistryKeys,
    now: datetime,
) -> tuple[str, int]:
    """File a subject's contest: check and sign it, deliver it, keep it open.

    ``prove`` checks the request's subject proof (blocking, like the signing
    and the keeping, so both run in a worker thread); the delivery to the
    agency's node is awaited on the event loop.

    Returns:
        The contest id and how many records the agency flagged disputed.

    Raises:
        VerificationError: the subject proof or the agency's receipt does not check out.
        PermissionDenied: the proof names another agency, or it is not an agency.
        InvalidInput: an empty or too long statement, or a kind the agency does not hold.
        NotFound: the agency holds no record of the subject; nothing is kept.
        Unavailable: the agency's node could not be reached or refused.
    """

    def check() -> tuple[SubjectProof, agency_pb2.Contest, Envelope, str]:
        proof = prove()
        contest, envelope, endpoint = signed_contest(
            proof, request.subject_proof, request, manifest=manifest, keys=keys, now=now
        )
        return proof, contest, envelope, endpoint

    proof, contest, envelope, endpoint = await asyncio.to_thread(check)
    flagged = await deliver(
        envelope, contest, agency_id=request.agency, endpoint=endpoint, manifest=manifest, keys=keys
    )

    def keep() -> None:
        with sessions.begin() as session:
            record_contest(
                session,
                contest,
                agency_id=request.agency,
                subject_ref_hex=proof.subject_ref,
                records_flagged=flagged,
                now=now,
                deadline=manifest.contest_deadline,
            )

    await asyncio.to_thread(keep)
    return contest.contest_id, flagged


def record_contest(
    session: Session,
    contest: agency_pb2.Contest,
    *,
    agency_id: str,
    subject_ref_hex: str,
    records_flagged: int,
    now: datetime,
    deadline: timedelta,
) -> None:
    """Keep a delivered contest, open, due ``deadline`` after ``now`` (its filing time)."""
    session.add(
        Contest(
            contest_id=contest.contest_id,
            subject_ref=subject_ref_hex,
            agency=agency_id,
            record_kind=contest.record_kind,
            statement=contest.statement,
            state="open",
            records_flagged=records_flagged,
            filed_at=now,
            due_at=now + deadline,
        )
    )


def resolve(
    session: Session, envelope: Envelope, *, caller: str, manifest: TrustedManifest
) -> Contest:
    """Apply an agency's signed resolution of one of its contests.

    Raises:
        VerificationError: not signed by the calling agency.
        PermissionDenied: the contest belongs to another agency.
        NotFound: no such contest.
        FailedPrecondition: already resolved.
        InvalidInput: an unknown outcome.
    """
    resolution = verify_message(
        envelope, payloads.CONTEST_RESOLUTION, manifest.member_keys(caller),
        registry_pb2.ContestResolution,
    )  # fmt: skip
    if resolution.agency != caller:
        raise PermissionDenied("a resolution must come from the agency that signed it")
    if resolution.outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    contest = session.get(Contest, resolution.contest_id)
    if contest is None:
        raise NotFound(f"no contest {resolution.contest_id}")
    if contest.agency != caller:
        raise PermissionDenied(f"contest {contest.contest_id} was filed with another agency")
    if contest.state != "open":
        raise FailedPrecondition(f"contest {contest.contest_id} is already {contest.state}")
    contest.state = resolution.outcome
    contest.resolution_note = resolution.note[:MAX_STATEMENT]
    contest.resolved_at = resolution.resolved_at.ToDatetime(tzinfo=UTC)
    return contest


def open_clocks(session: Session) -> list[tuple[datetime, datetime | None]]:
    """Every open contest's ``(filed_at, due_at)``: what the operator's figures count."""
    return [
        (filed_at, due_at)
        for filed_at, due_at in session.execute(
            select(Contest.filed_at, Contest.due_at).where(Contest.state == "open")
        )
    ]


def contests_for(session: Session, subject_ref_hex: str) -> list[Contest]:
    """A subject's contests, newest first."""
    return list(
        session.scalars(
            select(Contest)
            .where(Contest.subject_ref == subject_ref_hex)
            .order_by(Contest.filed_at.desc())
        )
    )


def contest_record(row: Contest, now: datetime) -> registry_pb2.ContestRecord:
    """A contest as its subject sees it, with its due date and whether it is overdue at ``now``."""
    record = registry_pb2.ContestRecord(
        contest_id=row.contest_id,
        agency=row.agency,
        record_kind=row.record_kind,
        state=row.state,
        overdue=is_overdue(row.due_at, open_=row.state == "open", now=now),
    )
    record.filed_at.FromDatetime(row.filed_at)
    if row.resolved_at is not None:
        record.resolved_at.FromDatetime(row.resolved_at)
    if row.due_at is not None:
        record.due_at.FromDatetime(row.due_at)
    return record
