"""A checkpoint's Merkle tree read from C2SP tiles, every tile checked against its root.

Pure maths, no I/O: the tiles come from a ``fetch`` function the caller
injects (HTTP in :mod:`credence.transparency.tile_reader`, a dict in tests).

A tile at level ``L`` and index ``N`` holds the hashes of tree level ``8L``,
node indexes ``256N ... 256N + W - 1`` (``tlog-tiles``, height 8). For a tree of
``size`` leaves, the tile at the right edge of level ``L`` is partial, of width
``(size >> 8L) % 256`` (none when that is 0), and every other tile is full.
Every hash this module hands out is checked before it is used:

- the right-edge tiles of every level together hash to the checkpoint's root
  (each of their hashes lies under one of the tree's complete peaks), so they
  are checked against the root at once, before anything else is read;
- a full tile's 256 hashes hash to one node of the level above, which is
  read (checked) from its own tile there; the chain ends in a right-edge tile.

x/mod's ``TileHashReader`` does not check every tile it returns against its
parent; this reader does, so a tampered tile is refused however it is used.
The tree implements :class:`credence.transparency.merkle.SubtreeStore`, so
RFC 9162 inclusion and consistency proofs come from :mod:`merkle`'s own code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence

from credence.errors import ClaimMismatch, InvalidInput, NotFound
from credence.transparency import merkle
from credence.transparency.merkle_batch import peaks
from credence.transparency.tiles import TILE_HEIGHT, TILE_WIDTH, decode_entry_bundle

__all__ = ["FetchEntries", "FetchTile", "FullTileVerdict", "Prefetch", "TileTree", "edge_tiles"]

#: ``fetch_tile(level, index, width)``: the tile's bytes, ``width`` hashes of 32 bytes.
FetchTile = Callable[[int, int, int], bytes]
#: ``fetch_entries(index, width)``: the entry bundle's bytes.
FetchEntries = Callable[[int, int], bytes]
#: ``prefetch(indexes)``: full entry bundles :meth:`TileTree.find` will read next (a hint).
Prefetch = Callable[[range], None]
#: ``verdict(level, index, entries, ok)``: a full tile (or, with ``entries``, a full
#: bundle) passed (``ok``) or failed its check; lets a cache keep only checked tiles.
FullTileVerdict = Callable[[int, int, bool, bool], None]

_sha256 = hashlib.sha256


def edge_tiles(size: int) -> list[tuple[int, int, int]]:
    """The ``(level, index, width)`` of the partial tile at each level's right edge."""
    edges = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        if count % TILE_WIDTH:
            edges.append((level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return edges


def _split_hashes(data: bytes, width: int, what: str) -> list[bytes]:
    if len(data) != width * merkle.HASH_SIZE:
        raise InvalidInput(
            f"{what} must hold {width} hashes ({width * merkle.HASH_SIZE} bytes), "
            f"got {len(data)} bytes"
        )
    return [data[at : at + merkle.HASH_SIZE] for at in range(0, len(data), merkle.HASH_SIZE)]


#: How many full bundles :meth:`TileTree.find` asks to have fetched ahead of the one it reads.
_PREFETCH_AHEAD = 8
#: A bundle of 32-byte entries (commitments): each behind the length prefix 0x0020.
_HASH_ENTRY = 2 + merkle.HASH_SIZE


def _decode_bundle(data: bytes, width: int) -> list[bytes]:
    """An entry bundle's entries; a bundle of 32-byte entries is sliced without a loop."""
    if (
        len(data) == width * _HASH_ENTRY
        and data[0::_HASH_ENTRY] == bytes(width)
        and data[1::_HASH_ENTRY] == bytes([merkle.HASH_SIZE]) * width
    ):
        return [data[at + 2 : at + _HASH_ENTRY] for at in range(0, len(data), _HASH_ENTRY)]
    return decode_entry_bundle(data)


def _mth(hashes: Sequence[bytes]) -> bytes:
    """MTH of a power-of-two row of hashes, bottom up."""
    row = list(hashes)
    while len(row) > 1:
        row = [_sha256(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row), 2)]
    return row[0]


class TileTree:
    """The tree a checkpoint signs, as far as its tiles show it; every tile checked.

    ``size`` and ``root_hash`` must come from a checkpoint whose signature the
    caller verified. Tiles are fetched lazily, each at most once per tree.
    """

    def __init__(
        self,
        size: int,
        root_hash: bytes,
        fetch_tile: FetchTile,
        fetch_entries: FetchEntries | None = None,
        verdict: FullTileVerdict | None = None,
        *,
        prefetch: Prefetch | None = None,
    ) -> None:
        if size < 0:
            raise InvalidInput(f"tree size must be >= 0, got {size}")
        if len(root_hash) != merkle.HASH_SIZE:
            raise InvalidInput(f"root hash must be {merkle.HASH_SIZE} bytes, got {len(root_hash)}")
        self.size = size
        self.root_hash = root_hash
        self._fetch_tile = fetch_tile
        self._fetch_entries = fetch_entries
        self._verdict = verdict
        self._prefetch = prefetch
        #: Checked tiles: (level, index) -> hashes.
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self._subtrees: dict[tuple[int, int], bytes] = {}
        self._edges_checked = False

    # --- reading checked hashes -------------------------------------------------

    def check_root(self) -> None:
        """Read the right-edge tiles of every level and check they give the root.

        Every other read does this first; call it to check a checkpoint's
        tiles before anything else.

        Raises:
            ClaimMismatch: the edge tiles do not hash to the checkpoint's root.
            InvalidInput: a tile has the wrong length.
        """
        self._check_edges()

    def _check_edges(self) -> None:
        if self._edges_checked:
            return
        edges = edge_tiles(self.size)
        fetched: dict[tuple[int, int], list[bytes]] = {}
        for level, index, width in edges:
            data = self._fetch_tile(level, index, width)
            fetched[level, index] = _split_hashes(data, width, f"tile {level}/{index}.p/{width}")
        # The tree's peaks, computed from the edge tiles alone, must give the root.
        blocks: list[bytes] = []
        for level, start in peaks(self.size):
            tile_level, within = divmod(level, TILE_HEIGHT)
            first = start >> (TILE_HEIGHT * tile_level)
            hashes = fetched[tile_level, first // TILE_WIDTH]
            offset = first % TILE_WIDTH
            blocks.append(_mth(hashes[offset : offset + (1 << within)]))
        if blocks:
            computed = blocks.pop()
            while blocks:
                computed = merkle.node_hash(blocks.pop(), computed)
        else:
            computed = merkle.EMPTY_ROOT
        if computed != self.root_hash:
            names = ", ".join(f"{lvl}/{idx}.p/{wid}" for lvl, idx, wid in edges)
            raise ClaimMismatch(
                f"the right-edge tiles ({names}) hash to {computed.hex()}, not the "
                f"checkpoint's root {self.root_hash.hex()} for {self.size} entries: "
                "the tiles were tampered with or belong to another tree"
            )
        self._tiles.update(fetched)
        self._edges_checked = True

    def _tile(self, level: int, index: int) -> list[bytes]:
        """The checked hashes of tile ``(level, index)``: full, or the right edge."""
        self._check_edges()
        known = self._tiles.get((level, index))
        if known is not None:
            return known
        count = self.size >> (TILE_HEIGHT * level)
        if index >= count // TILE_WIDTH:
            raise NotFound(f"the tree of {self.size} entries has no tile {level}/{index}")
        hashes = _split_hashes(
            self._fetch_tile(level, index, TILE_WIDTH), TILE_WIDTH, f"tile {level}/{index}"
        )
        self._check_full(level, index, hashes, f"tile {level}/{index}", entries=False)
        self._tiles[level, index] = hashes
        return hashes

    def _check_full(
        self, level: int, index: int, hashes: Sequence[bytes], what: str, *, entries: bool
    ) -> None:
        parent = self._tile(level + 1, index // TILE_WIDTH)[index % TILE_WIDTH]
        computed = _mth(hashes)
        if self._verdict is not None:
            self._verdict(level, index, entries, computed == parent)
        if computed != parent:
            raise ClaimMismatch(
                f"{what} hashes to {computed.hex()}, not {parent.hex()} of tile "
                f"{level + 1}/{index // TILE_WIDTH}, which the checkpoint's root covers: "
                "the tile was tampered with"
            )

    def get(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree at ``(level, index)``, from checked tiles.

        Raises:
            NotFound: the tree has no such complete subtree.
            ClaimMismatch: a tile it needs does not hash to the checkpoint's root.
            InvalidInput: a tile has the wrong length.
        """
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise NotFound(
                f"no complete subtree at level {level} index {index} in a tree of "
                f"{self.size} entries"
            )
        key = (level, index)
        cached = self._subtrees.get(key)
        if cached is not None:
            return cached
        tile_level, within = divmod(level, TILE_HEIGHT)
        first = index << within
        hashes = self._tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        value = _mth(hashes[offset : offset + (1 << within)])
        if within:
            self._subtrees[key] = value
        return value

    def put(self, level: int, index: int, hash_: bytes) -> None:
        """Refused: a tree read from tiles is read-only.

        Raises:
            InvalidInput: always.
        """
        raise InvalidInput(f"a tree read from tiles is read-only (put {level}/{index} {hash_!r})")

    # --- what callers use ---------------------------------------------------------

    def leaf_hash(self, index: int) -> bytes:
        """The checked leaf hash at ``index``.

        Raises:
            NotFound: ``index`` is not below the tree size.
            ClaimMismatch: a tile does not hash to the checkpoint's root.
        """
        return self.get(0, index)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The RFC 9162 inclusion path of leaf ``index``, from checked tiles.

        Raises:
            InvalidInput: ``index`` is not in ``[0, size)``.
            ClaimMismatch: a tile does not hash to the checkpoint's root.
        """
        return merkle.inclusion_proof(self, index, self.size)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``old_size`` to this one.

        Raises:
            InvalidInput: not ``0 <= old_size <= size``.
            ClaimMismatch: a tile does not hash to the checkpoint's root.
        """
        return merkle.consistency_proof(self, old_size, self.size)

    def root_at(self, old_size: int) -> bytes:
        """The root of this tree's first ``old_size`` leaves, from checked tiles.

        Raises:
            InvalidInput: ``old_size`` is negative.
            NotFound: ``old_size`` exceeds the tree size.
        """
        if old_size > self.size:
            raise NotFound(f"the tree of {self.size} entries has no prefix of {old_size}")
        self._check_edges()
        return merkle.root(self, old_size)

    def entries(self, index: int) -> list[bytes]:
        """Entry bundle ``index`` (up to 256 leaves' data), checked against the tree.

        Each entry's leaf hash ``SHA-256(0x00 || entry)`` must be the checked
        leaf hash at its position: a bundle that does not match is refused.

        Raises:
            NotFound: the tree has no such bundle, or no entry fetcher was given.
            ClaimMismatch: the bundle does not match the checked leaves.
            InvalidInput: the bundle is malformed.
        """
        if self._fetch_entries is None:
            raise NotFound("this tree was opened without a way to read entry bundles")
        full, width = divmod(self.size, TILE_WIDTH)
        if index < full:
            width = TILE_WIDTH
        elif index > full or width == 0:
            raise NotFound(f"the tree of {self.size} entries has no entry bundle {index}")
        what = f"entry bundle {index}" + ("" if width == TILE_WIDTH else f".p/{width}")
        entries = _decode_bundle(self._fetch_entries(index, width), width)
        if len(entries) != width:
            raise ClaimMismatch(f"{what} holds {len(entries)} entries, not {width}")
        leaves = [_sha256(b"\x00" + entry).digest() for entry in entries]
        known = self._tiles.get((0, index))
        if known is None and width == TILE_WIDTH:
            # A full bundle is checked like the level-0 tile it stands for, which
            # then serves the leaves' proofs without another read.
            self._check_full(0, index, leaves, what, entries=True)
            self._tiles[0, index] = leaves
            return entries
        if known is None:
            known = self._tile(0, index)
        if width == TILE_WIDTH and self._verdict is not None:
            self._verdict(0, index, True, leaves == known)
        if leaves != known:
            position = next(
                at for at, (a, b) in enumerate(zip(leaves, known, strict=True)) if a != b
            )
            raise ClaimMismatch(
                f"{what}: entry {index * TILE_WIDTH + position} does not hash to the "
                "checked leaf at its position: the bundle was tampered with"
            )
        return entries

    def find(
        self, wanted: Collection[bytes], *, progress: Callable[[int], None] | None = None
    ) -> dict[bytes, int]:
        """The leaf index of each entry of ``wanted`` the tree holds, from checked bundles.

        Reads the entry bundles left to right, each once, and stops as soon as
        every wanted entry is found; an entry missing from the result is not
        in the tree. ``progress(found)`` is called after each bundle.

        Raises:
            NotFound: no entry fetcher was given.
            ClaimMismatch: a bundle or tile does not hash to the checkpoint's root.
            InvalidInput: a bundle or tile is malformed.
        """
        remaining = set(wanted)
        found: dict[bytes, int] = {}
        full = self.size // TILE_WIDTH
        for bundle in range(-(-self.size // TILE_WIDTH)):
            if not remaining:
                break
            if self._prefetch is not None:
                self._prefetch(range(bundle + 1, min(bundle + 1 + _PREFETCH_AHEAD, full)))
            base = bundle * TILE_WIDTH
            for offset, entry in enumerate(self.entries(bundle)):
                if entry in remaining:
                    remaining.discard(entry)
                    found[entry] = base + offset
            if progress is not None:
                progress(len(found))
        return found

    @property
    def tiles_read(self) -> int:
        """How many hash tiles this tree has read and checked."""
        return len(self._tiles)
