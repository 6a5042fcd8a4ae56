"""Reading tiles over HTTPS: pinned CA, each tile once, full tiles cached, tampering refused.

A small HTTPS server on a loopback port serves the tiles of a known tree
(the registry's own certificate from the federation CA); the attacker's
side doctors what it serves, or what the cache on disk holds.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from credence.dev.offline_federation import Federation
from credence.errors import ClaimMismatch, InvalidInput, NotFound, Unavailable
from credence.pki import create_ca
from credence.transparency import merkle
from credence.transparency.tile_reader import TileReader
from credence.transparency.tiles import TILE_WIDTH, encode_entry_bundle, tiles_for_size

SIZE = 1_300
ENTRIES = [hashlib.sha256(b"entry %d" % i).digest() for i in range(SIZE)]


def _store() -> merkle.MemorySubtrees:
    store = merkle.MemorySubtrees()
    for index, entry in enumerate(ENTRIES):
        merkle.append(store, index, merkle.leaf_hash(entry))
    return store


STORE = _store()
ROOT = merkle.root(STORE, SIZE)


def _files() -> dict[str, bytes]:
    store = STORE
    files = {"/checkpoint": b"not read here\n"}
    for ref in tiles_for_size(SIZE):
        start = ref.index * TILE_WIDTH
        files["/" + ref.path] = b"".join(
            store.get(8 * ref.level, start + i) for i in range(ref.width)
        )
        if ref.level == 0:
            entries = ENTRIES[start : start + ref.width]
            files["/" + ref.path.replace("tile/0/", "tile/entries/")] = encode_entry_bundle(entries)
    return files


FILES = _files()


class Served:
    """What the server serves, and what it was asked for."""

    def __init__(self) -> None:
        self.files = dict(FILES)
        self.requests: list[str] = []


@contextmanager
def _serving(federation: Federation, tmp_path: Path, served: Served) -> Iterator[str]:
    registry = federation.members["registry"]
    cert, key = tmp_path / "http.crt", tmp_path / "http.key"
    cert.write_bytes(registry.cert_pem)
    key.write_bytes(registry.tls_key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            served.requests.append(self.path)
            body = served.files.get(self.path)
            if body is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def federation() -> Federation:
    return Federation.create()


def _read_everything(reader: TileReader) -> None:
    tree = reader.tree(SIZE, ROOT)
    for bundle in range(SIZE // TILE_WIDTH + 1):
        assert tree.entries(bundle) == ENTRIES[bundle * TILE_WIDTH : (bundle + 1) * TILE_WIDTH]
    for index in range(0, SIZE, 7):
        assert tree.inclusion_proof(index) == merkle.inclusion_proof(STORE, index, SIZE)
    assert tree.consistency_proof(700) == merkle.consistency_proof(STORE, 700, SIZE)


def test_each_tile_is_read_once_and_full_tiles_come_from_the_disk_cache_later(
    federation: Federation, tmp_path: Path
) -> None:
    served = Served()
    cache = tmp_path / "tiles"
    with _serving(federation, tmp_path, served) as url:
        with TileReader(url, federation.ca.certificate_pem, cache_dir=cache) as reader:
            _read_everything(reader)
            assert reader.checkpoint() == b"not read here\n"
        first = list(served.requests)
        assert len(first) == len(set(first))
        # Full entry bundles stand in for level-0 tiles: only the edge tile of level 0 is read.
        assert [path for path in first if path.startswith("/tile/0/")] == ["/tile/0/005.p/20"]
        served.requests.clear()
        # A later process: full tiles from disk, only the partial right edge from the registry.
        with TileReader(url, federation.ca.certificate_pem, cache_dir=cache) as reader:
            _read_everything(reader)
            assert reader.cache_hits == 5  # the five full entry bundles
        assert sorted(served.requests) == [
            "/tile/0/005.p/20", "/tile/1/000.p/5", "/tile/entries/005.p/20",
        ]  # fmt: skip
    assert (cache / "tile/entries/004").read_bytes() == FILES["/tile/entries/004"]


def test_a_tile_that_does_not_hash_to_the_root_is_refused_and_not_cached(
    federation: Federation, tmp_path: Path
) -> None:
    served = Served()
    forged = bytearray(FILES["/tile/entries/002"])
    forged[2 + 34 * 9] ^= 0xFF  # one entry of bundle 2 swapped
    served.files["/tile/entries/002"] = bytes(forged)
    cache = tmp_path / "tiles"
    with (
        _serving(federation, tmp_path, served) as url,
        TileReader(url, federation.ca.certificate_pem, cache_dir=cache) as reader,
    ):
        tree = reader.tree(SIZE, ROOT)
        with pytest.raises(ClaimMismatch, match=r"entry bundle 2 hashes to .* not .* tile 1/0"):
            tree.entries(2)
        assert tree.entries(1) == ENTRIES[256:512]
        assert not (cache / "tile/entries/002").exists()
        assert (cache / "tile/entries/001").exists()
        # The registry puts the genuine bundle back: the next tree reads it afresh.
        served.files["/tile/entries/002"] = FILES["/tile/entries/002"]
        assert reader.tree(SIZE, ROOT).entries(2) == ENTRIES[512:768]


def test_a_tampered_disk_cache_is_caught_and_heals(federation: Federation, tmp_path: Path) -> None:
    served = Served()
    cache = tmp_path / "tiles"
    with _serving(federation, tmp_path, served) as url:
        with TileReader(url, federation.ca.certificate_pem, cache_dir=cache) as reader:
            reader.tree(SIZE, ROOT).entries(0)
        (cache / "tile/entries/000").write_bytes(FILES["/tile/entries/001"])
        with TileReader(url, federation.ca.certificate_pem, cache_dir=cache) as reader:
            with pytest.raises(ClaimMismatch, match="entry bundle 0 hashes to"):
                reader.tree(SIZE, ROOT).entries(0)
            assert not (cache / "tile/entries/000").exists()
            assert reader.tree(SIZE, ROOT).entries(0) == ENTRIES[:256]


def test_the_registry_s_certificate_must_verify_and_missing_tiles_say_so(
    federation: Federation, tmp_path: Path
) -> None:
    served = Served()
    del served.files["/tile/1/000.p/5"]
    other_ca = create_ca("someone else", datetime.now(UTC), timedelta(days=1)).certificate_pem
    with _serving(federation, tmp_path, served) as url:
        with (
            TileReader(url, other_ca) as reader,
            pytest.raises(Unavailable, match="does not verify against the given CA"),
        ):
            reader.checkpoint()
        with (
            TileReader(url, federation.ca.certificate_pem) as reader,
            pytest.raises(
                NotFound, match=r"tile/1/000.p/5: the registry does not serve it \(HTTP 404\)"
            ),
        ):
            reader.tree(SIZE, ROOT).leaf_hash(0)
    with pytest.raises(InvalidInput, match="use an https:// URL"):
        TileReader("http://127.0.0.1:1", federation.ca.certificate_pem)


def test_find_reads_ahead_on_other_connections_each_bundle_once(
    federation: Federation, tmp_path: Path
) -> None:
    served = Served()
    forged = bytearray(FILES["/tile/entries/003"])
    forged[2 + 34 * 200] ^= 0xFF
    with _serving(federation, tmp_path, served) as url:
        with TileReader(url, federation.ca.certificate_pem) as reader:
            found = reader.tree(SIZE, ROOT).find(ENTRIES)
            assert found == {entry: index for index, entry in enumerate(ENTRIES)}
        assert sorted(served.requests) == sorted(set(served.requests))
        assert {f"/tile/entries/00{n}" for n in range(5)} <= set(served.requests)
        # A bundle fetched ahead is checked like any other when it is read.
        served.files["/tile/entries/003"] = bytes(forged)
        with (
            TileReader(url, federation.ca.certificate_pem) as reader,
            pytest.raises(ClaimMismatch, match="entry bundle 3 hashes to"),
        ):
            reader.tree(SIZE, ROOT).find([hashlib.sha256(b"not logged").digest()])
