"""Receipts (C2SP tlog-proof): built from tiles, verified offline, tampering refused.

Written from the side of a registry that would like a receipt to say more
than the witnessed log does: each forgery is refused, naming what failed.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import pytest

from credence.errors import BadSignature, ClaimMismatch, InvalidInput, MessageTooLarge
from credence.keys import SigningKey
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from credence.transparency.cosignature import WitnessKey, cosign
from credence.transparency.note import add_signatures
from credence.transparency.tile_tree import TileTree
from credence.transparency.tiles import TILE_WIDTH, encode_entry_bundle
from credence.transparency.tlog_proof import (
    HEADER,
    TlogProof,
    format_tlog_proof,
    parse_tlog_proof,
    prove_from_tiles,
    verify_tlog_proof,
)
from credence.transparency.witness_policy import QuorumNotMet, Witness, WitnessPolicy

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
ORIGIN = "credence/test-fed/log"
LOG_KEY = SigningKey.from_seed(bytes(range(32)))
WITNESSES = [
    WitnessKey(
        f"credence/test-fed/witness/w{i}", SigningKey.from_seed(hashlib.sha256(bytes([i])).digest())
    )
    for i in range(3)
]
POLICY = WitnessPolicy(
    origin=ORIGIN,
    log_public_key=LOG_KEY.public.raw(),
    witnesses=tuple(Witness(w.name, w.key.public.raw()) for w in WITNESSES),
    threshold=2,
)
SIZE = 600
ENTRIES = [hashlib.sha256(b"lookup %d" % i).digest() for i in range(SIZE)]


def _store() -> merkle.MemorySubtrees:
    store = merkle.MemorySubtrees()
    for index, entry in enumerate(ENTRIES):
        merkle.append(store, index, merkle.leaf_hash(entry))
    return store


STORE = _store()
ROOT = merkle.root(STORE, SIZE)


def _note(signers: list[WitnessKey], key: SigningKey = LOG_KEY, root: bytes = ROOT) -> bytes:
    checkpoint = Checkpoint(ORIGIN, SIZE, root)
    text = format_checkpoint(checkpoint)
    return add_signatures(sign_checkpoint(checkpoint, key), [cosign(text, w, NOW) for w in signers])


def _tree() -> TileTree:
    def tile(level: int, index: int, width: int) -> bytes:
        return b"".join(STORE.get(8 * level, index * TILE_WIDTH + i) for i in range(width))

    def entries(index: int, width: int) -> bytes:
        return encode_entry_bundle(ENTRIES[index * TILE_WIDTH : index * TILE_WIDTH + width])

    return TileTree(SIZE, ROOT, tile, entries)


def _receipt(index: int = 300, signers: list[WitnessKey] = WITNESSES[:2]) -> TlogProof:
    return prove_from_tiles(_tree(), index, _note(signers))


def test_a_receipt_from_tiles_round_trips_and_verifies_offline() -> None:
    receipt = _receipt(599)
    data = format_tlog_proof(receipt)
    lines = data.decode().split("\n")
    assert lines[0] == HEADER
    assert lines[1] == "extra " + base64.b64encode(ENTRIES[599]).decode()
    assert lines[2] == "index 599"
    assert data.endswith(_note(WITNESSES[:2]))
    parsed = parse_tlog_proof(data)
    assert parsed == receipt
    cosigned = verify_tlog_proof(parsed, POLICY, now=NOW, expected_entry=ENTRIES[599])
    assert (cosigned.checkpoint.size, len(cosigned.cosigners)) == (SIZE, 2)
    assert list(parsed.path) == merkle.inclusion_proof(STORE, 599, SIZE)


def test_a_receipt_for_another_entry_or_index_is_refused() -> None:
    receipt = _receipt(300)
    # Another lookup's verdict presented with this receipt.
    with pytest.raises(ClaimMismatch, match=r"the receipt is for entry .*, not the expected"):
        verify_tlog_proof(receipt, POLICY, now=NOW, expected_entry=ENTRIES[301])
    # The entry swapped inside the receipt (extra is unsigned): the path does not lead to the root.
    forged = TlogProof(receipt.index, receipt.path, receipt.checkpoint_note, ENTRIES[301])
    with pytest.raises(ClaimMismatch, match="inclusion proof for leaf 300 of 600 leads to root"):
        verify_tlog_proof(forged, POLICY, now=NOW)
    moved = TlogProof(301, receipt.path, receipt.checkpoint_note, receipt.extra)
    with pytest.raises(ClaimMismatch, match="leads to root"):
        verify_tlog_proof(moved, POLICY, now=NOW)
    beyond = TlogProof(SIZE, receipt.path, receipt.checkpoint_note, receipt.extra)
    with pytest.raises(ClaimMismatch, match="index 600 is not in the checkpoint's tree of 600"):
        verify_tlog_proof(beyond, POLICY, now=NOW)


def test_a_tampered_path_hash_is_refused() -> None:
    receipt = _receipt()
    path = list(receipt.path)
    path[3] = bytes(32)
    with pytest.raises(ClaimMismatch, match="leads to root"):
        verify_tlog_proof(
            TlogProof(receipt.index, tuple(path), receipt.checkpoint_note, receipt.extra),
            POLICY,
            now=NOW,
        )


def test_a_checkpoint_without_quorum_or_the_log_s_signature_is_refused() -> None:
    lone = _receipt(signers=WITNESSES[:1])
    with pytest.raises(QuorumNotMet, match=r"cosigned by 1 of the 3 witnesses.*requires 2"):
        verify_tlog_proof(lone, POLICY, now=NOW)
    # Two cosignatures by the same witness still count once.
    twice = TlogProof(
        lone.index,
        lone.path,
        add_signatures(
            lone.checkpoint_note,
            [
                cosign(
                    format_checkpoint(Checkpoint(ORIGIN, SIZE, ROOT)),
                    WITNESSES[0],
                    NOW.replace(second=5),
                )
            ],
        ),
        lone.extra,
    )
    with pytest.raises(QuorumNotMet):
        verify_tlog_proof(twice, POLICY, now=NOW)
    # A checkpoint made with another key, cosigned by a quorum of witnesses, is not the log's.
    other = TlogProof(300, lone.path, _note(WITNESSES, key=SigningKey.generate()), lone.extra)
    with pytest.raises(BadSignature):
        verify_tlog_proof(other, POLICY, now=NOW)


def test_a_receipt_without_entry_needs_one_given() -> None:
    receipt = _receipt()
    bare = TlogProof(receipt.index, receipt.path, receipt.checkpoint_note)
    assert b"extra" not in format_tlog_proof(bare)
    with pytest.raises(InvalidInput, match="carries no entry"):
        verify_tlog_proof(bare, POLICY, now=NOW)
    verify_tlog_proof(
        parse_tlog_proof(format_tlog_proof(bare)), POLICY, now=NOW, expected_entry=ENTRIES[300]
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"c2sp.org/tlog-proof@v2\nindex 1\n\nx\n", "first line must be"),
        (b"c2sp.org/tlog-proof@v1\nindex 01\n\nx\n", "not a canonical decimal"),
        (b"c2sp.org/tlog-proof@v1\nindex -1\n\nx\n", "not a canonical decimal"),
        (b"c2sp.org/tlog-proof@v1\nextra AA\nindex 1\n\nx\n", "not standard base64"),
        (b"c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\nx\n", "hash 0 is not 32 bytes"),
        (b"c2sp.org/tlog-proof@v1\nindex 1\n", "no blank line followed by a checkpoint"),
        (b"c2sp.org/tlog-proof@v1\n\nx\n", "needs an 'index <n>' line"),
    ],
)
def test_malformed_receipts_are_refused_saying_what(data: bytes, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_tlog_proof(data)


def test_an_oversized_receipt_is_refused_before_it_is_read() -> None:
    with pytest.raises(MessageTooLarge):
        parse_tlog_proof(b"x" * 100_000)
