"""Joining the federation: enrol, approve, suspend, reinstate; each change publishes.

A member enrols itself (CSR, signing key with proof of possession, role, and
for an agency its endpoint and record kinds) and stays pending. The operator
approves it with ``credence registry members approve``: the registry issues
its certificate and publishes a manifest that lists it. Suspension takes
effect at once: the registry refuses the member's calls from the next
manifest check on, and the manifest tells every node.

Enrolment is open to anyone, so it is bounded: every field has a size limit
checked before anything is parsed, at most ``max_pending_enrolments`` wait at
once, and an enrolment left unapproved for ``pending_enrolment_lifetime`` is
dropped (by the registry's housekeeping, and by the next enrolment) and can
no longer be approved.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from central_registry.config import DEFAULT_ROLE_PURPOSES, PublicLimits, RegistryConfig
from central_registry.keyring import RegistryKeys
from central_registry.limits.public import check_text, lock_enrolments
from central_registry.models import Member
from central_registry.publishing import publish
from central_registry.store import manifest_rows, member_rows
from credence import names
from credence.encoding import format_time, require_utc
from credence.enrolment import verify_enrol_proof, verify_status_proof, verify_witness_key_proof
from credence.envelope import Envelope
from credence.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    ResourceExhausted,
)
from credence.keys import VerifyKey
from credence.manifest import check_agreement_key
from credence.pki import (
    check_csr,
    issue_member_certificate,
    load_certificate_pem,
    validate_member_id,
)
from credence.record_kinds import KINDS
from credence.v1 import manifest_pb2, registry_pb2

_ROLES = {
    manifest_pb2.ROLE_AGENCY: "agency",
    manifest_pb2.ROLE_COMPANY: "company",
    manifest_pb2.ROLE_AUTHORITY: "authority",
}
STATE_PENDING = manifest_pb2.MEMBER_STATE_PENDING
_STATES = {
    "pending": manifest_pb2.MEMBER_STATE_PENDING,
    "active": manifest_pb2.MEMBER_STATE_ACTIVE,
    "suspended": manifest_pb2.MEMBER_STATE_SUSPENDED,
}


#: Field limits of an enrolment request (a P-256 CSR naming one member is ~500 bytes).
MAX_MEMBER_ID = 64
MAX_DISPLAY_NAME = 200
MAX_CSR_PEM = 4096
MAX_ENDPOINT = 262  # a 253-character DNS name or a bracketed IPv6 address, ':' and a port
MAX_KID = 64
MAX_RECORD_KIND = 32
ED25519_SIGNATURE_BYTES = 64
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _check_endpoint(endpoint: str) -> None:
    check_text("endpoint", endpoint, MAX_ENDPOINT)
    if not endpoint:
        return
    host, _, port = endpoint.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput("endpoint must be host:port with a port of 1..65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise InvalidInput("endpoint's host must be an IP address or a DNS name")


def check_enrol_request(request: registry_pb2.EnrolRequest) -> None:
    """Bound every field of an enrolment before anything is parsed or stored.

    The signing key's size is checked where it is read (``VerifyKey.from_raw``).

    Raises:
        InvalidInput: a field is too long, of the wrong size, or malformed;
            the message names the field and its limit.
    """
    check_text("member_id", request.member_id, MAX_MEMBER_ID, required=True)
    check_text("display_name", request.display_name, MAX_DISPLAY_NAME)
    if len(request.csr_pem) > MAX_CSR_PEM or not request.csr_pem.isascii():
        raise InvalidInput(
            f"csr_pem must be ASCII PEM of at most {MAX_CSR_PEM} characters "
            f"(got {len(request.csr_pem)})"
        )
    check_text("signing_key.kid", request.signing_key.kid, MAX_KID)
    if len(request.signing_key_proof) != ED25519_SIGNATURE_BYTES:
        raise InvalidInput(
            f"signing_key_proof must be a {ED25519_SIGNATURE_BYTES}-byte Ed25519 signature "
            f"(got {len(request.signing_key_proof)} bytes)"
        )
    _check_endpoint(request.endpoint)
    kinds = list(request.record_kinds)
    if len(kinds) > len(KINDS):
        raise InvalidInput(f"record_kinds names {len(kinds)} kinds; there are {len(KINDS)}")
    for kind in kinds:
        check_text("a record kind", kind, MAX_RECORD_KIND, required=True)
    if len(set(kinds)) != len(kinds):
        raise InvalidInput("record_kinds names a kind twice")


def drop_expired_enrolments(session: Session, now: datetime, lifetime: timedelta) -> int:
    """Delete enrolments left pending for longer than ``lifetime``; how many.

    Raises:
        ValueError: ``now`` is naive (a programming error).
    """
    cutoff = require_utc(now) - lifetime
    result = session.execute(
        delete(Member).where(Member.state == "pending", Member.created_at < cutoff)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _require_unexpired(member: Member, now: datetime, lifetime: timedelta) -> None:
    if member.state == "pending" and member.created_at < require_utc(now) - lifetime:
        raise FailedPrecondition(
            f"the enrolment of {member.member_id!r} expired unapproved at "
            f"{format_time(member.created_at + lifetime)}: the member must enrol again"
        )


def enrol(
    session: Session,
    request: registry_pb2.EnrolRequest,
    now: datetime,
    limits: PublicLimits | None = None,
) -> Member:
    """Record a self-enrolment after checking everything it claims.

    Expired pending enrolments are dropped first; a new one is refused while
    ``limits.max_pending_enrolments`` are waiting. Run it in a transaction that
    takes the write lock (SQLite ``BEGIN IMMEDIATE``).

    Raises:
        InvalidInput: a bad or oversized id, name, role, CSR, key, proof,
            endpoint or record kind.
        ResourceExhausted: the pending-enrolment cap is reached.
        AlreadyExists: the member id is taken.
    """
    limits = limits or PublicLimits()
    check_enrol_request(request)
    member_id = validate_member_id(request.member_id)
    lock_enrolments(session)
    drop_expired_enrolments(session, now, limits.pending_enrolment_lifetime)
    pending = session.scalar(
        select(func.count()).select_from(Member).where(Member.state == "pending")
    )
    if (pending or 0) >= limits.max_pending_enrolments:
        raise ResourceExhausted(
            f"{pending} enrolments are waiting for the operator, the most the registry "
            f"keeps: try again once some are approved or expire",
            retry_after=3600.0,
        )
    role = _ROLES.get(request.role)
    if role is None:
        raise InvalidInput("role must be agency, company or authority")
    csr_pem = request.csr_pem.encode()
    check_csr(csr_pem, member_id)
    key = VerifyKey.from_raw(bytes(request.signing_key.ed25519))
    if request.signing_key.kid and request.signing_key.kid != key.kid:
        raise InvalidInput(f"signing key id {request.signing_key.kid} is not its thumbprint")
    verify_enrol_proof(key, csr_pem, bytes(request.signing_key_proof))
    witness_key = _witness_key(session, request, csr_pem)
    agreement_key = _agreement_key(session, request)
    kinds = list(request.record_kinds)
    if role == "agency":
        if not request.endpoint or ":" not in request.endpoint:
            raise InvalidInput("an agency enrols with the host:port of its node")
        if not kinds:
            raise InvalidInput("an agency names the record kinds it holds")
    elif kinds:
        raise InvalidInput("only agencies hold records")
    if unknown := sorted(set(kinds) - set(KINDS)):
        raise InvalidInput(f"unknown record kinds {unknown} (known: {', '.join(KINDS)})")
    return member_rows.add_enrolment(
        session,
        member_id=member_id,
        display_name=request.display_name or member_id,
        role=role,
        endpoint=request.endpoint,
        signing_key_raw=key.raw(),
        record_kinds=kinds,
        csr_pem=request.csr_pem,
        now=now,
        witness_key_raw=witness_key,
        agreement_key_raw=agreement_key,
    )


def _witness_key(
    session: Session, request: registry_pb2.EnrolRequest, csr_pem: bytes
) -> bytes | None:
    """The enrolling member's witness key, proven held and not another member's."""
    if not request.HasField("witness_key"):
        return None
    key = VerifyKey.from_raw(bytes(request.witness_key.ed25519))
    verify_witness_key_proof(key, csr_pem, bytes(request.witness_key_proof))
    if session.scalar(select(Member.member_id).where(Member.witness_key == key.raw())):
        raise AlreadyExists("that witness key is enrolled for another member: generate a new one")
    return key.raw()


def _agreement_key(session: Session, request: registry_pb2.EnrolRequest) -> bytes | None:
    """The enrolling agency's X25519 key agreement key: a usable point, not another's."""
    if not request.agreement_key:
        return None
    if request.role != manifest_pb2.ROLE_AGENCY:
        raise InvalidInput("only agencies enrol a key agreement key")
    raw = bytes(request.agreement_key)
    check_agreement_key(raw)
    if session.scalar(select(Member.member_id).where(Member.agreement_key == raw)):
        raise AlreadyExists(
            "that key agreement key is enrolled for another member: generate a new one"
        )
    return raw


@dataclass(frozen=True)
class EnrolmentStatus:
    """What a member collects once approved."""

    state: manifest_pb2.MemberState.ValueType
    certificate_pem: str
    ca_cert_pem: str
    manifest: bytes
    pseudonymisation_key: bytes


def enrolment_status(
    session: Session,
    request: registry_pb2.GetEnrolmentRequest,
    *,
    keys: RegistryKeys,
    now: datetime,
    pending_lifetime: timedelta | None = None,
) -> EnrolmentStatus:
    """A member's state, and its certificate and the federation's keys once active.

    A pending enrolment older than ``pending_lifetime`` is as good as gone.

    Raises:
        InvalidInput: an oversized member id or a proof of the wrong size.
        NotFound: no such enrolment, or it expired unapproved.
        VerificationError: the proof is not by the enrolled key, or is stale.
    """
    check_text("member_id", request.member_id, MAX_MEMBER_ID, required=True)
    if len(request.proof) != ED25519_SIGNATURE_BYTES:
        raise InvalidInput(f"proof must be a {ED25519_SIGNATURE_BYTES}-byte Ed25519 signature")
    member = member_rows.get_member(session, request.member_id)
    if pending_lifetime is not None:
        try:
            _require_unexpired(member, now, pending_lifetime)
        except FailedPrecondition as exc:
            raise NotFound(str(exc)) from None
    at = request.at.ToDatetime(tzinfo=UTC)
    verify_status_proof(
        VerifyKey.from_raw(member.signing_key), member.member_id, at, bytes(request.proof), now
    )
    if member.state != "active":
        return EnrolmentStatus(_STATES[member.state], "", "", b"", b"")
    latest = manifest_rows.latest_manifest(session)
    return EnrolmentStatus(
        state=_STATES[member.state],
        certificate_pem=member.certificate_pem or "",
        ca_cert_pem=keys.ca.certificate_pem.decode(),
        manifest=latest.envelope if latest else b"",
        pseudonymisation_key=keys.pseudonymisation.secret,
    )


def _hosts(member: Member) -> tuple[str, ...]:
    if member.role != "agency":
        return ()
    host = member.endpoint.rpartition(":")[0].strip("[]")
    return (host,) if host else ()


def approve(
    session: Session,
    member_id: str,
    *,
    config: RegistryConfig,
    keys: RegistryKeys,
    scorecard: manifest_pb2.Scorecard,
    now: datetime,
    purposes: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    identity_verifier: bool = False,
) -> Envelope:
    """Approve a pending member: certificate, access rights, a new manifest.

    Raises:
        NotFound: no such member.
        FailedPrecondition: the member is not pending, or its enrolment expired.
        InvalidInput: an unknown purpose or kind.
    """
    member = member_rows.get_member(session, member_id)
    _require_unexpired(member, now, config.public.pending_enrolment_lifetime)
    purposes = sorted(DEFAULT_ROLE_PURPOSES[member.role] if purposes is None else purposes)
    kinds = sorted(
        (names.KIND_NAMES if member.role != "agency" else set()) if kinds is None else kinds
    )
    for purpose in purposes:
        names.purpose_value(purpose)
    for kind in kinds:
        names.kind_value(kind)
    certificate = issue_member_certificate(
        keys.ca,
        member.csr_pem.encode(),
        member_id,
        require_utc(now),
        valid_for=config.member_certificate_validity,
        hosts=_hosts(member),
    )
    serial = f"{load_certificate_pem(certificate).serial_number:x}"
    member_rows.approve_member(
        session,
        member_id,
        certificate_pem=certificate.decode(),
        serial_hex=serial,
        allowed_purposes=purposes,
        allowed_kinds=kinds,
        identity_verifier=identity_verifier,
        now=now,
    )
    return publish(session, config=config, keys=keys, scorecard=scorecard, now=now)


def set_state(
    session: Session,
    member_id: str,
    state: str,
    *,
    config: RegistryConfig,
    keys: RegistryKeys,
    scorecard: manifest_pb2.Scorecard,
    now: datetime,
) -> Envelope:
    """Suspend (``suspended``) or reinstate (``active``) a member and publish.

    Raises:
        NotFound: no such member.
        FailedPrecondition: an impossible transition.
    """
    member_rows.set_member_state(session, member_id, state, now)
    return publish(session, config=config, keys=keys, scorecard=scorecard, now=now)
