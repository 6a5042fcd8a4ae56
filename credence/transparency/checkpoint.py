"""C2SP checkpoints: the log's signed tree head as a signed note.

A checkpoint (c2sp.org/tlog-checkpoint) is the note text::

    <origin>
    <tree size in decimal>
    <base64 root hash>
    [extension lines]

signed by the log key as an Ed25519 note signature whose key name is the
origin. The origin is fixed per federation (:func:`log_origin`), so a
checkpoint of one federation's log never verifies as another's.

Pure functions, no I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from credence.errors import InvalidInput
from credence.keys import SigningKey
from credence.transparency.merkle import HASH_SIZE
from credence.transparency.note import Note, open_note, sign_note, std_b64decode

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "format_checkpoint",
    "log_origin",
    "open_checkpoint",
    "parse_checkpoint",
    "sign_checkpoint",
]

#: The largest tree size a checkpoint may carry (Go's tlog uses int64).
MAX_TREE_SIZE = 2**63 - 1


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint says: the log, its size and its root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


def log_origin(federation_id: str) -> str:
    """The origin line of a federation's log: ``credence/<federation id>/log``.

    Raises:
        InvalidInput: the federation id is empty or holds a space, '+' or '/'.
    """
    if (
        not federation_id
        or any(char.isspace() or char in "+/" for char in federation_id)
        or not federation_id.isprintable()
    ):
        raise InvalidInput(
            f"federation id {federation_id[:60]!r} cannot name a log origin: "
            "it must be non-empty, printable, without spaces, '+' or '/'"
        )
    return f"credence/{federation_id}/log"


def _check(checkpoint: Checkpoint) -> None:
    origin = checkpoint.origin
    if not origin or "+" in origin or any(c.isspace() for c in origin) or not origin.isprintable():
        raise InvalidInput(
            f"checkpoint origin {origin[:60]!r} must be non-empty, printable, without spaces or '+'"
        )
    if not 0 <= checkpoint.size <= MAX_TREE_SIZE:
        raise InvalidInput(f"checkpoint tree size {checkpoint.size} is out of range")
    if len(checkpoint.root_hash) != HASH_SIZE:
        raise InvalidInput(
            f"checkpoint root hash is {HASH_SIZE} bytes, got {len(checkpoint.root_hash)}"
        )
    for line in checkpoint.extensions:
        if not line or not line.isprintable():
            raise InvalidInput(f"checkpoint extension line {line[:60]!r} is empty or unprintable")


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The note text of a checkpoint.

    Raises:
        InvalidInput: the origin, size, root hash or an extension is malformed.
    """
    _check(checkpoint)
    root = base64.b64encode(checkpoint.root_hash).decode("ascii")
    lines = [checkpoint.origin, str(checkpoint.size), root, *checkpoint.extensions]
    return "".join(f"{line}\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's note text.

    Raises:
        InvalidInput: fewer than three lines, a size that is not a canonical
            decimal, a root hash that is not base64 of 32 bytes, an empty line.
    """
    if not text.endswith("\n"):
        raise InvalidInput("checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise InvalidInput("checkpoint text needs an origin, a tree size and a root hash line")
    origin, size_text, root_text, *extensions = lines
    if (
        not 0 < len(size_text) <= 19
        or not size_text.isascii()
        or not size_text.isdigit()
        or size_text != str(int(size_text))
    ):
        raise InvalidInput(f"checkpoint tree size {size_text[:30]!r} is not a canonical decimal")
    checkpoint = Checkpoint(
        origin=origin,
        size=int(size_text),
        root_hash=std_b64decode(root_text, "checkpoint root hash"),
        extensions=tuple(extensions),
    )
    _check(checkpoint)
    return checkpoint


def sign_checkpoint(checkpoint: Checkpoint, log_key: SigningKey) -> bytes:
    """The signed note of a checkpoint, signed by the log key named by the origin.

    Raises:
        InvalidInput: the checkpoint is malformed.
    """
    return sign_note(format_checkpoint(checkpoint), checkpoint.origin, log_key)


def open_checkpoint(data: bytes, origin: str, log_public_key: bytes) -> tuple[Checkpoint, Note]:
    """Verify a checkpoint note's log signature and read the checkpoint.

    Raises:
        InvalidInput: the note or its text is malformed, or it is another log's
            checkpoint (its origin line is not ``origin``).
        MessageTooLarge: the note is over its bounds.
        BadSignature: no valid signature by the log key named ``origin``.
    """
    note = open_note(data, origin, log_public_key)
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != origin:
        raise InvalidInput(
            f"checkpoint is for log {checkpoint.origin[:60]!r}, expected {origin[:60]!r}"
        )
    return checkpoint, note
