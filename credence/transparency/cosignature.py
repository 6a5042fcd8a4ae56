r"""Witness cosignatures (C2SP tlog-cosignature) and the witness's add-checkpoint decision.

A witness cosigns a checkpoint only after checking that it extends, by a valid
consistency proof, the last checkpoint it cosigned for that log (C2SP
``tlog-witness``). Its cosignature is an Ed25519 note signature (key type
0x04) over ``"cosignature/v1\ntime <t>\n"`` followed by the checkpoint's
note text, and the signature bytes carry the 8-byte big-endian timestamp
before the 64-byte signature.

Everything here is pure: state in, state out, ``now`` passed in. The caller
(the node's witness service) persists the new state atomically with the check.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

from credence.errors import (
    FailedPrecondition,
    InvalidInput,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    VerificationError,
)
from credence.keys import SigningKey, VerifyKey
from credence.transparency import merkle
from credence.transparency.checkpoint import open_checkpoint, parse_checkpoint
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import (
    COSIGNATURE_TYPE,
    NoteSignature,
    key_id,
    parse_note,
    std_b64decode,
)

COSIGNATURE_HEADER = "cosignature/v1\n"
#: tlog-witness: a client MUST NOT send more than 63 consistency proof lines.
MAX_PROOF_LINES = 63
#: An add-checkpoint body: 64 proof lines of 45 bytes and a checkpoint note.
MAX_REQUEST_BYTES = 24 * 1024
_SIGNATURE_SIZE = 8 + 64
_MAX_TIMESTAMP = 2**63 - 1
_EM_DASH = "\u2014"


class SizeConflict(FailedPrecondition):
    """The request's old size is not the size the witness last cosigned (HTTP 409).

    ``size`` is the witness's size, which the caller retries from.
    """

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class BadConsistencyProof(InvalidInput):
    """The consistency proof does not link the witness's checkpoint to the new one (HTTP 422)."""


class UnknownLog(NotFound):
    """The checkpoint's origin is not a log this witness follows (HTTP 404)."""


class LogSignatureRefused(PermissionDenied):
    """The checkpoint is not signed by the log key the witness trusts (HTTP 403)."""


@dataclass(frozen=True)
class WitnessKey:
    """A witness's name (its note key name) and Ed25519 cosigning key."""

    name: str
    key: SigningKey

    @property
    def key_id(self) -> bytes:
        """The 4-byte note key id of this cosigner (type 0x04)."""
        return key_id(self.name, COSIGNATURE_TYPE, self.key.public.raw())


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint a witness cosigned for one log (size 0 when none)."""

    origin: str
    size: int
    root_hash: bytes

    @classmethod
    def empty(cls, origin: str) -> WitnessState:
        """The state of a witness that never cosigned a checkpoint of ``origin``."""
        return cls(origin=origin, size=0, root_hash=merkle.EMPTY_ROOT)


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A tlog-witness add-checkpoint body: old size, consistency proof, checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint_note: bytes


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The exact bytes a cosignature/v1 signs for a checkpoint's note text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, witness: WitnessKey, now: datetime) -> NoteSignature:
    """The witness's timestamped cosignature of a checkpoint note text.

    Raises:
        InvalidInput: ``now`` is naive or before the epoch.
    """
    if now.tzinfo is None:
        raise InvalidInput("cosign needs an aware UTC time, got a naive datetime")
    timestamp = int(now.timestamp())
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise InvalidInput(f"cosignature time {timestamp} is out of range")
    signature = witness.key.sign(cosignature_message(checkpoint_text, timestamp))
    return NoteSignature(
        name=witness.name,
        key_id=witness.key_id,
        signature=timestamp.to_bytes(8, "big") + signature,
    )


def open_cosignature(
    checkpoint_text: str, signature: NoteSignature, name: str, public_key: bytes
) -> datetime:
    """Verify one cosignature of ``checkpoint_text`` by witness ``name``; return its time.

    Raises:
        InvalidInput: the signature line is not a cosignature/v1 of that name and key id,
            or is not 72 bytes.
        BadSignature: the signature does not verify under the witness key.
    """
    expected = key_id(name, COSIGNATURE_TYPE, public_key)
    if signature.name != name or signature.key_id != expected:
        raise InvalidInput(
            f"signature by {signature.name!r} (key id {signature.key_id.hex()}) is not a "
            f"cosignature of witness {name!r} (key id {expected.hex()})"
        )
    if len(signature.signature) != _SIGNATURE_SIZE:
        raise InvalidInput(
            f"a cosignature/v1 is {_SIGNATURE_SIZE} bytes (timestamp and Ed25519 "
            f"signature), witness {name!r} sent {len(signature.signature)}"
        )
    timestamp = int.from_bytes(signature.signature[:8], "big")
    if timestamp > _MAX_TIMESTAMP:
        raise InvalidInput(f"cosignature time {timestamp} of witness {name!r} is out of range")
    VerifyKey.from_raw(public_key).verify(
        signature.signature[8:], cosignature_message(checkpoint_text, timestamp)
    )
    return datetime.fromtimestamp(timestamp, tz=UTC)


def signature_line(signature: NoteSignature) -> bytes:
    """One note signature line: em dash, key name, base64(key id || signature), newline."""
    encoded = base64.b64encode(signature.key_id + signature.signature).decode("ascii")
    return f"{_EM_DASH} {signature.name} {encoded}\n".encode()


def response_signatures(checkpoint_note: bytes, body: bytes) -> tuple[NoteSignature, ...]:
    """The signature lines of an add-checkpoint response, read as the note they extend.

    tlog-witness: the response body may be appended to the checkpoint and read
    as one note; only the lines the response added are returned.

    Raises:
        InvalidInput: the body is not note signature lines.
        MessageTooLarge: the note would be over its bounds.
    """
    if not body.endswith(b"\n"):
        raise InvalidInput(
            "an add-checkpoint response is signature lines, each ending in a newline"
        )
    sent = parse_note(checkpoint_note)
    merged = parse_note(checkpoint_note + body)
    return tuple(line for line in merged.signatures if line not in sent.signatures)


def format_add_checkpoint(request: AddCheckpointRequest) -> bytes:
    """The tlog-witness add-checkpoint request body."""
    lines = [f"old {request.old_size}\n".encode()]
    lines.extend(base64.b64encode(hash_) + b"\n" for hash_ in request.proof)
    lines.append(b"\n")
    return b"".join(lines) + request.checkpoint_note


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Read an add-checkpoint request body, bounded in size and proof length.

    Raises:
        MessageTooLarge: the body is over :data:`MAX_REQUEST_BYTES`.
        InvalidInput: malformed: no ``old <size>`` line, a leading zero, a proof line that
            is not a base64 32-byte hash, more than 63 of them, or no blank line.
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise MessageTooLarge(
            f"add-checkpoint body is {len(body)} bytes, over the {MAX_REQUEST_BYTES} accepted"
        )
    head, separator, note = body.partition(b"\n\n")
    if not separator:
        raise InvalidInput("add-checkpoint body needs a blank line before the checkpoint")
    lines = head.split(b"\n")
    first = lines[0]
    if not first.startswith(b"old "):
        raise InvalidInput("add-checkpoint body must start with 'old <size>'")
    digits = first[4:]
    if not digits.isdigit() or not digits.isascii() or (digits != b"0" and digits[0:1] == b"0"):
        raise InvalidInput(f"old size {digits[:24]!r} is not a decimal without leading zeros")
    if len(digits) > 19:
        raise InvalidInput("old size is out of range")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise InvalidInput(
            f"{len(proof_lines)} consistency proof lines, more than the {MAX_PROOF_LINES} allowed"
        )
    proof = []
    for number, line in enumerate(proof_lines, 1):
        hash_ = std_b64decode(line.decode("ascii", "replace"), f"consistency proof line {number}")
        if len(hash_) != merkle.HASH_SIZE:
            raise InvalidInput(
                f"consistency proof line {number} is {len(hash_)} bytes, not a 32-byte hash"
            )
        proof.append(hash_)
    return AddCheckpointRequest(old_size=int(digits), proof=tuple(proof), checkpoint_note=note)


def witness_check(
    state: WitnessState | None,
    request: AddCheckpointRequest,
    *,
    log: LogIdentity,
    witness: WitnessKey,
    now: datetime,
) -> tuple[WitnessState, NoteSignature]:
    """Decide an add-checkpoint request: the new state and the cosignature, or a refusal.

    ``state`` is the last checkpoint this witness cosigned for the log (``None``
    when it never cosigned one). The caller must persist the returned state
    atomically with reading ``state``.

    Raises:
        InvalidInput: the body's checkpoint is malformed, or the old size is above the
            checkpoint's size (HTTP 400).
        UnknownLog: the checkpoint's origin is not the log this witness follows (404).
        LogSignatureRefused: the log's signature does not verify (403).
        SizeConflict: the old size is not the witness's size, or the checkpoint has the
            witness's size but another root (409: a split view).
        BadConsistencyProof: the proof does not link the two checkpoints (422).
    """
    note = parse_note(request.checkpoint_note)
    claimed = parse_checkpoint(note.text)
    if claimed.origin != log.origin:
        raise UnknownLog(f"this witness follows the log {log.origin!r}, not {claimed.origin!r}")
    try:
        checkpoint, opened = open_checkpoint(request.checkpoint_note, log.origin, log.public_key)
    except (VerificationError, InvalidInput) as exc:
        raise LogSignatureRefused(
            f"the checkpoint of {log.origin!r} is not signed by the log key this witness "
            f"trusts: {exc}"
        ) from None
    if request.old_size > checkpoint.size:
        raise InvalidInput(
            f"old size {request.old_size} is above the checkpoint's size {checkpoint.size}"
        )
    held = state if state is not None else WitnessState.empty(log.origin)
    if request.old_size != held.size:
        raise SizeConflict(
            f"this witness last cosigned size {held.size} of {log.origin!r}, not "
            f"{request.old_size}: send a consistency proof from size {held.size}",
            held.size,
        )
    if checkpoint.size == held.size and checkpoint.root_hash != held.root_hash:
        raise SizeConflict(
            f"inconsistent checkpoint: this witness cosigned size {held.size} of "
            f"{log.origin!r} with root {_short(held.root_hash)}, and this checkpoint of the "
            f"same size has root {_short(checkpoint.root_hash)} (a split view)",
            held.size,
        )
    if held.size == 0 and request.proof:
        raise BadConsistencyProof("the consistency proof from size 0 must be empty")
    try:
        merkle.verify_consistency(
            held.size, checkpoint.size, held.root_hash, checkpoint.root_hash, request.proof
        )
    except (VerificationError, InvalidInput) as exc:
        raise BadConsistencyProof(
            f"inconsistent checkpoint: size {checkpoint.size} of {log.origin!r} does not "
            f"extend the size {held.size} this witness cosigned: {exc}"
        ) from None
    new_state = WitnessState(
        origin=log.origin, size=checkpoint.size, root_hash=checkpoint.root_hash
    )
    return new_state, cosign(opened.text, witness, now)


def _short(root: bytes) -> str:
    return base64.b64encode(root).decode("ascii")
