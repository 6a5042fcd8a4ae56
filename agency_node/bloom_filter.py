"""An in-memory Bloom filter of the subject references a node holds records for.

Screening asks about millions of subjects, most of whom an agency has never
heard of. The filter answers "certainly not here" without a database round
trip; "maybe" goes to the database, which has the final word. It can give
false positives (a wasted lookup) but never false negatives, provided it is
rebuilt whenever records are added: the node compares the database's record
generation (bumped by every import) before each use.

Subject references are HMAC-SHA256 outputs, uniformly random, so the filter
takes its bit positions straight from the reference's bytes instead of
hashing again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_HASHES = 7
_BITS_PER_ITEM = 10  # with 7 hashes: about 0.8% false positives
_MIN_BITS = 1 << 16
_SHIFTS = tuple(32 * index for index in range(_HASHES))


class BloomFilter:
    """A Bloom filter over 32-byte subject references."""

    def __init__(self, expected_items: int) -> None:
        bits = max(_MIN_BITS, expected_items * _BITS_PER_ITEM)
        self._bits = 1 << math.ceil(math.log2(bits))  # a power of two: masking, no modulo
        self._mask = self._bits - 1
        self._array = bytearray(self._bits // 8)
        self.items = 0

    @classmethod
    def build(cls, refs: Iterable[bytes], expected_items: int) -> BloomFilter:
        """A filter holding every reference in ``refs``."""
        result = cls(expected_items)
        for ref in refs:
            result.add(ref)
        return result

    def _positions(self, ref: bytes) -> tuple[int, ...]:
        # 32 bits of the reference per position: 7 * 32 = 224 of its 256 bits.
        value, mask = int.from_bytes(ref, "little"), self._mask
        return tuple((value >> shift) & mask for shift in _SHIFTS)

    def add(self, ref: bytes) -> None:
        """Add one reference."""
        array = self._array
        for position in self._positions(ref):
            array[position >> 3] |= 1 << (position & 7)
        self.items += 1

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, bytes) or len(ref) != 32:
            return False
        # The hot path of screening: inlined, stops at the first clear bit.
        array, mask, value = self._array, self._mask, int.from_bytes(ref, "little")
        for shift in _SHIFTS:
            position = (value >> shift) & mask
            if not array[position >> 3] & (1 << (position & 7)):
                return False
        return True

    @property
    def size_bytes(self) -> int:
        """Memory held by the bit array."""
        return len(self._array)
