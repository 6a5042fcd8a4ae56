"""Sealed subject access: records sealed by a node to the subject's fresh HPKE key.

A subject asks every agency, through the registry, which of its records each
holds (GDPR Art. 15). The request is a subject proof (action ``list-records``)
whose ``target`` names the SHA-256 of a fresh HPKE public key, the binding of
the subject's personal key, and that public key. Each node checks all three
itself (the registry cannot swap the key: the subject signed its hash), seals
its answer to the key with RFC 9180 HPKE in base mode and signs the sealed
envelope. The registry relays ciphertext it cannot open; the subject checks the
agency's signature and opens it.

The suite is ML-KEM-768 + X25519 (the hybrid KEM ``MLKEM768-X25519``),
HKDF-SHA256 and AES-256-GCM. HPKE's ``info`` binds the ciphertext to the
agency and the request id, so a ciphertext relabelled for another agency or
request does not open. The plaintext is padded to a power of two (at least
1 KiB), so its size says little about how many records it holds.

Pure functions over bytes; ``now`` is passed in.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from google.protobuf.message import DecodeError

from credence import payloads
from credence.envelope import Envelope, sign, verify_message
from credence.errors import ClaimMismatch, InvalidInput, MessageTooLarge, VerificationError
from credence.grants.binding import verify_binding
from credence.grants.subject_proofs import verify_subject_proof
from credence.keys import KeySet, SigningKey
from credence.v1 import subject_records_pb2

SUITE_NAME = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
#: The subject proof's action for this request.
ACTION = "list-records"
#: The proof's ``target``: this prefix, then the hex SHA-256 of the recipient key.
TARGET_PREFIX = "hpke-sha256:"
MLKEM768_PUBLIC_SIZE = 1184
X25519_PUBLIC_SIZE = 32
RECIPIENT_KEY_SIZE = MLKEM768_PUBLIC_SIZE + X25519_PUBLIC_SIZE
#: The smallest padded plaintext; larger ones round up to a power of two.
MIN_PADDED = 1024
#: The most records one agency seals into one answer (``total`` says how many it holds).
MAX_RECORDS = 1000
#: The largest sealed envelope a registry relays or a subject opens.
MAX_SEALED_BYTES = 256 * 1024
_INFO_LABEL = b"credence/sealed-records/v1"
_LENGTH = struct.Struct(">I")


def key_hash(recipient_key: bytes) -> bytes:
    """SHA-256 of a recipient key's bytes."""
    return hashlib.sha256(recipient_key).digest()


def key_target(recipient_key: bytes) -> str:
    """The subject proof's ``target`` that names ``recipient_key``."""
    return TARGET_PREFIX + key_hash(recipient_key).hex()


def parse_recipient_key(raw: bytes) -> hpke.MLKEM768X25519PublicKey:
    """A hybrid HPKE public key from its 1,216 bytes (ML-KEM-768 key, then X25519 key).

    Raises:
        InvalidInput: the wrong length, or not a valid ML-KEM-768 key.
    """
    if len(raw) != RECIPIENT_KEY_SIZE:
        raise InvalidInput(
            f"recipient_key is {len(raw)} bytes; an {SUITE_NAME} public key is "
            f"{RECIPIENT_KEY_SIZE} (ML-KEM-768 then X25519)"
        )
    try:
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_SIZE]),
            x25519.X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC_SIZE:]),
        )
    except ValueError as exc:
        raise InvalidInput(f"recipient_key is not a valid {SUITE_NAME} public key") from exc


def seal_info(agency: str, request_id: str) -> bytes:
    """HPKE ``info``: the label, then the agency id and request id, each length-prefixed."""
    parts = [_INFO_LABEL, agency.encode(), request_id.encode()]
    return b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def pad(plaintext: bytes) -> bytes:
    """A 4-byte length, the plaintext, zeros up to a power of two (at least 1 KiB)."""
    framed = _LENGTH.pack(len(plaintext)) + plaintext
    size = max(MIN_PADDED, 1 << (len(framed) - 1).bit_length())
    return framed + bytes(size - len(framed))


def unpad(padded: bytes) -> bytes:
    """The plaintext :func:`pad` framed.

    Raises:
        InvalidInput: the frame's length does not fit, or the padding is not zeros.
    """
    if len(padded) < _LENGTH.size:
        raise InvalidInput("sealed records are shorter than their length prefix")
    (length,) = _LENGTH.unpack_from(padded)
    end = _LENGTH.size + length
    if end > len(padded) or any(padded[end:]):
        raise InvalidInput("sealed records are not padded as the protocol says")
    return padded[_LENGTH.size : end]


@dataclass(frozen=True)
class RecordsRequest:
    """A checked request: whose records, which request, which key to seal to."""

    subject_ref: str
    request_id: str
    recipient_key: bytes


def verify_request(
    *,
    subject_proof: str,
    binding: str,
    recipient_key: bytes,
    identity_keys: KeySet,
    registry_id: str,
    now: datetime,
) -> RecordsRequest:
    """Check a sealed-records request on a node, trusting no one but the manifest.

    The binding must verify against an identity-verifying member's key, the
    proof against the key it binds, for the same subject, and the proof must
    name the recipient key, so neither the registry nor anyone else can have
    the answer sealed to another key.

    Raises:
        VerificationError: the binding or the proof does not verify, is stale,
            is for another action or registry, or names another key or subject.
        InvalidInput: a malformed binding, proof or recipient key.
    """
    parse_recipient_key(recipient_key)
    bound = verify_binding(binding, identity_keys=identity_keys, now=now)
    proof = verify_subject_proof(
        subject_proof,
        subject_keys=KeySet([bound.subject_key]),
        registry_id=registry_id,
        action=ACTION,
        now=now,
    )
    if proof.subject_ref != bound.subject_ref:
        raise ClaimMismatch("the subject proof and the binding name different subjects")
    if proof.target != key_target(recipient_key):
        raise ClaimMismatch(
            "the subject proof names another recipient key: sign the proof over the key you send"
        )
    return RecordsRequest(proof.subject_ref, proof.jti, recipient_key)


def seal(
    records: subject_records_pb2.SubjectRecordList,
    *,
    request: RecordsRequest,
    agency: str,
    signing_key: SigningKey,
    now: datetime,
) -> Envelope:
    """Seal an agency's records to the request's key and sign the sealed envelope.

    Raises:
        InvalidInput: the recipient key is malformed.
    """
    public_key = parse_recipient_key(request.recipient_key)
    ciphertext = SUITE.encrypt(
        pad(records.SerializeToString()),
        public_key,
        info=seal_info(agency, request.request_id),
    )
    sealed = subject_records_pb2.SealedRecords(
        request_id=request.request_id,
        agency=agency,
        recipient_key_hash=key_hash(request.recipient_key),
        suite=SUITE_NAME,
        ciphertext=ciphertext,
    )
    sealed.sealed_at.FromDatetime(now)
    return sign(payloads.SEALED_RECORDS, sealed.SerializeToString(), [signing_key])


def check_sealed(
    envelope: Envelope,
    *,
    agency_keys: KeySet,
    agency: str,
    request_id: str,
    recipient_key: bytes,
) -> subject_records_pb2.SealedRecords:
    """Check a sealed answer's signature and labels without opening it (the registry does this).

    Raises:
        MessageTooLarge: over :data:`MAX_SEALED_BYTES`.
        VerificationError: not signed by the agency, or for another agency,
            request, key or suite.
    """
    if len(envelope.payload) > MAX_SEALED_BYTES:
        raise MessageTooLarge(
            f"the sealed answer of {agency!r} is {len(envelope.payload)} bytes; "
            f"at most {MAX_SEALED_BYTES} are relayed"
        )
    sealed = verify_message(
        envelope, payloads.SEALED_RECORDS, agency_keys, subject_records_pb2.SealedRecords
    )
    if sealed.agency != agency or sealed.request_id != request_id:
        raise ClaimMismatch(f"the sealed answer of {agency!r} is for another agency or request")
    if sealed.recipient_key_hash != key_hash(recipient_key) or sealed.suite != SUITE_NAME:
        raise ClaimMismatch(f"the sealed answer of {agency!r} is for another key or suite")
    return sealed


class RecipientKey:
    """The subject's fresh HPKE key pair for one request; the private half never leaves."""

    def __init__(
        self, mlkem_key: mlkem.MLKEM768PrivateKey, x25519_key: x25519.X25519PrivateKey
    ) -> None:
        self._private = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
        self.public_bytes = (
            mlkem_key.public_key().public_bytes_raw() + x25519_key.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> RecipientKey:
        """A fresh key pair."""
        return cls(mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    @property
    def target(self) -> str:
        """The subject proof's ``target`` for this key."""
        return key_target(self.public_bytes)

    def open(
        self, envelope: Envelope, *, agency_keys: KeySet, agency: str, request_id: str
    ) -> subject_records_pb2.SubjectRecordList:
        """Check an agency's sealed answer and open it.

        Raises:
            VerificationError: not signed by the agency, for another request
                or key, or it does not open under this key for this agency and
                request.
            InvalidInput: the opened plaintext is malformed.
        """
        sealed = check_sealed(
            envelope,
            agency_keys=agency_keys,
            agency=agency,
            request_id=request_id,
            recipient_key=self.public_bytes,
        )
        try:
            padded = SUITE.decrypt(
                sealed.ciphertext, self._private, info=seal_info(agency, request_id)
            )
        except (InvalidTag, ValueError) as exc:
            raise VerificationError(
                f"the sealed answer of {agency!r} does not open with this request's key"
            ) from exc
        try:
            records = subject_records_pb2.SubjectRecordList.FromString(unpad(padded))
        except DecodeError as exc:
            raise InvalidInput(f"the sealed answer of {agency!r} is not a record list") from exc
        if records.agency != agency or records.request_id != request_id:
            raise ClaimMismatch(f"the records sealed by {agency!r} name another agency or request")
        return records
