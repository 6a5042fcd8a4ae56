"""The transparency log's Merkle tree in SQL: subtrees, signed tree heads, proofs.

The log's rows, their appends and reads are in :mod:`central_registry.log`;
this module integrates appended entries into the tree and proves what it holds.

Each log entry's leaf is its 32-byte salted commitment; the leaf hash is
``SHA-256(0x00 || commitment)`` (RFC 9162). Appends store every complete
subtree they finish (:func:`credence.transparency.merkle.append`), in the same transaction
as the entries, so the tree always matches the log and no append or proof ever
rehashes it. Tree heads are C2SP checkpoints (signed notes) signed with the log
key (the registry signing key) and kept, one per size.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from central_registry.models import LogEntry, TreeHead
from central_registry.store.driver import Driver
from credence.errors import CredenceError, InvalidInput, NotFound
from credence.keys import SigningKey
from credence.transparency import merkle, merkle_batch
from credence.transparency.checkpoint import Checkpoint, parse_checkpoint, sign_checkpoint
from credence.transparency.log_audit import MAX_PROOFS_PER_CALL
from credence.transparency.note import parse_note

# The key of the PostgreSQL advisory lock that serialises log writers: ASCII "credence".
_LOG_LOCK_KEY = 0x63726564656E6365


def lock_log(session: Session) -> None:
    """Make the caller's transaction the log's only writer until it ends.

    Appends take the next dense indexes from the log's size, and tree heads
    are keyed by it; concurrent writers must take turns. SQLite already
    serialises them (the registry begins its transactions IMMEDIATE); on
    PostgreSQL a transaction-scoped advisory lock does, where otherwise each
    writer would wait on the other's uncommitted rows and then have to retry.
    """
    if session.get_bind().dialect.name == "postgresql":
        Driver(session).execute("SELECT pg_advisory_xact_lock(?)", (_LOG_LOCK_KEY,))


class _NodeCache:
    """Committed subtree hashes of one database, shared by every session of the process.

    A complete subtree's hash never changes once committed, and every proof
    reads the same upper levels: caching them turns most proof reads into
    dictionary lookups. Bounded; the oldest entries go first.
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._entries: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> bytes | None:
        return self._entries.get(key)

    def put(self, key: tuple[int, int], value: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self._capacity:
                for old in list(self._entries)[: self._capacity // 10]:
                    del self._entries[old]
            self._entries[key] = value


_CACHES: dict[str, _NodeCache] = {}
_CACHES_LOCK = threading.Lock()
_URLS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _committed_nodes(session: Session) -> _NodeCache:
    engine = session.get_bind().engine
    url = _URLS.get(engine)
    if url is None:
        # Rendering a URL costs more than the rest of an append's bookkeeping: once per engine.
        url = _URLS[engine] = engine.url.render_as_string(hide_password=True)
    with _CACHES_LOCK:
        cache = _CACHES.get(url)
        if cache is None:
            cache = _CACHES[url] = _NodeCache()
        return cache


class SqlSubtrees:
    """A :class:`credence.transparency.merkle.SubtreeStore` over the ``merkle_nodes`` table.

    Reads are cached for the life of the object (one transaction); writes are
    buffered and inserted in one statement by :meth:`flush`.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._cache: dict[tuple[int, int], bytes] = {}
        self._pending: list[tuple[int, int, bytes]] = []
        self._committed = _committed_nodes(session)
        self._driver: Driver | None = None  # opened at the first read or write

    def get(self, level: int, index: int) -> bytes:
        """The hash of the complete subtree at (level, index).

        Raises:
            NotFound: the tree has no such subtree (a caller bug or a damaged table).
        """
        key = (level, index)
        cached = self._cache.get(key) or self._committed.get(key)
        if cached is None:
            cached = self._sql().scalar(
                "SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?", (level, index)
            )
            if cached is None:
                raise NotFound(f"the log has no complete subtree at level {level}, index {index}")
            # Read from the table, so committed (or this transaction's own, which the
            # instance cache already holds): a complete subtree never changes again.
            if key not in self._cache:
                self._committed.put(key, cached)
            self._cache[key] = cached
        return cached

    def cached(self, level: int, index: int) -> bytes | None:
        """The hash of subtree (level, index) if it was read before, without reading it."""
        key = (level, index)
        return self._cache.get(key) or self._committed.get(key)

    def remember(self, level: int, index: int, value: bytes) -> None:
        """Keep a committed subtree's hash read in bulk by the caller."""
        key = (level, index)
        self._committed.put(key, value)
        self._cache[key] = value

    def put(self, level: int, index: int, value: bytes) -> None:
        """Remember a new complete subtree; written by :meth:`flush`."""
        self._cache[(level, index)] = value
        self._pending.append((level, index, value))

    def flush(self) -> None:
        """Insert every subtree put since the last flush, in one statement."""
        if self._pending:
            self._sql().many(
                "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", self._pending
            )
            self._pending = []

    def _sql(self) -> Driver:
        # Driver statements: every append and proof reads and writes subtrees.
        if self._driver is None:
            self._driver = Driver(self._session)
        return self._driver


def append_leaves(session: Session, first_index: int, commitments: Sequence[bytes]) -> None:
    """Add the leaves of entries ``first_index...`` to the tree (caller's transaction)."""
    store = SqlSubtrees(session)
    for offset, commitment in enumerate(commitments):
        merkle.append(store, first_index + offset, merkle.leaf_hash(commitment))
    store.flush()


def log_size(session: Session) -> int:
    """How many entries the log holds, and so leaves the tree (indexes are dense from 0)."""
    return int(Driver(session).scalar("SELECT coalesce(max(idx) + 1, 0) FROM log_entries"))


def _is_checkpoint(data: bytes, origin: str) -> bool:
    """Whether stored head bytes are a checkpoint note of this log (not a pre-note head)."""
    try:
        return parse_checkpoint(parse_note(data).text).origin == origin
    except CredenceError:
        return False


def tree_head(session: Session, *, log_key: SigningKey, origin: str, now: datetime) -> bytes:
    """The C2SP checkpoint of the current tree, a note signed by the log key as ``origin``.

    Signs a new one when the log has grown (or when the head kept for this
    size predates checkpoints) and keeps it, so every size has one head.

    Raises:
        InvalidInput: ``origin`` is not a valid checkpoint origin.
    """
    lock_log(session)
    size = log_size(session)
    latest = session.get(TreeHead, size)
    # ``envelope`` holds the head as served: a checkpoint note since checkpoints
    # replaced the signed TreeHead envelopes, which are re-signed on first read.
    if latest is not None and _is_checkpoint(latest.envelope, origin):
        return latest.envelope
    root = merkle.root(SqlSubtrees(session), size)
    note = sign_checkpoint(Checkpoint(origin=origin, size=size, root_hash=root), log_key)
    if latest is None:
        session.add(TreeHead(tree_size=size, root=root, signed_at=now, envelope=note))
    else:
        latest.root, latest.signed_at, latest.envelope = root, now, note
    return note


def inclusion_proof(session: Session, commitment: bytes, tree_size: int) -> tuple[int, list[bytes]]:
    """The leaf index and RFC 9162 audit path of ``commitment`` in a tree of ``tree_size``.

    Raises:
        InvalidInput: a tree size larger than the log, or a malformed commitment.
        NotFound: the commitment is not in the first ``tree_size`` leaves.
    """
    if len(commitment) != 32:
        raise InvalidInput(f"a log leaf is a 32-byte commitment, got {len(commitment)} bytes")
    size = log_size(session)
    if not 0 < tree_size <= size:
        raise InvalidInput(f"tree size {tree_size} is not in 1..{size} (the log's size)")
    index = Driver(session).scalar(
        "SELECT idx FROM log_entries WHERE commitment = ?", (bytes(commitment),)
    )
    if index is None or index >= tree_size:
        raise NotFound(f"that entry is not in the log's first {tree_size} entries")
    return index, merkle.inclusion_proof(SqlSubtrees(session), index, tree_size)


def _proof_reads(indexes: Sequence[int], size: int) -> list[tuple[int, int]]:
    """The complete subtrees inclusion proofs of leaves ``indexes`` in a tree of ``size`` read.

    An RFC 9162 path holds, at each level, the sibling of the leaf's ancestor
    (when that sibling is a complete subtree), or the hash of a range ending at
    the tree's right edge, made of the tree's peaks (one complete subtree per set
    bit of ``size``). A superset is harmless; anything missed is read on demand.
    """
    peaks = [
        (level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1
    ]
    siblings = {
        (level, (index >> level) ^ 1)
        for index in indexes
        for level in range(size.bit_length())
        if (((index >> level) ^ 1) + 1) << level <= size
    }
    return [*peaks, *sorted(siblings - set(peaks))]


def _prefetch(session: Session, store: SqlSubtrees, keys: Sequence[tuple[int, int]]) -> None:
    """Read every subtree in ``keys`` that ``store`` does not hold yet, a level at a time.

    A level's indexes that lie close together (a node's promises are mostly runs
    of neighbouring entries) are read as one primary-key range; scattered ones
    as an ``IN`` list.
    """
    wanted: dict[int, list[int]] = {}
    for level, index in keys:
        if store.cached(level, index) is None:
            wanted.setdefault(level, []).append(index)
    driver = Driver(session)
    for level, indexes in wanted.items():
        low, high = min(indexes), max(indexes)
        if high - low < 4 * len(indexes):
            found = driver.rows(
                "SELECT idx, hash FROM merkle_nodes WHERE level = ? AND idx BETWEEN ? AND ?",
                (level, low, high),
            )
        else:
            marks = ", ".join("?" for _ in indexes)
            found = driver.rows(
                "SELECT idx, hash FROM merkle_nodes "  # noqa: S608 - marks only
                f"WHERE level = ? AND idx IN ({marks})",
                (level, *indexes),
            )
        for index, value in found:
            store.remember(level, index, bytes(value))


def inclusion_proofs(
    session: Session, commitments: Sequence[bytes], tree_size: int
) -> list[tuple[int, list[bytes]] | None]:
    """Leaf index and audit path of each commitment in a tree of ``tree_size``, in order.

    ``None`` for a commitment that is not among the first ``tree_size`` leaves.
    Every subtree the proofs read is fetched in a few range reads, so a batch
    costs about as many statements as one proof.

    Raises:
        InvalidInput: no commitment or more than :data:`MAX_PROOFS_PER_CALL`, a
            malformed commitment, or a tree size larger than the log.
    """
    if not 0 < len(commitments) <= MAX_PROOFS_PER_CALL:
        raise InvalidInput(
            f"ask for 1 to {MAX_PROOFS_PER_CALL} inclusion proofs per call, got "
            f"{len(commitments)}: split the request"
        )
    for position, commitment in enumerate(commitments):
        if len(commitment) != merkle.HASH_SIZE:
            raise InvalidInput(
                f"commitment {position} is {len(commitment)} bytes; a log leaf is a 32-byte "
                "commitment"
            )
    size = log_size(session)
    if not 0 < tree_size <= size:
        raise InvalidInput(f"tree size {tree_size} is not in 1..{size} (the log's size)")
    found = dict(
        session.execute(
            select(LogEntry.commitment, LogEntry.idx).where(
                LogEntry.commitment.in_(set(commitments))
            )
        ).all()
    )
    indexes = [found.get(commitment) for commitment in commitments]
    present = [index for index in indexes if index is not None and index < tree_size]
    store = SqlSubtrees(session)
    _prefetch(session, store, _proof_reads(present, tree_size))
    paths = dict(zip(present, merkle_batch.inclusion_paths(store, present, tree_size), strict=True))
    return [
        (index, paths[index]) if index is not None and index < tree_size else None
        for index in indexes
    ]


def consistency_proof(session: Session, first: int, second: int) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``first`` and ``second``.

    Raises:
        InvalidInput: sizes out of order or beyond the log.
    """
    size = log_size(session)
    if not 0 <= first <= second <= size:
        raise InvalidInput(f"need 0 <= first <= second <= {size}, got {first} and {second}")
    return merkle.consistency_proof(SqlSubtrees(session), first, second)
