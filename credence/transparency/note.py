"""C2SP signed notes: the envelope of checkpoints and their cosignatures.

A note (c2sp.org/signed-note, Go's ``golang.org/x/mod/sumdb/note``) is UTF-8
text ending in a newline, a blank line, then one line per signature::

    — <key name> <base64(key id (4 bytes) || signature)>

The key id is the first 4 bytes of SHA-256(name || newline || type || public
key); the type byte says what the signature is over (0x01: an Ed25519
signature of the text, the log's key; 0x04: a ``cosignature/v1``, a
witness's key). A verifier holds a *vkey* string ("<name>+<hex key id>+
<base64(type || key)>") that names the key, its id and the key itself.

Pure functions over bytes, bounded: a note is at most :data:`MAX_NOTE_BYTES`
long and carries at most :data:`MAX_SIGNATURES` signature lines, as Go's
``note.Open`` refuses more than 100.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from credence.errors import BadSignature, InvalidInput, MessageTooLarge
from credence.keys import SigningKey, VerifyKey

__all__ = [
    "COSIGNATURE_TYPE",
    "ED25519_TYPE",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Note",
    "NoteSignature",
    "add_signatures",
    "format_note",
    "key_id",
    "open_note",
    "parse_note",
    "sign_note",
    "std_b64decode",
    "vkey",
]

#: Signature type of an Ed25519 signature over the note text (the log key).
ED25519_TYPE = 0x01
#: Signature type of a ``cosignature/v1`` (c2sp.org/tlog-cosignature).
COSIGNATURE_TYPE = 0x04
#: The largest note accepted: a checkpoint with 100 cosignatures fits.
MAX_NOTE_BYTES = 32 * 1024
#: The most signature lines accepted, as Go's ``note.Open``.
MAX_SIGNATURES = 100

_SIGNATURE_PREFIX = "\u2014 "
_KEY_ID_SIZE = 4


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte id, the bytes after the id."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A note's text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]


def std_b64decode(text: str, what: str) -> bytes:
    """Decode standard padded base64, refusing any other spelling.

    Args:
        text: the base64 text.
        what: what the text is, for the error message.

    Raises:
        InvalidInput: not canonical standard padded base64.
    """
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise InvalidInput(f"{what} is not standard padded base64: {text[:60]!r}") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise InvalidInput(f"{what} is not canonical standard padded base64: {text[:60]!r}")
    return data


def _check_name(name: str) -> None:
    if not name or "+" in name or any(char.isspace() for char in name):
        raise InvalidInput(f"note key name {name[:60]!r} must be non-empty, without spaces or '+'")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise InvalidInput("note text must end with a newline")
    for char in text:
        if char < " " and char != "\n":
            raise InvalidInput(
                f"note text holds the control character U+{ord(char):04X}; only newline is allowed"
            )


def key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    """The 4-byte key id: SHA-256(name || newline || type byte || key)[:4].

    Raises:
        InvalidInput: the name is empty or holds a space or '+', or the type is
            not a byte.
    """
    _check_name(name)
    if not 0 <= key_type <= 0xFF:
        raise InvalidInput(f"note key type {key_type} is not a byte")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key)
    return digest.digest()[:_KEY_ID_SIZE]


def vkey(name: str, key_type: int, public_key: bytes) -> str:
    """The verifier key string Go's ``note.NewVerifier`` reads.

    Raises:
        InvalidInput: the name or type is invalid (see :func:`key_id`).
    """
    encoded = base64.b64encode(bytes([key_type]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, key_type, public_key).hex()}+{encoded}"


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise InvalidInput(
            f"note signature line {line[:60]!r} does not start with an em dash and a space"
        )
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not space or not encoded:
        raise InvalidInput(f"note signature line {line[:60]!r} lacks the base64 signature")
    _check_name(name)
    raw = std_b64decode(encoded, f"the signature of key {name[:60]!r}")
    if len(raw) <= _KEY_ID_SIZE:
        raise InvalidInput(f"the signature of key {name[:60]!r} is shorter than 5 bytes")
    return NoteSignature(name=name, key_id=raw[:_KEY_ID_SIZE], signature=raw[_KEY_ID_SIZE:])


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines.

    Exact duplicate signature lines are kept once. Nothing is verified here:
    see :func:`open_note`.

    Raises:
        MessageTooLarge: over :data:`MAX_NOTE_BYTES` or :data:`MAX_SIGNATURES`.
        InvalidInput: not UTF-8, a control character other than newline, no
            blank line before the signatures, no signature, or a malformed line.
    """
    if len(data) > MAX_NOTE_BYTES:
        raise MessageTooLarge(f"a note is at most {MAX_NOTE_BYTES} bytes, got {len(data)}")
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("a note must be UTF-8") from None
    split = message.rfind("\n\n")
    if split < 0:
        raise InvalidInput("a note must end with a blank line and its signature lines")
    text, block = message[: split + 1], message[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise InvalidInput("a note's signature lines must each end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MessageTooLarge(
            f"a note carries at most {MAX_SIGNATURES} signatures, got {len(lines)}"
        )
    signatures: list[NoteSignature] = []
    for line in lines:
        for char in line:
            if char < " ":
                raise InvalidInput(f"note signature line holds the control U+{ord(char):04X}")
        signature = _parse_signature_line(line)
        if signature not in signatures:
            signatures.append(signature)
    return Note(text=text, signatures=tuple(signatures))


def format_note(note: Note) -> bytes:
    """The bytes of a note: its text, a blank line, one line per signature.

    Raises:
        InvalidInput: the text is malformed (see :func:`parse_note`), a key name
            is invalid, a key id is not 4 bytes, or there is no signature.
        MessageTooLarge: more than :data:`MAX_SIGNATURES` signatures.
    """
    _check_text(note.text)
    if not note.signatures:
        raise InvalidInput("a note needs at least one signature")
    if len(note.signatures) > MAX_SIGNATURES:
        raise MessageTooLarge(
            f"a note carries at most {MAX_SIGNATURES} signatures, got {len(note.signatures)}"
        )
    lines = [note.text, "\n"]
    for signature in note.signatures:
        _check_name(signature.name)
        if len(signature.key_id) != _KEY_ID_SIZE or not signature.signature:
            raise InvalidInput(
                f"signature of {signature.name!r} needs a 4-byte key id and a signature"
            )
        encoded = base64.b64encode(signature.key_id + signature.signature).decode("ascii")
        lines.append(f"{_SIGNATURE_PREFIX}{signature.name} {encoded}\n")
    return "".join(lines).encode("utf-8")


def sign_note(text: str, name: str, key: SigningKey) -> bytes:
    """Sign ``text`` with an Ed25519 note signature (type 0x01) named ``name``.

    Raises:
        InvalidInput: the text or name is malformed.
    """
    _check_text(text)
    signature = NoteSignature(
        name=name,
        key_id=key_id(name, ED25519_TYPE, key.public.raw()),
        signature=key.sign(text.encode("utf-8")),
    )
    return format_note(Note(text=text, signatures=(signature,)))


def open_note(data: bytes, name: str, public_key: bytes) -> Note:
    """Parse a note and verify its Ed25519 signature by key ``name``.

    Other signature lines are kept, unverified, in the result.

    Raises:
        InvalidInput: the note or the public key is malformed.
        MessageTooLarge: the note is over its bounds.
        BadSignature: no signature line by this key, or it does not verify.
    """
    note = parse_note(data)
    verifier = VerifyKey.from_raw(public_key)
    wanted = key_id(name, ED25519_TYPE, public_key)
    candidates = [s for s in note.signatures if s.name == name and s.key_id == wanted]
    if not candidates:
        raise BadSignature(
            f"the note carries no signature by {name!r} with key id {wanted.hex()}; "
            "check the origin and the log key"
        )
    for candidate in candidates:
        if len(candidate.signature) != 64:
            continue
        try:
            verifier.verify(candidate.signature, note.text.encode("utf-8"))
        except BadSignature:
            continue
        return note
    raise BadSignature(f"the note's signature by {name!r} (key id {wanted.hex()}) does not verify")


def add_signatures(data: bytes, signatures: Sequence[NoteSignature]) -> bytes:
    """The same note with more signature lines, each (name, key id) at most once.

    A signature whose (name, key id) the note already carries is not added.

    Raises:
        InvalidInput: the note or a signature is malformed.
        MessageTooLarge: the result would be over its bounds.
    """
    note = parse_note(data)
    merged = list(note.signatures)
    present = {(s.name, s.key_id) for s in merged}
    for signature in signatures:
        if (signature.name, signature.key_id) not in present:
            present.add((signature.name, signature.key_id))
            merged.append(signature)
    out = format_note(Note(text=note.text, signatures=tuple(merged)))
    if len(out) > MAX_NOTE_BYTES:
        raise MessageTooLarge(f"a note is at most {MAX_NOTE_BYTES} bytes, got {len(out)}")
    return out
