"""Joining the federation: a new member enrols and collects its certificate.

A member without a certificate reaches only the registry's EnrolmentService,
over TLS that checks the registry against the federation CA (distributed out
of band with the root keys). It proves it holds its signing key by signing its
CSR, and later by signing the time when it polls (:mod:`credence.enrolment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from credence.client.errors import rpc_errors
from credence.encoding import from_epoch, require_utc, to_epoch
from credence.enrolment import enrol_proof, status_proof, witness_key_proof
from credence.envelope import Envelope
from credence.errors import InvalidInput
from credence.keys import SigningKey
from credence.pki import check_csr, load_certificate_pem, validate_member_id
from credence.v1 import common_pb2, manifest_pb2, registry_pb2, registry_pb2_grpc

__all__ = ["EnrolmentResult", "collect_enrolment", "enrol"]

DEFAULT_TIMEOUT = 10.0

ROLES: dict[str, manifest_pb2.Role.ValueType] = {
    "agency": manifest_pb2.ROLE_AGENCY,
    "company": manifest_pb2.ROLE_COMPANY,
    "authority": manifest_pb2.ROLE_AUTHORITY,
}
_STATES = {
    manifest_pb2.MEMBER_STATE_PENDING: "pending",
    manifest_pb2.MEMBER_STATE_ACTIVE: "active",
    manifest_pb2.MEMBER_STATE_SUSPENDED: "suspended",
}


@dataclass(frozen=True)
class EnrolmentResult:
    """A member's enrolment as the registry reports it.

    Everything but ``state`` is empty until the operator has approved.
    """

    state: str
    certificate_pem: bytes
    ca_pem: bytes
    manifest: bytes
    pseudonymisation_key: bytes


def _channel(address: str, ca_pem: bytes) -> grpc.Channel:
    load_certificate_pem(ca_pem)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca_pem))


def enrol(
    address: str,
    ca_pem: bytes,
    *,
    member_id: str,
    display_name: str,
    role: str,
    csr_pem: bytes,
    signing_key: SigningKey,
    endpoint: str = "",
    record_kinds: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    witness_key: SigningKey | None = None,
    agreement_key: bytes | None = None,
) -> None:
    """Ask to join; the member stays pending until the operator approves.

    Args:
        address: the registry's ``host:port``.
        ca_pem: the federation CA certificate.
        member_id: the id asked for; the CSR must name it.
        display_name: a human-readable name.
        role: ``agency``, ``company`` or ``authority``.
        csr_pem: the CSR of the member's TLS key.
        signing_key: the member's Ed25519 signing key.
        endpoint: ``host:port`` of an agency's node.
        record_kinds: the record kinds an agency holds.
        timeout: the call's deadline in seconds.
        witness_key: the member's witness cosigning key, when it witnesses the log.
        agreement_key: an agency's raw X25519 public key for blind aggregation.

    Raises:
        InvalidInput: an unknown role, a bad member id, CSR or CA, or refused
            as malformed by the registry.
        AlreadyExists: the member id is taken.
        CredenceError: the registry refused otherwise or could not be reached.
    """
    validate_member_id(member_id)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    check_csr(csr_pem, member_id)
    request = registry_pb2.EnrolRequest(
        member_id=member_id,
        display_name=display_name,
        role=ROLES[role],
        csr_pem=csr_pem.decode("ascii"),
        signing_key=common_pb2.PublicKey(kid=signing_key.kid, ed25519=signing_key.public.raw()),
        endpoint=endpoint,
        record_kinds=list(record_kinds),
        signing_key_proof=enrol_proof(signing_key, csr_pem),
    )
    if witness_key is not None:
        public = witness_key.public
        request.witness_key.CopyFrom(common_pb2.PublicKey(kid=public.kid, ed25519=public.raw()))
        request.witness_key_proof = witness_key_proof(witness_key, csr_pem)
    if agreement_key is not None:
        request.agreement_key = agreement_key
    with _channel(address, ca_pem) as channel, rpc_errors():
        registry_pb2_grpc.EnrolmentServiceStub(channel).Enrol(request, timeout=timeout)


def collect_enrolment(
    address: str,
    ca_pem: bytes,
    *,
    member_id: str,
    signing_key: SigningKey,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> EnrolmentResult:
    """Poll the enrolment; once approved, collect the certificate and federation files.

    The manifest is returned as received: verify it with
    :func:`credence.manifest.verify_manifest` against the pinned root keys.

    Args:
        address: the registry's ``host:port``.
        ca_pem: the federation CA certificate.
        member_id: the enrolled id.
        signing_key: the signing key it enrolled with.
        now: the time to sign (defaults to the clock).
        timeout: the call's deadline in seconds.

    Raises:
        NotFound: no enrolment of this member id.
        Unauthenticated: the proof is not by the enrolled key, or is stale
            (check the clock).
        CredenceError: the registry refused otherwise or could not be reached.
    """
    # The proof signs whole seconds, so the time sent is truncated to match.
    at = from_epoch(to_epoch(require_utc(now or datetime.now(UTC), "now")))
    request = registry_pb2.GetEnrolmentRequest(
        member_id=member_id, proof=status_proof(signing_key, member_id, at)
    )
    request.at.FromDatetime(at)
    with _channel(address, ca_pem) as channel, rpc_errors():
        response = registry_pb2_grpc.EnrolmentServiceStub(channel).GetEnrolment(
            request, timeout=timeout
        )
    manifest = b""
    if response.HasField("manifest"):
        manifest = Envelope.from_proto(response.manifest).to_bytes()
    return EnrolmentResult(
        state=_STATES.get(response.state, f"unknown ({response.state})"),
        certificate_pem=response.certificate_pem.encode("ascii"),
        ca_pem=response.ca_cert_pem.encode("ascii"),
        manifest=manifest,
        pseudonymisation_key=response.pseudonymisation_key,
    )
