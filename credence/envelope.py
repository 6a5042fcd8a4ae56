"""DSSE signed envelopes with Ed25519 signatures.

An envelope carries a payload type, the payload bytes exactly as signed, and
one or more signatures over the DSSE pre-authentication encoding
``PAE(payload_type, payload)`` (DSSE v1, ``protocol.md``). Verification works
on the bytes as received and hands back those same bytes: a verifier never
re-serializes a message before checking it, so two encoders that disagree on
field order or unknown fields cannot make a valid signature fail or a forged
one pass.

The wire form is the ``credence.v1.Envelope`` protobuf; the JSON form is DSSE's
own JSON envelope, so anyone with the signer's public key can re-check an
envelope in any language with an off-the-shelf DSSE library.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from credence.errors import (
    BadSignature,
    InvalidInput,
    MessageTooLarge,
    UnknownKey,
    WrongPayloadType,
)
from credence.keys import KeySet, SigningKey
from credence.v1 import common_pb2

# gRPC's default receive limit: an envelope larger than one gRPC message is
# not something any peer of ours sends.
DEFAULT_MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_PAYLOAD_TYPE_CHARS = 256
# Bounds the Ed25519 work (~180 us each) an attacker can make one envelope cost.
MAX_SIGNATURES = 32
MAX_KEYID_CHARS = 256

_PAE_PREFIX = b"DSSEv1"
# DSSE writes standard base64 but tells parsers to accept the URL-safe
# alphabet too; padding may be present or not.
_DSSE_B64 = re.compile(r"^(?:[A-Za-z0-9+/]*|[A-Za-z0-9_-]*)={0,2}$")

M = TypeVar("M", bound=Message)


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding that signatures cover.

    ``"DSSEv1" SP len(type) SP type SP len(body) SP body``, each length the
    ASCII decimal byte count (the type's length in UTF-8 bytes, not characters).
    """
    type_bytes = payload_type.encode("utf-8")
    return b" ".join(
        (
            _PAE_PREFIX,
            str(len(type_bytes)).encode("ascii"),
            type_bytes,
            str(len(payload)).encode("ascii"),
            payload,
        )
    )


def _check_payload_type(payload_type: str) -> None:
    if not payload_type:
        raise InvalidInput("envelope payload_type is empty; name the payload's media type")
    if len(payload_type) > MAX_PAYLOAD_TYPE_CHARS:
        raise InvalidInput(
            f"envelope payload_type is {len(payload_type)} characters long; "
            f"the limit is {MAX_PAYLOAD_TYPE_CHARS}"
        )


@dataclass(frozen=True)
class Signature:
    """One signature over an envelope's PAE, naming its key by RFC 7638 thumbprint."""

    keyid: str
    sig: bytes

    def __post_init__(self) -> None:
        if not self.keyid:
            raise InvalidInput(
                "envelope signature has an empty keyid; every signature names its key"
            )
        if len(self.keyid) > MAX_KEYID_CHARS:
            raise InvalidInput(
                f"envelope signature keyid is {len(self.keyid)} characters long; "
                f"the limit is {MAX_KEYID_CHARS}"
            )
        object.__setattr__(self, "sig", bytes(self.sig))


@dataclass(frozen=True)
class Envelope:
    """A payload, its type, and the signatures over ``PAE(payload_type, payload)``.

    Construction checks the shape (type length, signature count); it does not
    check signatures: that is :func:`verify`'s job.
    """

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        _check_payload_type(self.payload_type)
        if len(self.signatures) > MAX_SIGNATURES:
            raise InvalidInput(
                f"envelope has {len(self.signatures)} signatures; the limit is {MAX_SIGNATURES}"
            )
        object.__setattr__(self, "payload", bytes(self.payload))
        object.__setattr__(self, "signatures", tuple(self.signatures))

    def pae(self) -> bytes:
        """The bytes every signature of this envelope covers."""
        return pae(self.payload_type, self.payload)

    def add_signature(self, key: SigningKey) -> Envelope:
        """A copy of this envelope with one more signature, by ``key``.

        Raises:
            InvalidInput: ``key`` has signed this envelope already, or the
                envelope would exceed the signature limit.
        """
        if any(signature.keyid == key.kid for signature in self.signatures):
            raise InvalidInput(f"envelope is already signed by key {key.kid}")
        signature = Signature(keyid=key.kid, sig=key.sign(self.pae()))
        return Envelope(self.payload_type, self.payload, (*self.signatures, signature))

    def to_proto(self) -> common_pb2.Envelope:
        """The ``credence.v1.Envelope`` message of this envelope."""
        return common_pb2.Envelope(
            payload_type=self.payload_type,
            payload=self.payload,
            signatures=[common_pb2.Signature(keyid=s.keyid, sig=s.sig) for s in self.signatures],
        )

    @classmethod
    def from_proto(cls, message: common_pb2.Envelope) -> Envelope:
        """Wrap a received ``credence.v1.Envelope``, checking its shape.

        Raises:
            InvalidInput: the payload type is empty or too long, a signature
                has no keyid, or there are too many signatures.
        """
        if len(message.signatures) > MAX_SIGNATURES:
            raise InvalidInput(
                f"envelope has {len(message.signatures)} signatures; the limit is {MAX_SIGNATURES}"
            )
        return cls(
            payload_type=message.payload_type,
            payload=message.payload,
            signatures=tuple(Signature(keyid=s.keyid, sig=s.sig) for s in message.signatures),
        )

    def to_bytes(self) -> bytes:
        """The serialized ``credence.v1.Envelope`` protobuf."""
        return self.to_proto().SerializeToString(deterministic=True)

    @classmethod
    def from_bytes(cls, data: bytes, max_size: int = DEFAULT_MAX_ENVELOPE_BYTES) -> Envelope:
        """Parse a serialized ``credence.v1.Envelope``.

        Raises:
            MessageTooLarge: ``data`` is longer than ``max_size`` (checked
                before any parsing).
            InvalidInput: ``data`` is not an envelope, or its shape is wrong.
        """
        _check_size(len(data), max_size)
        message = common_pb2.Envelope()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise InvalidInput(f"bytes are not a credence.v1.Envelope protobuf: {exc}") from exc
        return cls.from_proto(message)

    def to_json(self) -> str:
        """The DSSE JSON envelope: standard padded base64, as DSSE writes it."""
        document = {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, max_size: int = DEFAULT_MAX_ENVELOPE_BYTES) -> Envelope:
        """Parse a DSSE JSON envelope.

        Base64 may use the standard or URL-safe alphabet, padded or not, as
        DSSE allows; it must otherwise be canonical.

        Raises:
            MessageTooLarge: ``text`` is longer than ``max_size`` bytes.
            InvalidInput: not JSON, a duplicated member, a member missing or
                of the wrong type, bad base64, or a bad envelope shape.
        """
        size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))
        _check_size(size, max_size)
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicate_members)
        except (ValueError, UnicodeDecodeError) as exc:
            # json.JSONDecodeError is a ValueError; so is our duplicate check.
            raise InvalidInput(f"envelope is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise InvalidInput("DSSE JSON envelope must be an object")
        payload_type = _json_str(document, "payloadType")
        payload = _dsse_b64decode(_json_str(document, "payload"), "payload")
        raw_signatures = document.get("signatures")
        if not isinstance(raw_signatures, list):
            raise InvalidInput("DSSE JSON envelope lacks a 'signatures' list")
        if len(raw_signatures) > MAX_SIGNATURES:
            raise InvalidInput(
                f"envelope has {len(raw_signatures)} signatures; the limit is {MAX_SIGNATURES}"
            )
        signatures = []
        for index, entry in enumerate(raw_signatures):
            if not isinstance(entry, dict):
                raise InvalidInput(f"DSSE JSON signature {index} is not an object")
            where = f"signatures[{index}]"
            signatures.append(
                Signature(
                    keyid=_json_str(entry, "keyid", where),
                    sig=_dsse_b64decode(_json_str(entry, "sig", where), f"{where}.sig"),
                )
            )
        return cls(payload_type=payload_type, payload=payload, signatures=tuple(signatures))


@dataclass(frozen=True)
class VerifiedPayload:
    """What :func:`verify` vouches for: the payload bytes exactly as received."""

    payload_type: str
    payload: bytes
    kids: tuple[str, ...]


def sign(payload_type: str, payload: bytes, keys: Sequence[SigningKey]) -> Envelope:
    """An envelope over ``payload`` with one signature per key, in order.

    Raises:
        InvalidInput: no keys, the same key twice, or a bad payload type.
    """
    if not keys:
        raise InvalidInput("an envelope needs at least one signing key")
    _check_payload_type(payload_type)
    seen: set[str] = set()
    for key in keys:
        if key.kid in seen:
            raise InvalidInput(f"key {key.kid} is given twice; each key signs once")
        seen.add(key.kid)
    signed = pae(payload_type, payload)
    return Envelope(
        payload_type=payload_type,
        payload=payload,
        signatures=tuple(Signature(keyid=key.kid, sig=key.sign(signed)) for key in keys),
    )


def verify(
    envelope: Envelope,
    expected_payload_type: str,
    keys: KeySet,
    *,
    threshold: int = 1,
) -> VerifiedPayload:
    """Check that at least ``threshold`` distinct trusted keys signed the envelope.

    Signatures are checked over ``PAE(expected_payload_type, payload)`` with
    the payload bytes as received. A signature naming an unknown key is
    skipped; every one naming a trusted key must verify. A key counts once
    towards the threshold however many times it appears.

    Raises:
        ValueError: ``threshold`` is below 1 (a programming error).
        WrongPayloadType: the envelope carries another payload type.
        BadSignature: the envelope is unsigned, a trusted key's signature does
            not verify, or fewer than ``threshold`` trusted keys signed.
        UnknownKey: no signature verified and none names a trusted key.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, got {threshold}")
    if envelope.payload_type != expected_payload_type:
        raise WrongPayloadType(
            f"envelope carries payload type {envelope.payload_type!r}, "
            f"expected {expected_payload_type!r}"
        )
    if not envelope.signatures:
        raise BadSignature("envelope is unsigned")
    # Built from the expected type, not the envelope's, so the bytes checked
    # are exactly what the caller asked for.
    signed = pae(expected_payload_type, envelope.payload)
    verified: list[str] = []
    unknown: list[str] = []
    checked: set[tuple[str, bytes]] = set()
    for signature in envelope.signatures:
        kid = signature.keyid
        key = keys.get(kid)
        if key is None:
            if kid not in unknown:
                unknown.append(kid)
            continue
        # Every signature naming a trusted key must verify, duplicates too, so
        # the outcome never depends on the order of the signatures.
        if (kid, signature.sig) not in checked:
            key.verify(signature.sig, signed)
            checked.add((kid, signature.sig))
        if kid not in verified:
            verified.append(kid)
    if not verified and unknown:
        raise UnknownKey(
            f"envelope is signed only by keys that are not trusted: {', '.join(unknown)}"
        )
    if len(verified) < threshold:
        signers = ", ".join(verified) or "none"
        untrusted = ", ".join(unknown) or "none"
        raise BadSignature(
            f"envelope has {len(verified)} of {threshold} required signatures from trusted keys"
            f" (trusted signers: {signers}; untrusted: {untrusted})"
        )
    return VerifiedPayload(
        payload_type=envelope.payload_type, payload=envelope.payload, kids=tuple(verified)
    )


@dataclass(frozen=True)
class VerifiedMessage(Generic[M]):
    """What :func:`open_message` vouches for: the parsed payload and who signed it."""

    message: M
    kids: tuple[str, ...]


def open_message(
    envelope: Envelope,
    expected_payload_type: str,
    keys: KeySet,
    message_cls: type[M],
    *,
    threshold: int = 1,
) -> VerifiedMessage[M]:
    """Verify the envelope, then parse its exact payload bytes, keeping the signers' key ids.

    For callers that require one particular key among the trusted ones (a log
    key among the registry's keys); the others use :func:`verify_message`.

    Raises:
        WrongPayloadType: as :func:`verify`.
        BadSignature: as :func:`verify`.
        UnknownKey: as :func:`verify`.
        InvalidInput: the verified payload does not parse as ``message_cls``.
    """
    verified = verify(envelope, expected_payload_type, keys, threshold=threshold)
    message = message_cls()
    try:
        message.ParseFromString(verified.payload)
    except DecodeError as exc:
        name = message_cls.DESCRIPTOR.full_name
        raise InvalidInput(
            f"signed {expected_payload_type} payload is not a {name} protobuf: {exc}"
        ) from exc
    return VerifiedMessage(message, verified.kids)


def verify_message(
    envelope: Envelope,
    expected_payload_type: str,
    keys: KeySet,
    message_cls: type[M],
    *,
    threshold: int = 1,
) -> M:
    """Verify the envelope, then parse its exact payload bytes as ``message_cls``.

    Raises:
        WrongPayloadType: as :func:`verify`.
        BadSignature: as :func:`verify`.
        UnknownKey: as :func:`verify`.
        InvalidInput: the verified payload does not parse as ``message_cls``.
    """
    return open_message(
        envelope, expected_payload_type, keys, message_cls, threshold=threshold
    ).message


def _check_size(size: int, max_size: int) -> None:
    if size > max_size:
        raise MessageTooLarge(f"envelope is {size} bytes; the limit is {max_size}")


def _reject_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; refuse rather than guess.
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"member {name!r} appears twice")
        document[name] = value
    return document


def _json_str(document: dict[str, Any], name: str, where: str = "envelope") -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise InvalidInput(f"DSSE JSON {where} lacks the string member {name!r}")
    return value


def _dsse_b64decode(text: str, name: str) -> bytes:
    if not _DSSE_B64.match(text):
        raise InvalidInput(f"DSSE JSON {name} is not base64")
    unpadded = text.rstrip("=")
    padding = len(text) - len(unpadded)
    if len(unpadded) % 4 == 1 or (padding and padding != -len(unpadded) % 4):
        raise InvalidInput(f"DSSE JSON {name} has an impossible base64 length or padding")
    standard = unpadded.translate(str.maketrans("-_", "+/"))
    try:
        data = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"DSSE JSON {name} does not decode as base64: {exc}") from exc
    if base64.b64encode(data).decode("ascii").rstrip("=") != standard:
        raise InvalidInput(f"DSSE JSON {name} is not canonical base64 (non-zero trailing bits)")
    return data
