"""Receipts: C2SP tlog-proofs that an entry is in the witnessed log, checked offline.

A tlog-proof (c2sp.org/tlog-proof) is the text::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry>
    index <leaf index>
    <base64 hash>            one line per inclusion proof hash, leaf side first
    ...
    (blank line)
    <the checkpoint note, verbatim, with the log's signature and cosignatures>

The spec leaves ``extra`` to the application, for data needed to rebuild the
leaf; a Credence receipt carries the entry itself there (the 32-byte salted
commitment that is the leaf's data), so the receipt is self-contained: it
verifies with the manifest's log key and witness quorum alone, no registry
needed. The extra line is not signed; what binds it is the inclusion proof
from ``SHA-256(0x00 || entry)`` to the cosigned root, and a caller that knows
which entry it expects (a verdict's log promise) passes it in.

Pure functions, ``now`` passed in.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from credence.errors import ClaimMismatch, InvalidInput, MessageTooLarge
from credence.transparency import merkle
from credence.transparency.tile_tree import TileTree
from credence.transparency.tiles import TILE_WIDTH
from credence.transparency.witness_policy import Cosigned, WitnessPolicy, verify_cosigned

__all__ = [
    "HEADER",
    "TlogProof",
    "format_tlog_proof",
    "parse_tlog_proof",
    "prove_from_tiles",
    "verify_tlog_proof",
]

HEADER = "c2sp.org/tlog-proof@v1"
#: A proof of a tree of up to 2**63 leaves has at most 63 hashes; the note is bounded too.
MAX_PROOF_BYTES = 48 * 1024
_MAX_PATH = 63
_MAX_EXTRA = 4096


@dataclass(frozen=True)
class TlogProof:
    """An entry, its leaf index, its inclusion path and the (cosigned) checkpoint note."""

    index: int
    path: tuple[bytes, ...]
    checkpoint_note: bytes
    #: The entry (the leaf's data); empty if the receipt leaves it out.
    extra: bytes = b""


def _b64(text: str, what: str) -> bytes:
    try:
        value = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise InvalidInput(f"tlog-proof {what} is not standard base64: {text[:60]!r}") from exc
    if base64.b64encode(value).decode("ascii") != text:
        raise InvalidInput(f"tlog-proof {what} is not canonical padded base64: {text[:60]!r}")
    return value


def format_tlog_proof(proof: TlogProof) -> bytes:
    """The tlog-proof text of ``proof``.

    Raises:
        InvalidInput: a negative index or a path hash that is not 32 bytes.
    """
    if proof.index < 0:
        raise InvalidInput(f"tlog-proof index {proof.index} is negative")
    lines = [HEADER]
    if proof.extra:
        lines.append(f"extra {base64.b64encode(proof.extra).decode('ascii')}")
    lines.append(f"index {proof.index}")
    for number, hash_ in enumerate(proof.path):
        if len(hash_) != merkle.HASH_SIZE:
            raise InvalidInput(f"tlog-proof hash {number} is not {merkle.HASH_SIZE} bytes")
        lines.append(base64.b64encode(hash_).decode("ascii"))
    return ("\n".join(lines) + "\n\n").encode("ascii") + proof.checkpoint_note


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Read a tlog-proof (its checkpoint is not verified here: see :func:`verify_tlog_proof`).

    Raises:
        MessageTooLarge: over :data:`MAX_PROOF_BYTES`.
        InvalidInput: not a c2sp.org/tlog-proof@v1, or a line malformed.
    """
    if len(data) > MAX_PROOF_BYTES:
        raise MessageTooLarge(f"a tlog-proof is at most {MAX_PROOF_BYTES} bytes, got {len(data)}")
    head, separator, note = data.partition(b"\n\n")
    if not separator or not note:
        raise InvalidInput("tlog-proof has no blank line followed by a checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        raise InvalidInput("tlog-proof header lines must be ASCII") from exc
    if lines[0] != HEADER:
        raise InvalidInput(f"not a tlog-proof: the first line must be {HEADER!r}")
    rest = lines[1:]
    extra = b""
    if rest and rest[0].startswith("extra "):
        extra = _b64(rest[0][len("extra ") :], "extra data")
        if len(extra) > _MAX_EXTRA:
            raise InvalidInput(f"tlog-proof extra data is over {_MAX_EXTRA} bytes")
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise InvalidInput("tlog-proof needs an 'index <n>' line after the header")
    index_text = rest[0][len("index ") :]
    if not index_text.isdigit() or index_text != str(int(index_text)) or len(index_text) > 19:
        raise InvalidInput(f"tlog-proof index {index_text[:30]!r} is not a canonical decimal")
    hashes = rest[1:]
    if len(hashes) > _MAX_PATH:
        raise InvalidInput(f"tlog-proof has {len(hashes)} hashes, more than {_MAX_PATH}")
    path = tuple(_b64(line, f"hash {number}") for number, line in enumerate(hashes))
    for number, hash_ in enumerate(path):
        if len(hash_) != merkle.HASH_SIZE:
            raise InvalidInput(f"tlog-proof hash {number} is not {merkle.HASH_SIZE} bytes")
    return TlogProof(index=int(index_text), path=path, checkpoint_note=note, extra=extra)


def verify_tlog_proof(
    proof: TlogProof,
    policy: WitnessPolicy,
    *,
    now: datetime,
    expected_entry: bytes | None = None,
) -> Cosigned:
    """Check a receipt offline: the log's signature, the witness quorum, the inclusion.

    The entry is the receipt's own (``extra``) unless ``expected_entry`` is
    given, which the receipt's entry must then equal.

    Raises:
        InvalidInput: the checkpoint is malformed or another log's, or the receipt
            carries no entry and none is expected.
        BadSignature: the log's signature does not verify.
        QuorumNotMet: fewer witnesses than the policy's quorum cosigned the checkpoint.
        ClaimMismatch: the entry is not the expected one, or the inclusion proof
            does not lead to the cosigned root.
    """
    if expected_entry is not None and proof.extra and proof.extra != expected_entry:
        raise ClaimMismatch(
            f"the receipt is for entry {proof.extra.hex()[:16]}..., not the expected "
            f"{expected_entry.hex()[:16]}..."
        )
    entry = expected_entry if expected_entry is not None else proof.extra
    if not entry:
        raise InvalidInput("the receipt carries no entry (no extra line) and none was given")
    cosigned = verify_cosigned(proof.checkpoint_note, policy, now=now)
    checkpoint = cosigned.checkpoint
    if not 0 <= proof.index < checkpoint.size:
        raise ClaimMismatch(
            f"the receipt's index {proof.index} is not in the checkpoint's tree of "
            f"{checkpoint.size} entries"
        )
    merkle.verify_inclusion(
        merkle.leaf_hash(entry), proof.index, checkpoint.size, proof.path, checkpoint.root_hash
    )
    return cosigned


def prove_from_tiles(tree: TileTree, index: int, checkpoint_note: bytes) -> TlogProof:
    """The receipt for leaf ``index`` of the tree a checkpoint note signs, from its tiles.

    ``tree`` must be the tree of that checkpoint (its size and root). The
    entry comes from the entry bundle, checked against the tree like every tile.

    Raises:
        InvalidInput: ``index`` is not in the tree.
        ClaimMismatch: a tile does not hash to the checkpoint's root.
    """
    if not 0 <= index < tree.size:
        raise InvalidInput(f"leaf index {index} is not in the tree of {tree.size} entries")
    bundle = tree.entries(index // TILE_WIDTH)
    return TlogProof(
        index=index,
        path=tuple(tree.inclusion_proof(index)),
        checkpoint_note=checkpoint_note,
        extra=bundle[index % TILE_WIDTH],
    )
