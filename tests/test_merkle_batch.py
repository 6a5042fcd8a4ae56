"""Batch inclusion proofs agree with the single-proof RFC 9162 maths, verdict for verdict."""

from __future__ import annotations

import hashlib
import random

import pytest

from credence.errors import ClaimMismatch, InvalidInput
from credence.transparency import merkle
from credence.transparency.merkle_batch import BatchVerifier, inclusion_paths, peaks

SIZES = [*range(1, 70), 127, 128, 129, 255, 1000, 1023, 1025]


def _tree(size: int) -> tuple[merkle.MemorySubtrees, list[bytes]]:
    store = merkle.MemorySubtrees()
    leaves = [merkle.leaf_hash(hashlib.sha256(n.to_bytes(4, "big")).digest()) for n in range(size)]
    for index, leaf in enumerate(leaves):
        merkle.append(store, index, leaf)
    return store, leaves


@pytest.mark.parametrize("size", SIZES)
def test_paths_equal_the_single_proofs_and_all_verify(size: int) -> None:
    store, leaves = _tree(size)
    root = merkle.root(store, size)
    indexes = list(range(size)) if size <= 129 else random.Random(size).sample(range(size), 100)
    paths = inclusion_paths(store, indexes, size)
    verifier = BatchVerifier(size, root)
    for index, path in zip(indexes, paths, strict=True):
        assert path == merkle.inclusion_proof(store, index, size)
        verifier.verify(leaves[index], index, path)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 7, 12, 13, 31, 33, 64])
def test_every_single_byte_change_is_caught(size: int) -> None:
    store, leaves = _tree(size)
    root = merkle.root(store, size)
    paths = inclusion_paths(store, list(range(size)), size)
    for index in range(size):
        path = paths[index]
        for position in range(len(path)):
            bad = [*path]
            bad[position] = bytes([bad[position][0] ^ 1]) + bad[position][1:]
            _both_refuse(BatchVerifier(size, root), size, root, leaves[index], index, bad)
        _both_refuse(BatchVerifier(size, root), size, root, leaves[index], index, [*path, root])
        if path:
            _both_refuse(BatchVerifier(size, root), size, root, leaves[index], index, path[:-1])


@pytest.mark.parametrize("size", [2, 3, 5, 7, 12, 13, 33, 64])
def test_after_honest_proofs_no_other_leaf_or_position_gets_through(size: int) -> None:
    store, leaves = _tree(size)
    root = merkle.root(store, size)
    paths = inclusion_paths(store, list(range(size)), size)
    verifier = BatchVerifier(size, root)
    for index in range(size):
        verifier.verify(leaves[index], index, paths[index])  # every node is now known
    for index in range(size):
        stranger = merkle.leaf_hash(bytes([index]) * 32)
        _both_refuse(verifier, size, root, stranger, index, paths[index])
        other = (index + 1) % size  # a real leaf, claimed at another position
        _both_refuse(verifier, size, root, leaves[index], other, paths[other])
        # A leaf already proved is in the tree whatever later path comes with it:
        # the path past a proved node cannot change that answer.
        junk = [bytes(32)] * len(paths[index])
        verifier.verify(leaves[index], index, junk)


def _both_refuse(
    verifier: BatchVerifier, size: int, root: bytes, leaf: bytes, index: int, path: list[bytes]
) -> None:
    with pytest.raises(ClaimMismatch):
        merkle.verify_inclusion(leaf, index, size, path, root)
    with pytest.raises(ClaimMismatch):
        verifier.verify(leaf, index, path)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInput):
        BatchVerifier(0, bytes(32))
    with pytest.raises(InvalidInput):
        BatchVerifier(3, bytes(31))
    verifier = BatchVerifier(3, bytes(32))
    with pytest.raises(InvalidInput):
        verifier.verify(bytes(32), 3, [])
    with pytest.raises(InvalidInput):
        verifier.verify(bytes(32), 0, [bytes(31)])
    with pytest.raises(InvalidInput):
        inclusion_paths(merkle.MemorySubtrees(), [5], 5)
    assert peaks(13) == [(3, 0), (2, 8), (0, 12)]
