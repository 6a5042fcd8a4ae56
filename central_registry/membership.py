"""Joining the federation: enrol, approve, suspend, reinstate; each change publishes.

A member enrols itself (CSR, signing key with proof of possession, role, and
for an agency its endpoint and record kinds) and stays pending. The operator
approves it with ``credence registry members approve``: the registry issues
its certificate and publishes a manifest that lists it. Suspension takes
effect at once: the registry refuses the member's calls from the next
manifest check on, and the manifest tells every node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from central_registry import store
from central_registry.config import DEFAULT_ROLE_PURPOSES, RegistryConfig
from central_registry.keyring import RegistryKeys
from central_registry.models import Member
from central_registry.publishing import publish
from credence import names
from credence.encoding import require_utc
from credence.enrolment import verify_enrol_proof, verify_status_proof
from credence.envelope import Envelope
from credence.errors import InvalidInput
from credence.keys import VerifyKey
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


def enrol(session: Session, request: registry_pb2.EnrolRequest, now: datetime) -> Member:
    """Record a self-enrolment after checking everything it claims.

    Raises:
        InvalidInput: a bad id, role, CSR, key, proof, endpoint or record kind.
        AlreadyExists: the member id is taken.
    """
    member_id = validate_member_id(request.member_id)
    role = _ROLES.get(request.role)
    if role is None:
        raise InvalidInput("role must be agency, company or authority")
    csr_pem = request.csr_pem.encode()
    check_csr(csr_pem, member_id)
    key = VerifyKey.from_raw(bytes(request.signing_key.ed25519))
    if request.signing_key.kid and request.signing_key.kid != key.kid:
        raise InvalidInput(f"signing key id {request.signing_key.kid} is not its thumbprint")
    verify_enrol_proof(key, csr_pem, bytes(request.signing_key_proof))
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
    return store.add_enrolment(
        session,
        member_id=member_id,
        display_name=request.display_name or member_id,
        role=role,
        endpoint=request.endpoint,
        signing_key_raw=key.raw(),
        record_kinds=kinds,
        csr_pem=request.csr_pem,
        now=now,
    )


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
) -> EnrolmentStatus:
    """A member's state, and its certificate and the federation's keys once active.

    Raises:
        NotFound: no such enrolment.
        VerificationError: the proof is not by the enrolled key, or is stale.
    """
    member = store.get_member(session, request.member_id)
    at = request.at.ToDatetime(tzinfo=UTC)
    verify_status_proof(
        VerifyKey.from_raw(member.signing_key), member.member_id, at, bytes(request.proof), now
    )
    if member.state != "active":
        return EnrolmentStatus(_STATES[member.state], "", "", b"", b"")
    latest = store.latest_manifest(session)
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
        FailedPrecondition: the member is not pending.
        InvalidInput: an unknown purpose or kind.
    """
    member = store.get_member(session, member_id)
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
    store.approve_member(
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
    store.set_member_state(session, member_id, state, now)
    return publish(session, config=config, keys=keys, scorecard=scorecard, now=now)
