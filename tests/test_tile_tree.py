"""A checkpoint's tree read from tiles: roots, proofs and entries checked, tampering refused.

Tiles are built from a tree of known leaves (:mod:`credence.transparency.merkle`
gives the expected roots and proofs); the fetchers count reads.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from credence.errors import ClaimMismatch, InvalidInput, NotFound
from credence.transparency import merkle
from credence.transparency.tile_tree import TileTree, edge_tiles
from credence.transparency.tiles import TILE_WIDTH, encode_entry_bundle, tiles_for_size


class Log:
    """A tree of ``size`` leaves, its tiles and entry bundles, and a count of reads."""

    def __init__(self, size: int) -> None:
        self.entries = [hashlib.sha256(b"entry %d" % number).digest() for number in range(size)]
        self.store = merkle.MemorySubtrees()
        for number, entry in enumerate(self.entries):
            merkle.append(self.store, number, merkle.leaf_hash(entry))
        self.size = size
        self.root = merkle.root(self.store, size)
        self.tiles = {
            (ref.level, ref.index, ref.width): self.tile(ref.level, ref.index, ref.width)
            for ref in tiles_for_size(size)
        }
        self.reads: list[tuple[int, int, int]] = []

    def tile(self, level: int, index: int, width: int) -> bytes:
        return b"".join(self.store.get(8 * level, index * TILE_WIDTH + i) for i in range(width))

    def fetch_tile(self, level: int, index: int, width: int) -> bytes:
        self.reads.append((level, index, width))
        # Partial tiles of smaller trees than this log's are built on demand.
        return self.tiles.get((level, index, width)) or self.tile(level, index, width)

    def fetch_entries(self, index: int, width: int) -> bytes:
        self.reads.append((-1, index, width))
        return encode_entry_bundle(self.entries[index * TILE_WIDTH : index * TILE_WIDTH + width])

    def tree(self, size: int | None = None) -> TileTree:
        size = self.size if size is None else size
        root = merkle.root(self.store, size)
        return TileTree(size, root, self.fetch_tile, self.fetch_entries)


SIZES = [1, 2, 3, 255, 256, 257, 511, 512, 513, 1000, 65_535, 65_536, 65_537, 70_000]


@pytest.fixture(scope="module")
def big() -> Log:
    return Log(70_000)


@pytest.mark.parametrize("size", SIZES)
def test_proofs_from_tiles_equal_the_tree_s_own(big: Log, size: int) -> None:
    tree = big.tree(size)
    rng = random.Random(size)
    for index in {0, size - 1, *(rng.randrange(size) for _ in range(5))}:
        assert tree.leaf_hash(index) == merkle.leaf_hash(big.entries[index])
        path = tree.inclusion_proof(index)
        assert path == merkle.inclusion_proof(big.store, index, size)
        merkle.verify_inclusion(
            merkle.leaf_hash(big.entries[index]), index, size, path, tree.root_hash
        )
    for old in {0, 1, size // 3, size - 1, size}:
        proof = tree.consistency_proof(old)
        assert proof == merkle.consistency_proof(big.store, old, size)
        assert tree.root_at(old) == merkle.root(big.store, old)


def test_the_empty_tree_needs_no_tile() -> None:
    log = Log(0)
    tree = TileTree(0, merkle.EMPTY_ROOT, log.fetch_tile, log.fetch_entries)
    assert tree.consistency_proof(0) == []
    assert log.reads == []
    with pytest.raises(ClaimMismatch, match="not the checkpoint's root"):
        TileTree(0, b"\x01" * 32, log.fetch_tile).root_at(0)


def test_edge_tiles_are_the_partial_tile_of_each_level() -> None:
    assert edge_tiles(256) == [(1, 0, 1)]
    assert edge_tiles(70_000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert edge_tiles(0) == []


def test_each_tile_is_read_once_and_entries_stand_in_for_level_0(big: Log) -> None:
    big.reads.clear()
    tree = big.tree()
    for index in range(0, 70_000, 97):
        tree.inclusion_proof(index)
    assert len(big.reads) == len(set(big.reads))
    big.reads.clear()
    tree = big.tree()
    for bundle in range(70_000 // TILE_WIDTH + 1):
        assert tree.entries(bundle) == big.entries[bundle * TILE_WIDTH : (bundle + 1) * TILE_WIDTH]
    # Every bundle once, the edge tiles, and the level-1 tiles above full bundles: no level-0 tile.
    assert sorted(read for read in big.reads if read[0] == 0) == [(0, 273, 112)]
    assert len(big.reads) == len(set(big.reads))
    tree.inclusion_proof(5)
    assert len(big.reads) == len(set(big.reads))


def _tampered(log: Log, key: tuple[int, int, int], at: int = 0) -> Log:
    tampered = Log.__new__(Log)
    tampered.__dict__.update(log.__dict__)
    tampered.tiles = dict(log.tiles)
    data = bytearray(tampered.tiles[key])
    data[at] ^= 1
    tampered.tiles[key] = bytes(data)
    tampered.reads = []
    return tampered


def test_a_full_tile_that_does_not_hash_to_the_root_is_refused(big: Log) -> None:
    # The attacker serves a level-0 tile with one leaf hash changed (to hide or swap an entry).
    tampered = _tampered(big, (0, 3, 256), at=32 * 7)
    tree = tampered.tree()
    with pytest.raises(ClaimMismatch, match=r"tile 0/3 hashes to .* not .* of tile 1/0"):
        tree.inclusion_proof(3 * 256 + 7)
    with pytest.raises(ClaimMismatch, match="tile 0/3"):
        tree.leaf_hash(3 * 256)
    # Nothing else was taken from it: proofs elsewhere still verify, and the tile was not kept.
    assert tree.inclusion_proof(5) == merkle.inclusion_proof(big.store, 5, big.size)
    # The refused tile was not kept: asking again reads it again (and refuses it again).
    with pytest.raises(ClaimMismatch, match="tile 0/3"):
        tree.leaf_hash(3 * 256 + 1)
    assert tampered.reads.count((0, 3, 256)) == 3


def test_a_tampered_upper_tile_or_edge_tile_is_refused(big: Log) -> None:
    # A level-1 full tile changed consistently with a forged level-0 tile below it
    # still has to hash to the level-2 edge tile, which the root covers.
    tampered = _tampered(big, (1, 0, 256), at=0)
    with pytest.raises(ClaimMismatch, match="tile 1/0 hashes to"):
        tampered.tree().leaf_hash(0)
    edge = _tampered(big, (0, 273, 112), at=5)
    with pytest.raises(ClaimMismatch, match=r"right-edge tiles \(0/273.p/112, 1/1.p/17, 2/0.p/1\)"):
        edge.tree().leaf_hash(0)


def test_a_tampered_or_short_entry_bundle_is_refused(big: Log) -> None:
    tree = big.tree()
    swapped = list(big.entries[:256])
    swapped[10] = hashlib.sha256(b"someone else").digest()
    with pytest.raises(ClaimMismatch, match="entry bundle 0 hashes to"):
        TileTree(
            big.size, big.root, big.fetch_tile, lambda i, w: encode_entry_bundle(swapped)
        ).entries(0)
    edge = list(big.entries[273 * 256 :])
    edge[3] = b"\x00" * 32
    with pytest.raises(ClaimMismatch, match=r"entry 69891 does not hash"):
        TileTree(
            big.size, big.root, big.fetch_tile, lambda i, w: encode_entry_bundle(edge)
        ).entries(273)
    with pytest.raises(ClaimMismatch, match="holds 111 entries, not 112"):
        TileTree(
            big.size, big.root, big.fetch_tile, lambda i, w: encode_entry_bundle(edge[:-1])
        ).entries(273)
    with pytest.raises(NotFound, match="no entry bundle 274"):
        tree.entries(274)


def test_a_tile_of_the_wrong_length_or_a_subtree_beyond_the_tree_is_refused(big: Log) -> None:
    short = Log.__new__(Log)
    short.__dict__.update(big.__dict__)
    short.tiles = dict(big.tiles)
    short.tiles[0, 0, 256] = short.tiles[0, 0, 256][:-1]
    with pytest.raises(
        InvalidInput, match=r"tile 0/0 must hold 256 hashes \(8192 bytes\), got 8191"
    ):
        short.tree().leaf_hash(0)
    with pytest.raises(NotFound, match="no complete subtree"):
        big.tree(1000).get(0, 1000)
    with pytest.raises(InvalidInput, match="read-only"):
        big.tree().put(0, 0, b"")


def test_a_tree_of_another_size_does_not_verify_with_this_root(big: Log) -> None:
    # The tiles of 1,000 entries against the root of 999: refused before any use.
    tree = TileTree(1000, merkle.root(big.store, 999), big.fetch_tile)
    with pytest.raises(ClaimMismatch, match="right-edge tiles"):
        tree.inclusion_proof(0)


def test_find_locates_entries_reading_bundles_only_as_far_as_needed(big: Log) -> None:
    big.reads.clear()
    tree = big.tree(1_000)
    wanted = [big.entries[3], big.entries[600], hashlib.sha256(b"never logged").digest()]
    seen: list[int] = []
    assert tree.find(wanted, progress=seen.append) == {big.entries[3]: 3, big.entries[600]: 600}
    assert seen == [1, 1, 2, 2]
    # All found: the rest is not read.
    big.reads.clear()
    assert tree.find([big.entries[10]]) == {big.entries[10]: 10}
    assert [read for read in big.reads if read[0] == -1] == [(-1, 0, 256)]
    # Entries beyond the tree's size are not in it, even if the log has them since.
    assert big.tree(500).find([big.entries[600]]) == {}


def test_a_bundle_whose_lengths_shift_an_entry_is_read_as_written_and_refused(big: Log) -> None:
    # Same total length as 256 commitments, but entry 0 is 31 bytes and entry 1 is 33:
    # read by its length prefixes (not by position), it is not the log's bundle.
    entries = list(big.entries[:256])
    shifted = [entries[0][:31], entries[0][31:] + entries[1], *entries[2:]]
    data = encode_entry_bundle(shifted)
    assert len(data) == 256 * 34
    tree = TileTree(big.size, big.root, big.fetch_tile, lambda index, width: data)
    with pytest.raises(ClaimMismatch, match="entry bundle 0 hashes to"):
        tree.entries(0)
