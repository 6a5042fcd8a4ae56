"""C2SP tlog-tiles paths, entry bundles and the tiles of a tree."""

from __future__ import annotations

import pytest

from credence.errors import InvalidInput, MessageTooLarge
from credence.transparency import tiles
from credence.transparency.tiles import TileRef


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, 256, "tile/0/000"),
        (0, 1234067, 256, "tile/0/x001/x234/067"),  # the spec's example
        (1, 1234067, 17, "tile/1/x001/x234/067.p/17"),  # Go's tlog.Tile.Path, without H
        (2, 999, 1, "tile/2/999.p/1"),
        (3, 1000, 255, "tile/3/x001/000.p/255"),
        (63, 5, 256, "tile/63/005"),
    ],
)
def test_tile_paths_round_trip(level: int, index: int, width: int, path: str) -> None:
    assert tiles.tile_path(level, index, width) == path
    assert tiles.parse_tile_path(path) == TileRef(level, index, width)
    assert TileRef(level, index, width).path == path


def test_entry_bundle_paths_round_trip() -> None:
    assert tiles.entries_path(1234067) == "tile/entries/x001/x234/067"
    assert tiles.entries_path(0, 3) == "tile/entries/000.p/3"
    ref = tiles.parse_tile_path("tile/entries/x001/x234/067.p/9")
    assert ref == TileRef(level=0, index=1234067, width=9, entries=True)
    assert ref.path == "tile/entries/x001/x234/067.p/9"


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tile/0/0",  # not 3 digits
        "tile/0/1234",
        "tile/0/001/234",  # missing x
        "tile/0/x001/x234",  # x on the last group
        "tile/0/x000/001",  # leading zero group
        "tile/00/000",  # level with a leading zero
        "tile/64/000",  # level beyond 63
        "tile/-1/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/017",
        "tile/0/000.p/",
        "tile/data/000",  # Go's sumdb spelling, not tlog-tiles
        "tile/8/0/000/extra",
        "tile/0/000\n",
        "tile/entries/000.p/300",
        "tile/0/" + "x001/" * 60 + "001",  # absurdly long
    ],
)
def test_parse_tile_path_refuses_malformed(path: str) -> None:
    with pytest.raises(InvalidInput):
        tiles.parse_tile_path(path)


@pytest.mark.parametrize(
    ("level", "index", "width"), [(64, 0, 256), (-1, 0, 256), (0, -1, 256), (0, 0, 0), (0, 0, 257)]
)
def test_tile_path_refuses_out_of_range(level: int, index: int, width: int) -> None:
    with pytest.raises(InvalidInput):
        tiles.tile_path(level, index, width)
    if level == 0:
        with pytest.raises(InvalidInput):
            tiles.entries_path(index, width)


def test_entry_bundle_known_answer_and_round_trip() -> None:
    entries = [b"", b"a", bytes(32), b"\xff" * 300]
    data = tiles.encode_entry_bundle(entries)
    assert data[:5] == b"\x00\x00\x00\x01a"
    assert data[5:7] == b"\x00\x20"
    assert data[39:41] == b"\x01\x2c"
    assert len(data) == 2 * 4 + 1 + 32 + 300
    assert tiles.decode_entry_bundle(data) == entries


def test_entry_bundle_refuses_truncation_and_bounds() -> None:
    data = tiles.encode_entry_bundle([bytes(32), bytes(32)])
    with pytest.raises(InvalidInput, match="claims 32 bytes"):
        tiles.decode_entry_bundle(data[:-1])
    with pytest.raises(InvalidInput, match="inside the length"):
        tiles.decode_entry_bundle(data + b"\x00")
    with pytest.raises(InvalidInput):
        tiles.decode_entry_bundle(b"")
    with pytest.raises(MessageTooLarge):
        tiles.decode_entry_bundle(b"\x00\x00" * 257)
    assert len(tiles.decode_entry_bundle(b"\x00\x00" * 256)) == 256
    with pytest.raises(InvalidInput):
        tiles.encode_entry_bundle([])
    with pytest.raises(InvalidInput):
        tiles.encode_entry_bundle([b""] * 257)
    with pytest.raises(InvalidInput):
        tiles.encode_entry_bundle([bytes(65536)])


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, []),
        (1, [TileRef(0, 0, 1)]),
        (256, [TileRef(0, 0, 256), TileRef(1, 0, 1)]),
        (300, [TileRef(0, 0, 256), TileRef(0, 1, 44), TileRef(1, 0, 1)]),
        (
            65536 + 513,
            [
                *(TileRef(0, n, 256) for n in range(258)),
                TileRef(0, 258, 1),
                TileRef(1, 0, 256),
                TileRef(1, 1, 2),
                TileRef(2, 0, 1),
            ],
        ),
    ],
)
def test_tiles_for_size(size: int, expected: list[TileRef]) -> None:
    assert tiles.tiles_for_size(size) == expected


def test_tiles_for_size_refuses_negative() -> None:
    with pytest.raises(InvalidInput):
        tiles.tiles_for_size(-1)
