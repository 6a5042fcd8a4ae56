"""Auditing the log from outside: quorum, tiles against the root, consistency with the saved one.

From the side of a registry that would rewrite its log, fork it, or publish
without its witnesses: each is refused, naming what failed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from credence.errors import ClaimMismatch, RolledBack
from credence.keys import SigningKey
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from credence.transparency.checkpoint_audit import audit_checkpoint
from credence.transparency.cosignature import WitnessKey, cosign
from credence.transparency.note import add_signatures
from credence.transparency.tile_tree import TileTree
from credence.transparency.tiles import TILE_WIDTH, encode_entry_bundle
from credence.transparency.witness_policy import QuorumNotMet, Witness, WitnessPolicy

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
ORIGIN = "credence/test-fed/log"
LOG_KEY = SigningKey.from_seed(bytes(range(32)))
WITNESSES = [
    WitnessKey(f"credence/test-fed/witness/w{i}", SigningKey.from_seed(bytes([i + 1]) * 32))
    for i in range(3)
]
POLICY = WitnessPolicy(
    origin=ORIGIN,
    log_public_key=LOG_KEY.public.raw(),
    witnesses=tuple(Witness(w.name, w.key.public.raw()) for w in WITNESSES),
    threshold=2,
)


class Log:
    def __init__(self, entries: list[bytes]) -> None:
        self.entries = entries
        self.store = merkle.MemorySubtrees()
        for index, entry in enumerate(entries):
            merkle.append(self.store, index, merkle.leaf_hash(entry))
        self.forged: dict[tuple[int, int, int], bytes] = {}

    def note(self, size: int, signers: list[WitnessKey] = WITNESSES[:2]) -> bytes:
        checkpoint = Checkpoint(ORIGIN, size, merkle.root(self.store, size))
        text = format_checkpoint(checkpoint)
        signed = sign_checkpoint(checkpoint, LOG_KEY)
        return add_signatures(signed, [cosign(text, w, NOW) for w in signers])

    def tree(self, size: int, root: bytes) -> TileTree:
        def tile(level: int, index: int, width: int) -> bytes:
            forged = self.forged.get((level, index, width))
            if forged is not None:
                return forged
            start = index * TILE_WIDTH
            return b"".join(self.store.get(8 * level, start + i) for i in range(width))

        def bundle(index: int, width: int) -> bytes:
            start = index * TILE_WIDTH
            return encode_entry_bundle(self.entries[start : start + width])

        return TileTree(size, root, tile, bundle)


def _entries(count: int, tag: bytes = b"") -> list[bytes]:
    return [hashlib.sha256(tag + b"entry %d" % i).digest() for i in range(count)]


def test_a_growing_log_is_consistent_with_the_saved_checkpoint() -> None:
    log = Log(_entries(900))
    first = audit_checkpoint(log.note(300), POLICY, log.tree, saved=None, now=NOW)
    assert (first.previous, first.cosigned.checkpoint.size) == (None, 300)
    later = audit_checkpoint(log.note(900), POLICY, log.tree, saved=log.note(300), now=NOW)
    assert later.previous is not None
    assert later.previous.size == 300
    assert later.proof_length == len(merkle.consistency_proof(log.store, 300, 900))
    same = audit_checkpoint(log.note(900), POLICY, log.tree, saved=log.note(900), now=NOW)
    assert same.proof_length == 0


def test_a_forked_log_is_refused_naming_the_inconsistency() -> None:
    # The registry showed this auditor 300 entries before; it now shows a log
    # whose first 300 entries differ (one entry rewritten), cosigned as well.
    genuine = Log(_entries(300))
    rewritten = _entries(900)
    rewritten[17] = hashlib.sha256(b"rewritten").digest()
    fork = Log(rewritten)
    with pytest.raises(ClaimMismatch, match="does not extend the checkpoint of 300 saved before"):
        audit_checkpoint(fork.note(900), POLICY, fork.tree, saved=genuine.note(300), now=NOW)
    # Same size, other content: a split view.
    with pytest.raises(ClaimMismatch, match="two tree heads of 300 leaves disagree"):
        audit_checkpoint(fork.note(300), POLICY, fork.tree, saved=genuine.note(300), now=NOW)


def test_a_shrunk_log_is_refused() -> None:
    log = Log(_entries(900))
    with pytest.raises(RolledBack, match="smaller than the 900 saved before"):
        audit_checkpoint(log.note(500), POLICY, log.tree, saved=log.note(900), now=NOW)


def test_a_checkpoint_without_quorum_is_refused() -> None:
    log = Log(_entries(10))
    with pytest.raises(QuorumNotMet, match=r"cosigned by 1 of the 3 witnesses \(.*w2\)"):
        audit_checkpoint(log.note(10, [WITNESSES[2]]), POLICY, log.tree, saved=None, now=NOW)


def test_tiles_that_do_not_hash_to_the_checkpoint_root_are_refused() -> None:
    log = Log(_entries(700))
    log.forged[0, 2, 188] = bytes(32) * 188
    with pytest.raises(ClaimMismatch, match=r"right-edge tiles .* not the checkpoint's root"):
        audit_checkpoint(log.note(700), POLICY, log.tree, saved=None, now=NOW)
