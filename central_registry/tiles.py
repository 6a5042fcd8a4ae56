"""The log's C2SP tiles and entry bundles, read from the SQL store.

The tree's stored subtrees (``merkle_nodes``) hold every complete subtree
hash at every level, so a tile at level ``L`` is a primary-key range read of
level ``8 * L``; an entry bundle is a range read of the log's entry
commitments (which expiry never erases). Only hashes that exist are served:
a tile or bundle wider than the tree is :class:`~credence.errors.NotFound`.

Full tiles never change, so :class:`LogFiles` keeps them in a bounded
in-process cache; partial tiles and the checkpoint are read every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from central_registry import transparency
from central_registry.store.driver import Driver
from credence.errors import NotFound
from credence.keys import SigningKey
from credence.storage import reader, session_factory
from credence.transparency.tiles import TILE_HEIGHT, TILE_WIDTH, TileRef, encode_entry_bundle

__all__ = ["LogFiles", "read_tile"]

#: Full tiles kept in memory (8 KiB each): 32 MiB.
CACHED_TILES = 4096


def _missing(ref: TileRef, found: int) -> NotFound:
    return NotFound(
        f"{ref.path} is beyond the log's tree: it has {found} of the {ref.width} "
        f"{'entries' if ref.entries else 'hashes'} asked for"
    )


def read_tile(session: Session, ref: TileRef) -> bytes:
    """The bytes of a hash tile or an entry bundle, as served.

    Raises:
        NotFound: the tree does not (yet) hold all ``ref.width`` hashes or entries.
    """
    first = ref.index * TILE_WIDTH
    last = first + ref.width - 1
    # Driver statements: an ORM row costs several times the read itself here.
    if ref.entries:
        sql = "SELECT commitment FROM log_entries WHERE idx BETWEEN ? AND ? ORDER BY idx"
        params: tuple[int, ...] = (first, last)
    else:
        sql = "SELECT hash FROM merkle_nodes WHERE level = ? AND idx BETWEEN ? AND ? ORDER BY idx"
        params = (TILE_HEIGHT * ref.level, first, last)
    rows = Driver(session).rows(sql, params)
    if len(rows) != ref.width:
        raise _missing(ref, len(rows))
    values = [bytes(value) for (value,) in rows]
    return encode_entry_bundle(values) if ref.entries else b"".join(values)


class LogFiles:
    """The log as the HTTP side serves it: the checkpoint, tiles and entry bundles."""

    def __init__(
        self,
        engine: Engine,
        *,
        log_key: SigningKey,
        origin: str,
        clock: Callable[[], datetime],
        cached_tiles: int = CACHED_TILES,
    ) -> None:
        self._sessions = session_factory(engine)
        self._log_key = log_key
        self._origin = origin
        self._clock = clock
        self._capacity = cached_tiles
        self._cache: OrderedDict[TileRef, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def checkpoint(self) -> bytes:
        """The checkpoint of the current tree (signed when the log has grown)."""
        with self._sessions.begin() as session:
            return transparency.tree_head(
                session, log_key=self._log_key, origin=self._origin, now=self._clock()
            )

    def tile(self, ref: TileRef) -> bytes:
        """A tile or entry bundle.

        Raises:
            NotFound: it lies (partly) beyond the tree.
        """
        full = ref.width == TILE_WIDTH
        if full:
            with self._lock:
                cached = self._cache.get(ref)
                if cached is not None:
                    self._cache.move_to_end(ref)
                    return cached
        with reader(self._sessions()) as session:
            data = read_tile(session, ref)
        if full:
            with self._lock:
                self._cache[ref] = data
                if len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        return data
