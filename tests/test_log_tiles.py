"""The log as C2SP tiles: read from the SQL store, served over HTTPS, read back.

A log of 600 entries has two full level-0 tiles, a partial one of 88 hashes,
and a partial level-1 tile of 2. Every tile is checked against hashes
computed here from the entry commitments alone (RFC 9162 written out), on
SQLite and PostgreSQL; then the HTTP side serves them as tlog-tiles says, and
refuses malformed paths and tiles beyond the tree.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from support.log_server import new_promises

from central_registry.database import create_engine_for, upgrade_schema
from central_registry.http_side import HttpSide
from central_registry.log.entries import append_entries, erase_expired
from central_registry.tiles import LogFiles, read_tile
from credence.dev.offline_federation import Federation
from credence.errors import NotFound
from credence.keys import KeySet, SigningKey
from credence.storage import session_factory
from credence.transparency.checkpoint import open_checkpoint
from credence.transparency.tiles import TileRef, decode_entry_bundle, tiles_for_size

SIZE = 600
ORIGIN = "credence/tiles-test/log"
NOW = datetime.now(UTC)


def _leaf(commitment: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + commitment).digest()


def _subtree(hashes: list[bytes]) -> bytes:
    # A complete subtree (power-of-two leaves), pairwise up.
    while len(hashes) > 1:
        hashes = [
            hashlib.sha256(b"\x01" + hashes[i] + hashes[i + 1]).digest()
            for i in range(0, len(hashes), 2)
        ]
    return hashes[0]


@pytest.fixture
def filled(database_url: str) -> Iterator[tuple[Engine, list[bytes]]]:
    engine = create_engine_for(database_url)
    upgrade_schema(engine)
    rows = [row for _, row in new_promises(SIZE, NOW - timedelta(days=400))]
    with session_factory(engine).begin() as session:
        append_entries(session, rows)
    yield engine, [row.commitment for row in rows]
    engine.dispose()


def test_tiles_hold_the_trees_hashes_and_bundles_its_commitments(
    filled: tuple[Engine, list[bytes]],
) -> None:
    engine, commitments = filled
    leaves = [_leaf(c) for c in commitments]
    with session_factory(engine)() as session:
        tiles = {ref: read_tile(session, ref) for ref in tiles_for_size(SIZE)}
        bundles = [read_tile(session, TileRef(0, n, w, entries=True)) for n, w in
                   [(0, 256), (1, 256), (2, 88)]]  # fmt: skip
    assert list(tiles) == [TileRef(0, 0, 256), TileRef(0, 1, 256), TileRef(0, 2, 88),
                           TileRef(1, 0, 2)]  # fmt: skip
    assert b"".join(tiles[TileRef(0, n, w)] for n, w in [(0, 256), (1, 256), (2, 88)]) == b"".join(
        leaves
    )
    # Level 1 holds the roots of each full 256-leaf subtree.
    assert tiles[TileRef(1, 0, 2)] == _subtree(leaves[:256]) + _subtree(leaves[256:512])
    assert [e for bundle in bundles for e in decode_entry_bundle(bundle)] == commitments


def test_a_narrower_partial_tile_is_a_prefix_and_anything_wider_is_not_found(
    filled: tuple[Engine, list[bytes]],
) -> None:
    engine, commitments = filled
    with session_factory(engine)() as session:
        assert read_tile(session, TileRef(0, 2, 10)) == b"".join(
            _leaf(c) for c in commitments[512:522]
        )
        for beyond in [
            TileRef(0, 2, 256),  # the right edge is not full yet
            TileRef(0, 2, 89),
            TileRef(0, 3, 1),
            TileRef(1, 0, 3),
            TileRef(1, 0, 256),
            TileRef(2, 0, 1),
            TileRef(0, 2, 89, entries=True),
            TileRef(0, 3, 1, entries=True),
        ]:
            with pytest.raises(NotFound, match="beyond the log's tree"):
                read_tile(session, beyond)


def test_erasing_expired_entries_changes_no_tile(filled: tuple[Engine, list[bytes]]) -> None:
    engine, _ = filled
    sessions = session_factory(engine)
    refs = [*tiles_for_size(SIZE), TileRef(0, 0, 256, entries=True), TileRef(0, 2, 88, True)]
    with sessions() as session:
        before = [read_tile(session, ref) for ref in refs]
    with sessions.begin() as session:
        assert erase_expired(session, NOW) == SIZE
    with sessions() as session:
        assert [read_tile(session, ref) for ref in refs] == before


# --- over HTTPS --------------------------------------------------------------


def _get(port: int, ca_pem: bytes, path: str) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def served(
    filled: tuple[Engine, list[bytes]], tmp_path: Path
) -> Iterator[tuple[int, bytes, SigningKey]]:
    engine, _ = filled
    federation = Federation.create()
    registry = federation.members["registry"]
    cert, key = tmp_path / "http.crt", tmp_path / "http.key"
    cert.write_bytes(registry.cert_pem)
    key.write_bytes(registry.tls_key_pem)
    log_key = SigningKey.generate()
    files = LogFiles(engine, log_key=log_key, origin=ORIGIN, clock=lambda: datetime.now(UTC))
    envelope = federation.manifest_envelope(now=datetime.now(UTC))
    side = HttpSide(
        "127.0.0.1:0",
        tls_cert=cert,
        tls_key=key,
        manifest=lambda: envelope,
        jwks=lambda: KeySet([federation.registry_key.public]),
        checkpoint=files.checkpoint,
        tile=files.tile,
    )
    side.start()
    try:
        yield side.port, federation.ca.certificate_pem, log_key
    finally:
        side.stop()


def test_the_http_side_serves_checkpoint_tiles_and_bundles(
    served: tuple[int, bytes, SigningKey], filled: tuple[Engine, list[bytes]]
) -> None:
    port, ca_pem, log_key = served
    _, commitments = filled
    status, headers, body = _get(port, ca_pem, "/checkpoint")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    checkpoint, _ = open_checkpoint(body, ORIGIN, log_key.public.raw())
    assert checkpoint.size == SIZE

    status, headers, body = _get(port, ca_pem, "/tile/0/001")
    assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert body == b"".join(_leaf(c) for c in commitments[256:512])
    # Served again from the cache, unchanged.
    assert _get(port, ca_pem, "/tile/0/001")[2] == body

    status, headers, body = _get(port, ca_pem, "/tile/entries/002.p/88")
    assert (status, headers["Cache-Control"]) == (200, "no-cache")
    assert decode_entry_bundle(body) == commitments[512:]
    status, headers, body = _get(port, ca_pem, "/tile/1/000.p/2")
    assert (status, headers["Cache-Control"], len(body)) == (200, "no-cache", 64)


BAD_AND_MISSING = [
    ("/tile/0/002", 404),  # the right edge is partial
    ("/tile/0/003.p/1", 404),
    ("/tile/entries/x001/000", 404),
    ("/tile/0/2", 400),
    ("/tile/0/000.p/256", 400),
    ("/tile/64/000", 400),
    ("/tile/0/x000/001", 400),
    ("/tile/0/../../manifest", 400),
    ("/tile/data/000", 400),
    ("/tiles/0/000", 404),
]


def test_the_http_side_refuses_bad_and_missing_tiles(served: tuple[int, bytes, SigningKey]) -> None:
    port, ca_pem, _ = served
    assert [(path, _get(port, ca_pem, path)[0]) for path, _ in BAD_AND_MISSING] == BAD_AND_MISSING


def test_a_reader_fetches_many_tiles_over_one_connection(
    served: tuple[int, bytes, SigningKey],
) -> None:
    port, ca_pem, _ = served
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        sockets, statuses = [], []
        for path in ["/checkpoint", "/tile/0/000", "/tile/entries/001", "/tile/1/000.p/2"]:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            statuses.append((response.version, response.status))
            sockets.append(connection.sock)
        assert statuses == [(11, 200)] * 4
        assert all(sock is sockets[0] for sock in sockets), "one TLS connection throughout"
    finally:
        connection.close()
