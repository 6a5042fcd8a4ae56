"""Reading the log's checkpoint and tiles from the registry's HTTP side, with caches.

The HTTP side serves ``/checkpoint`` and the C2SP tiles (``/tile/<L>/<N>``,
``/tile/entries/<N>``, partial ones with ``.p/<W>``) over TLS, its
certificate checked against the CA the caller pins, as for the manifest
(:mod:`credence.client.pinned`). TLS only keeps the network honest; the
registry itself is not trusted: every tile is checked against a verified
checkpoint's root by :class:`credence.transparency.tile_tree.TileTree`,
which this reader feeds.

Full tiles never change, so they are cached: in memory (bounded, least
recently used out first) and, if a directory is given, on disk, where a
later process finds them. A cached tile is checked like a fetched one, so a
cache that was tampered with is caught (and the tile is fetched again).
Partial tiles and the checkpoint are read fresh.
"""

from __future__ import annotations

import http.client
import os
import ssl
import tempfile
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from credence.errors import InvalidInput, NotFound, Unavailable
from credence.transparency.tile_tree import TileTree
from credence.transparency.tiles import TILE_WIDTH, entries_path, tile_path

__all__ = ["TileReader"]

_TIMEOUT_SECONDS = 10.0
#: A checkpoint note is small; a tile at most 256 hashes; a bundle of 256 commitments
#: is under 9 KiB (the bound leaves room for larger entries).
_MAX_CHECKPOINT_BYTES = 64 * 1024
_MAX_TILE_BYTES = 1024 * 1024
#: Entry bundles fetched ahead at once (see :meth:`TileReader.prefetch_entries`).
PREFETCH_WORKERS = 4


class TileReader:
    """A log's checkpoint and tiles over HTTPS, full tiles cached.

    Not thread-safe: one reader per thread (its prefetching threads are its own).
    """

    def __init__(
        self,
        base_url: str,
        ca_pem: bytes,
        *,
        cache_dir: Path | None = None,
        memory_tiles: int = 8192,
        timeout: float = _TIMEOUT_SECONDS,
    ) -> None:
        """Prepare to read from ``base_url`` (``https://host:port``).

        Raises:
            InvalidInput: the URL is not https, or ``ca_pem`` is not a PEM certificate.
        """
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "https" or not url.hostname:
            raise InvalidInput(
                f"the log's tiles are served over TLS: use an https:// URL, not {base_url!r}"
            )
        try:
            context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"the CA for {base_url} is not a PEM certificate: {exc}") from exc
        self.base_url = base_url.rstrip("/")
        self._prefix = url.path.rstrip("/")
        self._address = (url.hostname, url.port or 443)
        self._context = context
        self._timeout = timeout
        self._connection = self._connect()
        # Prefetching: a few worker threads, each with its own kept-alive connection.
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[bytes]] = {}
        self._local = threading.local()
        self._worker_connections: list[http.client.HTTPSConnection] = []
        self._lock = threading.Lock()
        self._cache_dir = cache_dir
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_limit = memory_tiles
        self._unsaved: set[str] = set()
        #: Requests sent to the registry, and tiles served from a cache instead.
        self.fetched = 0
        self.cache_hits = 0

    def _connect(self) -> http.client.HTTPSConnection:
        host, port = self._address
        return http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._context)

    def close(self) -> None:
        """Stop prefetching and close the connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for connection in self._worker_connections:
            connection.close()
        self._connection.close()

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _get(
        self, path: str, max_bytes: int, connection: http.client.HTTPSConnection | None = None
    ) -> bytes:
        url = f"{self.base_url}/{path}"
        connection = connection or self._connection
        for attempt in (1, 2):
            try:
                connection.request("GET", f"{self._prefix}/{path}")
                response = connection.getresponse()
                body = response.read(max_bytes + 1)
                break
            except ssl.SSLCertVerificationError as exc:
                connection.close()
                raise Unavailable(
                    f"{url}: the server's certificate does not verify against the given CA "
                    f"({exc.verify_message}); pass the federation CA, or the operator's CA"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                # A kept-alive connection the server closed: one fresh try.
                connection.close()
                if attempt == 2:
                    raise Unavailable(f"cannot fetch {url}: {exc}") from exc
        with self._lock:
            self.fetched += 1
        if response.status == 404:
            raise NotFound(f"{url}: the registry does not serve it (HTTP 404)")
        if response.status != 200:
            raise Unavailable(f"{url}: HTTP {response.status} {response.reason}")
        if len(body) > max_bytes:
            raise Unavailable(f"{url} returned more than {max_bytes} bytes; refusing it")
        return body

    def checkpoint(self) -> bytes:
        """The latest checkpoint note, unverified: open it before use.

        Raises:
            Unavailable: the registry could not be reached or answered with an error.
            NotFound: it serves no checkpoint.
        """
        return self._get("checkpoint", _MAX_CHECKPOINT_BYTES)

    def prefetch_entries(self, indexes: Iterable[int]) -> None:
        """Start fetching these full entry bundles in the background.

        Up to :data:`PREFETCH_WORKERS` at once, each on its own connection, so
        the registry serves the next bundles while this thread checks the last.
        A bundle already cached or under way is skipped; what was fetched is
        checked like any tile when it is read.
        """
        for index in indexes:
            path = entries_path(index)
            if path in self._pending or path in self._memory or self._on_disk(path):
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=PREFETCH_WORKERS, thread_name_prefix="tile-prefetch"
                )
            self._pending[path] = self._pool.submit(self._fetch_ahead, path)

    def _fetch_ahead(self, path: str) -> bytes:
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                self._worker_connections.append(connection)
        return self._get(path, _MAX_TILE_BYTES, connection)

    def _on_disk(self, path: str) -> bool:
        on_disk = self._disk_path(path)
        return on_disk is not None and on_disk.is_file()

    def _read(self, path: str, full: bool) -> bytes:
        if not full:
            return self._get(path, _MAX_TILE_BYTES)
        ahead = self._pending.pop(path, None)
        if ahead is not None:
            data = ahead.result()  # raises what the fetch raised
            self._remember(path, data)
            self._unsaved.add(path)
            return data
        cached = self._memory.get(path)
        if cached is not None:
            self._memory.move_to_end(path)
            self.cache_hits += 1
            return cached
        on_disk = self._disk_path(path)
        if on_disk is not None and on_disk.is_file():
            self.cache_hits += 1
            data = on_disk.read_bytes()
            self._remember(path, data)
            return data
        data = self._get(path, _MAX_TILE_BYTES)
        # Kept in memory for the tree that asked; saved for later ones once it checks out.
        self._remember(path, data)
        self._unsaved.add(path)
        return data

    def _remember(self, path: str, data: bytes) -> None:
        self._memory[path] = data
        self._memory.move_to_end(path)
        while len(self._memory) > self._memory_limit:
            self._memory.popitem(last=False)

    def _disk_path(self, path: str) -> Path | None:
        return None if self._cache_dir is None else self._cache_dir / path

    def _verdict(self, path: str, ok: bool) -> None:
        if not ok:
            # Neither the registry's bad tile nor a damaged cached one is kept:
            # the next tree reads it afresh.
            self._memory.pop(path, None)
            self._unsaved.discard(path)
            on_disk = self._disk_path(path)
            if on_disk is not None:
                on_disk.unlink(missing_ok=True)
            return
        if path not in self._unsaved:
            return
        self._unsaved.discard(path)
        target = self._disk_path(path)
        data = self._memory.get(path)
        if target is None or data is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: a reader never sees half a tile.
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tile-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        Path(temporary).replace(target)

    def tile(self, level: int, index: int, width: int) -> bytes:
        """Hash tile ``level``/``index`` of ``width`` hashes (full ones from the cache).

        Unchecked: read it through :meth:`tree`.

        Raises:
            Unavailable: the registry could not be reached or answered with an error.
            NotFound: it does not serve the tile.
        """
        return self._read(tile_path(level, index, width), width == TILE_WIDTH)

    def entries(self, index: int, width: int) -> bytes:
        """Entry bundle ``index`` of ``width`` entries (full ones from the cache).

        Unchecked: read it through :meth:`tree`.

        Raises:
            Unavailable: the registry could not be reached or answered with an error.
            NotFound: it does not serve the bundle.
        """
        return self._read(entries_path(index, width), width == TILE_WIDTH)

    def tree(self, size: int, root_hash: bytes) -> TileTree:
        """The tree of a verified checkpoint's size and root, read through this reader.

        Every tile is checked against the root before use; full tiles that
        pass are saved to the disk cache, and ones that fail dropped from
        every cache.
        """

        def verdict(level: int, index: int, entries: bool, ok: bool) -> None:
            self._verdict(entries_path(index) if entries else tile_path(level, index), ok)

        return TileTree(
            size, root_hash, self.tile, self.entries, verdict, prefetch=self.prefetch_entries
        )
