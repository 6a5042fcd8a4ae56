"""RFC 9162 inclusion proofs for many leaves of one tree: build them, check them.

Pure functions, no I/O; the single-proof maths is :mod:`credence.transparency.merkle`, and
these give the same proofs and the same verdicts, faster when there are many.

A tree of ``size`` leaves is a row of *peaks*, one complete subtree per set bit
of ``size``, largest (leftmost) first. The RFC 9162 path of a leaf in peak
``j`` is, leaf side first: the siblings inside its peak, bottom up; then the
hash of everything right of the peak (peaks ``j+1...``), if any; then the
hashes of the peaks left of it, nearest first. Building a path is therefore a
few lookups, no recursion.

Checking many paths against one signed root shares work: every node a path
leads to on its way to the root is remembered, and a later path that reaches a
remembered node must match it there and stops (a verified node is in the tree,
so reaching its hash proves the rest). As with :mod:`credence.transparency.merkle`, the
size and root must come from a verified signed tree head, never the prover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from credence.errors import ClaimMismatch, InvalidInput
from credence.transparency.merkle import HASH_SIZE, SubtreeStore

__all__ = ["BatchVerifier", "inclusion_paths", "peaks"]

_sha256 = hashlib.sha256


def peaks(size: int) -> list[tuple[int, int]]:
    """The ``(level, start leaf)`` of each peak of a tree of ``size`` leaves, leftmost first."""
    found = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            found.append((level, start))
            start += 1 << level
    return found


def _peak_of(index: int, tops: Sequence[tuple[int, int]]) -> int:
    for number, (level, start) in enumerate(tops):
        if index < start + (1 << level):
            return number
    raise InvalidInput(f"leaf index {index} is beyond the tree")  # pragma: no cover


def inclusion_paths(store: SubtreeStore, indexes: Sequence[int], size: int) -> list[list[bytes]]:
    """The RFC 9162 path of each leaf in ``indexes`` in the tree of ``size`` leaves.

    Equal, path for path, to :func:`credence.transparency.merkle.inclusion_proof`.

    Raises:
        InvalidInput: an index is not within ``[0, size)``.
        NotFound: the store holds fewer than ``size`` leaves.
    """
    for index in indexes:
        if not 0 <= index < size:
            raise InvalidInput(f"leaf index {index} is not in a tree of {size} leaves")
    tops = peaks(size)
    hashes = [store.get(level, start >> level) for level, start in tops]
    # right_of[j]: the hash of every peak right of peak j (folded from the right).
    right_of: list[bytes | None] = [None] * len(tops)
    for number in range(len(tops) - 2, -1, -1):
        following = right_of[number + 1]
        right_of[number] = (
            hashes[number + 1]
            if following is None
            else _sha256(b"\x01" + hashes[number + 1] + following).digest()
        )
    get = store.get
    paths = []
    for index in indexes:
        number = _peak_of(index, tops)
        path = [get(level, (index >> level) ^ 1) for level in range(tops[number][0])]
        right = right_of[number]
        if right is not None:
            path.append(right)
        path.extend(hashes[left] for left in range(number - 1, -1, -1))
        paths.append(path)
    return paths


def _check_input(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> None:
    if not 0 <= index < size:
        raise InvalidInput(f"leaf index {index} is not in a tree of {size} leaves")
    if len(leaf) != HASH_SIZE:
        raise InvalidInput(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise InvalidInput(
                f"inclusion proof element {position} must be {HASH_SIZE} bytes, got {len(element)}"
            )


class BatchVerifier:
    """Checks many inclusion proofs against one tree size and root, sharing work.

    The question each check answers is "is this leaf at this index of the
    tree?", with the verdicts of :func:`credence.transparency.merkle.verify_inclusion`; one
    difference: a walk that reaches a node proved before stops there, so the
    rest of its proof is not consulted (it could not change the answer).
    """

    def __init__(self, size: int, root_hash: bytes) -> None:
        """Check proofs against the tree of ``size`` leaves whose root is ``root_hash``.

        Raises:
            InvalidInput: ``size`` is below 1 or ``root_hash`` is not 32 bytes.
        """
        if size < 1:
            raise InvalidInput(f"an inclusion proof needs a tree of at least 1 leaf, got {size}")
        if len(root_hash) != HASH_SIZE:
            raise InvalidInput(f"root hash must be {HASH_SIZE} bytes, got {len(root_hash)}")
        self._size = size
        self._root = root_hash
        self._peaks = peaks(size)
        # (first leaf, leaf count) of a node proved to be in the tree -> its hash.
        self._known: dict[tuple[int, int], bytes] = {(0, size): root_hash}

    def verify(self, leaf: bytes, index: int, proof: Sequence[bytes]) -> None:
        """Check that ``leaf`` (a leaf hash) is leaf ``index`` of the tree.

        Raises:
            InvalidInput: ``index`` is not in the tree, or a hash is not 32 bytes.
            ClaimMismatch: the proof does not lead from the leaf to the root.
        """
        size = self._size
        _check_input(leaf, index, size, proof)
        number = _peak_of(index, self._peaks)
        height, peak_start = self._peaks[number]
        expected = height + (number < len(self._peaks) - 1) + number
        if len(proof) != expected:
            raise ClaimMismatch(
                f"inclusion proof for leaf {index} of {size} has {len(proof)} elements, "
                f"the tree needs {expected}"
            )
        known = self._known
        walked: list[tuple[tuple[int, int], bytes]] = []
        node, value = (index, 1), leaf
        steps = iter(proof)
        for level in range(height):
            if (node_known := known.get(node)) is not None:
                return self._reached(index, node, value, node_known, walked)
            walked.append((node, value))
            sibling = next(steps)
            width = 1 << level
            if index >> level & 1:
                value = _sha256(b"\x01" + sibling + value).digest()
                node = (node[0] - width, 2 * width)
            else:
                value = _sha256(b"\x01" + value + sibling).digest()
                node = (node[0], 2 * width)
        if number < len(self._peaks) - 1:
            if (node_known := known.get(node)) is not None:
                return self._reached(index, node, value, node_known, walked)
            walked.append((node, value))
            value = _sha256(b"\x01" + value + next(steps)).digest()
            node = (peak_start, size - peak_start)
        for left in range(number - 1, -1, -1):
            if (node_known := known.get(node)) is not None:
                return self._reached(index, node, value, node_known, walked)
            walked.append((node, value))
            value = _sha256(b"\x01" + next(steps) + value).digest()
            start = self._peaks[left][1]
            node = (start, size - start)
        return self._reached(index, node, value, known[node], walked)

    def _reached(
        self,
        index: int,
        node: tuple[int, int],
        value: bytes,
        known: bytes,
        walked: list[tuple[tuple[int, int], bytes]],
    ) -> None:
        """The walk reached a node proved before: it must match; then the walk is proved."""
        if value != known:
            what = "the signed root" if node == (0, self._size) else "a node proved before"
            raise ClaimMismatch(
                f"inclusion proof for leaf {index} of {self._size} leads to {value.hex()}, "
                f"not {what} {known.hex()} (leaves {node[0]}..{node[0] + node[1] - 1})"
            )
        self._known.update(walked)
