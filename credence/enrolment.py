"""Proofs of possession for enrolment: the member side signs, the registry checks.

A new member has no certificate yet, so it proves it holds the signing key it
enrols with by signing its own CSR, and later proves it is the same member
when it collects its certificate by signing a fresh timestamp. Both are
Ed25519 signatures over a DSSE pre-authentication encoding, so a proof for
one purpose can never be replayed for the other.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from credence.encoding import format_time, require_utc, to_epoch
from credence.envelope import pae
from credence.errors import Expired, NotYetValid
from credence.keys import SigningKey, VerifyKey

ENROL_PROOF_TYPE = "application/vnd.credence.enrol.v1"
WITNESS_PROOF_TYPE = "application/vnd.credence.enrol-witness.v1"
STATUS_PROOF_TYPE = "application/vnd.credence.enrolment-status.v1"
STATUS_PROOF_WINDOW = timedelta(minutes=5)


def enrol_proof(key: SigningKey, csr_pem: bytes) -> bytes:
    """The signing key's signature over the CSR it enrols with."""
    return key.sign(pae(ENROL_PROOF_TYPE, csr_pem))


def verify_enrol_proof(key: VerifyKey, csr_pem: bytes, proof: bytes) -> None:
    """Check that the enrolling party holds ``key``.

    Raises:
        BadSignature: the proof is not the key's signature over this CSR.
    """
    key.verify(proof, pae(ENROL_PROOF_TYPE, csr_pem))


def witness_key_proof(witness_key: SigningKey, csr_pem: bytes) -> bytes:
    """The witness key's signature over the CSR its member enrols with."""
    return witness_key.sign(pae(WITNESS_PROOF_TYPE, csr_pem))


def verify_witness_key_proof(key: VerifyKey, csr_pem: bytes, proof: bytes) -> None:
    """Check that the enrolling member holds the witness key it names.

    Raises:
        BadSignature: the proof is not the witness key's signature over this CSR.
    """
    key.verify(proof, pae(WITNESS_PROOF_TYPE, csr_pem))


def _status_message(member_id: str, at: datetime) -> bytes:
    return pae(STATUS_PROOF_TYPE, f"{member_id}|{to_epoch(at)}".encode())


def status_proof(key: SigningKey, member_id: str, at: datetime) -> bytes:
    """The member's signature over its id and the current time."""
    return key.sign(_status_message(member_id, require_utc(at)))


def verify_status_proof(
    key: VerifyKey, member_id: str, at: datetime, proof: bytes, now: datetime
) -> None:
    """Check a status proof made within the last few minutes.

    Raises:
        Expired: made more than :data:`STATUS_PROOF_WINDOW` ago.
        NotYetValid: made in the future.
        BadSignature: not the enrolled key's signature over this id and time.
    """
    if at < now - STATUS_PROOF_WINDOW:
        raise Expired(
            f"enrolment status proof made at {format_time(at)} is stale (now {format_time(now)})"
        )
    if at > now + STATUS_PROOF_WINDOW:
        raise NotYetValid(f"enrolment status proof is dated {format_time(at)}, in the future")
    key.verify(proof, _status_message(member_id, at))
