"""RFC 9162 Merkle tree maths: hashes, incremental appends, proofs, verifiers.

Pure functions, no I/O. The tree is kept as the hashes of its *complete*
subtrees only: the subtree at ``(level, index)`` holds the ``2**level`` leaves
starting at leaf ``index * 2**level``. Every range that RFC 9162's recursive
definitions touch is either such a block or splits, at the largest power of
two smaller than its size, into a block and a range ending at the tree's right
edge, so an append and every root or proof read O(log n) stored hashes. Where
the hashes live is abstracted behind :class:`SubtreeStore`, so the registry can
keep them in SQL; :class:`MemorySubtrees` is the in-memory store.

Trust: :func:`verify_inclusion` and :func:`verify_consistency` check a proof
against the tree size and root the caller passes. Both must come from a signed
tree head the caller has verified, never from the prover: an inclusion proof
for leaf 0 of a 3-leaf tree also verifies as "leaf 0 of a 4-leaf tree" against
the 3-leaf root, because the size only shapes the path and the root alone
binds the claim.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from credence.errors import ClaimMismatch, InvalidInput, NotFound

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemorySubtrees",
    "SubtreeStore",
    "append",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256 of the empty string (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || entry)``."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


class SubtreeStore(Protocol):
    """Where the hashes of complete subtrees live (a dict, an SQL table)."""

    def get(self, level: int, index: int) -> bytes:
        """Return the hash of the ``2**level`` leaves from leaf ``index * 2**level``.

        Raises:
            NotFound: the subtree is not stored (the tree is smaller).
        """
        ...

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Store the hash of a complete subtree (written once, never changed)."""
        ...


class MemorySubtrees:
    """A :class:`SubtreeStore` in a dict, for tests, benchmarks and small logs."""

    __slots__ = ("_hashes",)

    def __init__(self) -> None:
        self._hashes: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        """Return the stored hash of subtree ``(level, index)``.

        Raises:
            NotFound: the subtree is not stored.
        """
        try:
            return self._hashes[level, index]
        except KeyError:
            raise NotFound(
                f"no complete subtree at level {level} index {index}: the tree holds fewer "
                f"than {(index + 1) << level} leaves"
            ) from None

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Store the hash of subtree ``(level, index)``."""
        self._hashes[level, index] = hash_

    def __len__(self) -> int:
        return len(self._hashes)


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidInput(
            f"{what} must be a {HASH_SIZE}-byte SHA-256 hash, got {len(value)} bytes"
        )


def _split(n: int) -> int:
    """Return the largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def append(store: SubtreeStore, size: int, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Append a leaf hash to a tree of ``size`` leaves.

    Stores the leaf (level 0) and every complete subtree it completes.

    Args:
        store: the subtree store holding the tree of ``size`` leaves.
        size: the current number of leaves; the new leaf gets index ``size``.
        leaf: the new leaf's hash (see :func:`leaf_hash`), not the entry.

    Returns:
        The ``(level, index, hash)`` triples written, lowest level first, so an
        SQL layer can insert them in one batch.

    Raises:
        InvalidInput: ``size`` is negative or ``leaf`` is not 32 bytes.
        NotFound: the store lacks a subtree the tree of ``size`` leaves has.
    """
    if size < 0:
        raise InvalidInput(f"tree size must be >= 0, got {size}")
    _check_hash("leaf hash", leaf)
    get, put = store.get, store.put
    put(0, size, leaf)
    written = [(0, size, leaf)]
    h, index, level = leaf, size, 0
    # Each trailing 1 bit of the index is a left sibling this leaf completes.
    while index & 1:
        h = _sha256(b"\x01" + get(level, index - 1) + h).digest()
        index >>= 1
        level += 1
        put(level, index, h)
        written.append((level, index, h))
    return written


def subtree_hash(store: SubtreeStore, start: int, end: int) -> bytes:
    """Return MTH of leaves ``[start, end)`` from stored complete subtrees.

    An aligned power-of-two block is one read; other ranges split per RFC
    9162 at the largest power of two smaller than their size. Ranges of the
    form RFC 9162's proofs use (aligned start) cost O(log n) reads; an
    unaligned range is still correct but may read up to O(end - start).

    Raises:
        InvalidInput: the range is empty or reversed, or starts below zero.
        NotFound: the store lacks a subtree of the range.
    """
    if start < 0 or end <= start:
        raise InvalidInput(f"leaf range [{start}, {end}) must be non-empty and start at >= 0")
    return _mth(store, start, end)


def _mth(store: SubtreeStore, start: int, end: int) -> bytes:
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return store.get(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(_mth(store, start, start + k), _mth(store, start + k, end))


def root(store: SubtreeStore, size: int) -> bytes:
    """Return the root hash MTH of the first ``size`` leaves.

    Raises:
        InvalidInput: ``size`` is negative.
        NotFound: the store holds fewer than ``size`` leaves.
    """
    if size < 0:
        raise InvalidInput(f"tree size must be >= 0, got {size}")
    if size == 0:
        return EMPTY_ROOT
    # The complete subtrees of a tree of `size` leaves are its set bits, largest
    # first; folding them from the right is exactly MTH's split recursion.
    blocks: list[bytes] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            blocks.append(store.get(level, start >> level))
            start += 1 << level
    h = blocks.pop()
    while blocks:
        h = node_hash(blocks.pop(), h)
    return h


def inclusion_proof(store: SubtreeStore, index: int, size: int) -> list[bytes]:
    """Return the RFC 9162 inclusion path PATH(index, D[0:size]), leaf side first.

    Raises:
        InvalidInput: ``index`` is not within ``[0, size)``.
        NotFound: the store holds fewer than ``size`` leaves.
    """
    if not 0 <= index < size:
        raise InvalidInput(f"leaf index {index} is not in a tree of {size} leaves")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            siblings.append(_mth(store, start + k, end))
            end = start + k
        else:
            siblings.append(_mth(store, start, start + k))
            start += k
    siblings.reverse()
    return siblings


def consistency_proof(store: SubtreeStore, first: int, second: int) -> list[bytes]:
    """Return the RFC 9162 consistency proof PROOF(first, D[0:second]).

    Empty when ``first`` is 0 or equal to ``second`` (nothing to prove).

    Raises:
        InvalidInput: not ``0 <= first <= second``.
        NotFound: the store holds fewer than ``second`` leaves.
    """
    if not 0 <= first <= second:
        raise InvalidInput(f"consistency needs 0 <= first <= second, got {first} and {second}")
    if first in (0, second):
        return []
    nodes: list[bytes] = []
    start, end, whole = 0, second, True
    while True:
        if end == first:
            # SUBPROOF(m, D[m], b): the old tree's own hash unless it is the
            # whole old tree, which the verifier already holds.
            if not whole:
                nodes.append(_mth(store, start, end))
            break
        k = _split(end - start)
        if first - start <= k:
            nodes.append(_mth(store, start + k, end))
            end = start + k
        else:
            nodes.append(_mth(store, start, start + k))
            start += k
            whole = False
    nodes.reverse()
    return nodes


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root_hash``.

    RFC 9162 section 2.1.3.2. ``size`` and ``root_hash`` must come from a
    verified signed tree head, never from the prover (see the module notes).

    Raises:
        InvalidInput: ``index`` is not in ``[0, size)``, or a hash is not 32 bytes.
        ClaimMismatch: the proof does not lead from the leaf to ``root_hash``.
    """
    if not 0 <= index < size:
        raise InvalidInput(f"leaf index {index} is not in a tree of {size} leaves")
    _check_hash("leaf hash", leaf)
    _check_hash("root hash", root_hash)
    for i, p in enumerate(proof):
        _check_hash(f"inclusion proof element {i}", p)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ClaimMismatch(
                f"inclusion proof for leaf {index} of {size} has {len(proof)} elements, "
                "more than the tree is deep"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ClaimMismatch(
            f"inclusion proof for leaf {index} of {size} has {len(proof)} elements, "
            "fewer than the tree is deep"
        )
    if r != root_hash:
        raise ClaimMismatch(
            f"inclusion proof for leaf {index} of {size} leads to root {r.hex()}, "
            f"not the signed root {root_hash.hex()}"
        )


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``first`` leaves is a prefix of the tree of ``second``.

    RFC 9162 section 2.1.4.2. Sizes and roots must come from verified signed
    tree heads. Size 0 is a prefix of every tree: the proof must be empty and
    ``first_root`` must be :data:`EMPTY_ROOT`. Equal sizes need an empty
    proof and equal roots.

    Raises:
        InvalidInput: not ``0 <= first <= second``, or a hash is not 32 bytes.
        ClaimMismatch: the proof does not link the two roots.
    """
    if not 0 <= first <= second:
        raise InvalidInput(f"consistency needs 0 <= first <= second, got {first} and {second}")
    _check_hash("first root", first_root)
    _check_hash("second root", second_root)
    for i, p in enumerate(proof):
        _check_hash(f"consistency proof element {i}", p)
    if first in (0, second):
        if proof:
            raise ClaimMismatch(
                f"consistency proof from {first} to {second} leaves must be empty, "
                f"got {len(proof)} elements"
            )
        if first == 0 and first_root != EMPTY_ROOT:
            raise ClaimMismatch(
                f"root of the empty tree must be {EMPTY_ROOT.hex()}, got {first_root.hex()}"
            )
        if first == second and first_root != second_root:
            raise ClaimMismatch(
                f"two tree heads of {first} leaves disagree: {first_root.hex()} "
                f"and {second_root.hex()} (the log forked)"
            )
        return
    _verify_consistency_path(first, second, first_root, second_root, proof)


def _verify_consistency_path(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    what = f"consistency proof from {first} to {second} leaves"
    if not proof:
        raise ClaimMismatch(f"{what} is empty; a non-empty proof is needed")
    path = list(proof)
    if first & (first - 1) == 0:
        # The old tree is one complete subtree, which the proof leaves out.
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ClaimMismatch(f"{what} has {len(proof)} elements, more than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ClaimMismatch(f"{what} has {len(proof)} elements, fewer than needed")
    if fr != first_root:
        raise ClaimMismatch(
            f"{what} leads to old root {fr.hex()}, not the signed {first_root.hex()}"
        )
    if sr != second_root:
        raise ClaimMismatch(
            f"{what} leads to new root {sr.hex()}, not the signed {second_root.hex()}"
        )
