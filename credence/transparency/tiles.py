"""C2SP tlog-tiles: tile paths, entry bundles, the tiles of a tree.

The log's Merkle tree is served as static files (c2sp.org/tlog-tiles). A
tile at level ``L`` and index ``N`` holds the hashes at tree level ``8 * L``
with indexes ``N * 256`` to ``N * 256 + W - 1``, concatenated (32 bytes each):
level 0 holds the leaf hashes. A full tile has ``W = 256`` hashes and never
changes; the right edge of a level is a partial tile of width ``W < 256``,
named ``.p/<W>``. The entry bundle ``tile/entries/<N>`` holds the data of
leaves ``N * 256 ...``, each prefixed by its 2-byte big-endian length; in
Credence the data of a leaf is its entry commitment (32 bytes).

``N`` is written in 3-digit groups, every group but the last prefixed by
``x``: 1234067 is ``x001/x234/067``.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from credence.errors import InvalidInput, MessageTooLarge

__all__ = [
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileRef",
    "decode_entry_bundle",
    "encode_entry_bundle",
    "entries_path",
    "parse_tile_path",
    "tile_path",
    "tiles_for_size",
]

#: Levels of the Merkle tree per tile level.
TILE_HEIGHT = 8
#: Hashes (or entries) in a full tile.
TILE_WIDTH = 2**TILE_HEIGHT
#: The highest tile level tlog-tiles allows.
MAX_TILE_LEVEL = 63
#: The largest entry an entry bundle can hold (its 2-byte length prefix).
_MAX_ENTRY = 0xFFFF

_PATH = re.compile(
    r"tile/(?:(?P<entries>entries)|(?P<level>0|[1-9][0-9]?))"
    r"/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


@dataclass(frozen=True)
class TileRef:
    """A tile (or, with ``entries``, an entry bundle) and its width.

    ``level`` is 0 for an entry bundle: it lists the data of level-0 leaves.
    """

    level: int
    index: int
    width: int
    entries: bool = False

    @property
    def path(self) -> str:
        """The tile's path under the log's URL prefix."""
        if self.entries:
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)


def _index_path(index: int) -> str:
    if index < 0:
        raise InvalidInput(f"tile index {index} is negative")
    digits = str(index)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{group}" for group in groups[:-1]), groups[-1]])


def _width_suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise InvalidInput(f"tile width {width} is outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """The path of hash tile ``level``/``index``: ``tile/0/x001/234[.p/17]``.

    Raises:
        InvalidInput: the level is outside 0..63, the index negative or the
            width outside 1..256.
    """
    if not 0 <= level <= MAX_TILE_LEVEL:
        raise InvalidInput(f"tile level {level} is outside 0..{MAX_TILE_LEVEL}")
    return f"tile/{level}/{_index_path(index)}{_width_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """The path of entry bundle ``index``: ``tile/entries/x001/234[.p/17]``.

    Raises:
        InvalidInput: the index is negative or the width outside 1..256.
    """
    return f"tile/entries/{_index_path(index)}{_width_suffix(width)}"


def parse_tile_path(path: str) -> TileRef:
    """Read a tile or entry bundle path (without a leading slash).

    Raises:
        InvalidInput: anything but the canonical spelling: a level outside
            0..63 or with a leading zero, an index group not of 3 digits or a
            leading ``x000`` group, a width outside 1..255 or with a leading zero.
    """
    match = _PATH.fullmatch(path) if len(path) <= 128 else None
    if match is None:
        raise InvalidInput(
            f"{path[:80]!r} is not a tile path: tile/<level>/<N> or tile/entries/<N>, "
            "N in 3-digit groups with 'x' on all but the last, optionally .p/<width 1..255>"
        )
    index_text = match["index"].replace("x", "").replace("/", "")
    if len(index_text) > 3 and index_text.startswith("000"):
        raise InvalidInput(f"{path[:80]!r} has a leading x000 group in its tile index")
    level = 0 if match["entries"] else int(match["level"])
    if level > MAX_TILE_LEVEL:
        raise InvalidInput(f"tile level {level} is outside 0..{MAX_TILE_LEVEL}")
    width = int(match["width"]) if match["width"] else TILE_WIDTH
    if match["width"] and width >= TILE_WIDTH:
        raise InvalidInput(f"partial tile width {width} is outside 1..{TILE_WIDTH - 1}")
    return TileRef(level=level, index=int(index_text), width=width, entries=bool(match["entries"]))


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry prefixed by its 2-byte big-endian length.

    Raises:
        InvalidInput: no entries, more than 256, or an entry over 65535 bytes.
    """
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise InvalidInput(f"an entry bundle holds 1..{TILE_WIDTH} entries, got {len(entries)}")
    out = bytearray()
    for entry in entries:
        if len(entry) > _MAX_ENTRY:
            raise InvalidInput(f"an entry is at most {_MAX_ENTRY} bytes, got {len(entry)}")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_entry_bundle(data: bytes) -> list[bytes]:
    """The entries of an entry bundle.

    Raises:
        InvalidInput: empty, or a length prefix or entry cut short.
        MessageTooLarge: more than 256 entries.
    """
    if not data:
        raise InvalidInput("an entry bundle holds at least one entry")
    entries: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(entries) == TILE_WIDTH:
            raise MessageTooLarge(f"an entry bundle holds at most {TILE_WIDTH} entries")
        if offset + 2 > len(data):
            raise InvalidInput(f"entry bundle ends inside the length of entry {len(entries)}")
        size = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + size > len(data):
            raise InvalidInput(
                f"entry {len(entries)} of the bundle claims {size} bytes, "
                f"only {len(data) - offset} remain"
            )
        entries.append(data[offset : offset + size])
        offset += size
    return entries


def tiles_for_size(size: int) -> list[TileRef]:
    """The hash tiles of a tree of ``size`` leaves, level by level, left to right.

    At level ``L`` the tree has ``size >> (8 * L)`` complete hashes: that many
    // 256 full tiles, then a partial tile for the rest. Entry bundles match
    the level-0 tiles (same index and width).

    Raises:
        InvalidInput: the size is negative.
    """
    if size < 0:
        raise InvalidInput(f"tree size {size} is negative")
    refs: list[TileRef] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        count = size >> (TILE_HEIGHT * level)
        full, rest = divmod(count, TILE_WIDTH)
        refs.extend(TileRef(level=level, index=n, width=TILE_WIDTH) for n in range(full))
        if rest:
            refs.append(TileRef(level=level, index=full, width=rest))
        level += 1
    return refs
