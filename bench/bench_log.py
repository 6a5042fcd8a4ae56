"""The transparency log (issues 5, 13): ``python -m bench.bench_log [--big]``.

Two targets, each printed with its figure, its target and "met" or "MISSED":

1. **Appends with promises**, at least 5,000/s. A fresh registry database
   (real engine, real migrations) in a temporary directory; each entry is
   appended alone: build the :class:`LogEntry`, a fresh
   salt and its commitment, one transaction with ``append_entries([row])``
   (entry and Merkle subtrees), then make and sign the promise (one Ed25519
   signature). For comparison, the batch path: 1,000 rows per transaction and
   the promises carried unsigned inside one signed batch query.
1b. **The single path**, at least 5,000 appends/s on SQLite and on
   PostgreSQL (``--postgres URL``, default ``$CREDENCE_TEST_POSTGRES_URL``;
   a fresh database, dropped after): what a single lookup writes, through
   :meth:`LookupLog.write_verdict` as ``request_verdict`` calls it (its rate
   and log quota, its row and subtrees, its subject count: one transaction,
   shared by the lookups waiting at that moment), then its signed promise;
   1 and ``--concurrency`` lookups at a time.
2. **Inclusion and consistency proofs**, under 1 ms each at 1M leaves (and
   10M with ``--big``). The log is built fast: random commitments, every
   level of complete subtrees hashed in memory, then ``merkle_nodes`` and
   ``log_entries`` bulk-inserted through the raw ``sqlite3`` driver. Proofs
   are then timed through the registry's own code on that file: the store
   reads alone (:class:`SqlSubtrees` under :func:`credence.transparency.merkle` maths) and
   the full request path (:func:`transparency.inclusion_proof` /
   :func:`transparency.consistency_proof` in a fresh session, as the gRPC
   handlers run them), plus client-side verification. Random tree sizes in
   the upper half of the log, random leaves; medians.

``--profile`` runs the single-entry append loop under cProfile too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import itertools
import os
import pstats
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from central_registry import transparency
from central_registry.config import RateLimits
from central_registry.database import (
    create_engine_for,
    session_factory,
    sqlite_url_for,
    upgrade_schema,
)
from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.entries import append_entries
from central_registry.log.rows import OUTCOME_DISPATCHED, LogRow, dispatched_row, entry_row
from central_registry.lookup_log import LookupLog
from central_registry.models import MerkleNode
from central_registry.transparency import SqlSubtrees
from central_registry.verdict_writes import VerdictOutcome, VerdictWrite
from credence import payloads, queries
from credence.envelope import sign
from credence.errors import CredenceError
from credence.keys import SigningKey
from credence.transparency import log_promise, merkle
from credence.v1 import agency_pb2, common_pb2

TARGET_APPENDS = 5_000.0
TARGET_PROOF_US = 1_000.0
REQUESTER = "member-bank-0001"
PURPOSE = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
SUBJECT_TYPE = common_pb2.SUBJECT_TYPE_ORGANISATION
KINDS = (common_pb2.VERDICT_KIND_BLACKLIST,)
BASIS = "public register"
MERGE_DELAY = timedelta(minutes=5)
CHUNK = 50_000

_STARTED = time.monotonic()


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def fresh_registry(directory: Path) -> tuple[Engine, sessionmaker[Session]]:
    engine = create_engine_for(sqlite_url_for(directory))
    upgrade_schema(engine)
    return engine, session_factory(engine)


# -- 1. appends ---------------------------------------------------------------------


def _entry(now: datetime) -> tuple[log_promise.LogEntry, bytes, LogRow]:
    entry = log_promise.LogEntry(
        query_id=queries.new_query_id(),
        requester=REQUESTER,
        subject_type=SUBJECT_TYPE,
        subject_ref=secrets.token_bytes(32),
        purpose=PURPOSE,
        kinds=KINDS,
        grant_id="",
        issued_at=now,
    )
    salt = log_promise.new_salt()
    return entry, salt, entry_row(entry, salt, basis=BASIS, embargo_until=None)


def append_singles(sessions: sessionmaker[Session], key: SigningKey, n: int) -> dict[str, float]:
    """Append ``n`` entries one per transaction, each with a signed promise.

    Returns the total seconds and the seconds spent in each step.
    """
    build = store = promise = 0.0
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        entry, salt, row = _entry(now)
        t1 = time.perf_counter()
        with sessions.begin() as session:
            append_entries(session, [row])
        t2 = time.perf_counter()
        log_promise.sign_promise(
            log_promise.make_promise(
                entry, salt, log_id=key.kid, promised_at=now, max_merge_delay=MERGE_DELAY
            ),
            key,
        )
        t3 = time.perf_counter()
        build += t1 - t0
        store += t2 - t1
        promise += t3 - t2
    return {
        "total": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "build": build,
        "store": store,
        "promise": promise,
    }


def append_batches(
    sessions: sessionmaker[Session], key: SigningKey, n: int, batch: int
) -> dict[str, float]:
    """Append ``n`` entries ``batch`` per transaction, one signature per batch.

    Mirrors screening: a shared :class:`CommitmentEncoder`, unsigned promises
    carried in one signed batch query.
    """
    build = store = promise = 0.0
    cpu = time.process_time()
    started = time.perf_counter()
    for first in range(0, n, batch):
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        encoder = log_promise.CommitmentEncoder.for_shared(
            requester=REQUESTER, purpose=PURPOSE, kinds=KINDS, issued_at=now
        )
        rows: list[LogRow] = []
        items: list[agency_pb2.BatchItem] = []
        for _ in range(min(batch, n - first)):
            query_id = queries.new_query_id()
            ref = secrets.token_bytes(32)
            salt = log_promise.new_salt()
            commitment = encoder.commit(salt, query_id, SUBJECT_TYPE, ref, "")
            item = agency_pb2.BatchItem(
                query_id=query_id,
                subject=common_pb2.SubjectRef(type=SUBJECT_TYPE, ref=ref),
                grant=queries.public_register(),
                log_promise=common_pb2.LogPromise(
                    log_id=key.kid, query_id=query_id, entry_commitment=commitment, salt=salt
                ),
            )
            item.log_promise.promised_at.FromDatetime(now)
            item.log_promise.max_merge_delay.FromTimedelta(MERGE_DELAY)
            items.append(item)
            # As screening does: the commitment from the message's shared encoder.
            rows.append(
                dispatched_row(
                    query_id=query_id,
                    requester=REQUESTER,
                    subject_type=SUBJECT_TYPE,
                    subject_ref=ref,
                    purpose=PURPOSE,
                    kinds=KINDS,
                    grant_id="",
                    issued_at=now,
                    salt=salt,
                    commitment=commitment,
                    basis=BASIS,
                    embargo_until=None,
                )
            )
        t1 = time.perf_counter()
        with sessions.begin() as session:
            append_entries(session, rows)
        t2 = time.perf_counter()
        query = agency_pb2.BatchQuery(
            batch_id=queries.new_query_id(),
            items=items,
            kinds=KINDS,
            purpose=PURPOSE,
            requester=REQUESTER,
            nonce=secrets.token_bytes(16),
        )
        query.issued_at.FromDatetime(now)
        query.expires_at.FromDatetime(now + timedelta(seconds=60))
        sign(payloads.BATCH_QUERY, query.SerializeToString(), [key])
        t3 = time.perf_counter()
        build += t1 - t0
        store += t2 - t1
        promise += t3 - t2
    return {
        "total": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "build": build,
        "store": store,
        "promise": promise,
    }


def _print_breakdown(label: str, n: int, times: dict[str, float]) -> float:
    rate = n / times["total"]
    print(
        f"{label:<34}{rate:>10,.0f} /s  ({n:,} in {times['total']:.2f} s; "
        f"target {TARGET_APPENDS:,.0f}/s: {_verdict(rate >= TARGET_APPENDS)}; "
        f"CPU {times['cpu']:.2f} s)"
    )
    for step, what in (
        ("build", "entry + salt + commitment"),
        ("store", "transaction: append_entries"),
        ("promise", "promise + signature"),
    ):
        print(
            f"    {what:<30}{times[step] / n * 1e6:>8.1f} us/entry "
            f"({times[step] / times['total']:>4.0%})"
        )
    return rate


def bench_appends(directory: Path, n: int, batch: int, batch_n: int, profile: bool) -> None:
    print(f"== 1. appends with promises, SQLite (fresh registry database, {n:,} entries) ==")
    key = SigningKey.generate()
    engine, sessions = fresh_registry(directory)
    try:
        append_singles(sessions, key, min(500, n))  # warm up: caches, first pages
        single = _print_breakdown(
            "one per transaction, signed:", n, append_singles(sessions, key, n)
        )
        batched = _print_breakdown(
            f"{batch:,} per transaction, 1 sig:",
            batch_n,
            append_batches(sessions, key, batch_n, batch),
        )
        print(f"batch path / single path: {batched / single:.1f}x")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            append_singles(sessions, key, min(n, 5_000))
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            print(out.getvalue())
    finally:
        engine.dispose()


# -- 1b. the single path: what a single lookup writes, as the registry writes it ----------


class _CountingLog(LookupLog):
    """The registry's lookup log, counting the groups it writes."""

    groups = 0

    def write_verdicts(self, writes: Sequence[VerdictWrite]) -> list[VerdictOutcome]:
        self.groups += 1
        return super().write_verdicts(writes)


def _single_write(now: datetime) -> tuple[log_promise.LogEntry, bytes, VerdictWrite]:
    entry, salt, row = _entry(now)

    def refusal(error: CredenceError) -> LogRow | None:
        raise AssertionError(f"the benchmark's lookups are never refused: {error}")

    return entry, salt, VerdictWrite(REQUESTER, now, refusal, row=row)


async def _single_lookups(log: LookupLog, key: SigningKey, n: int, concurrency: int) -> None:
    """``n`` lookups' writes, ``concurrency`` at a time, as request_verdict makes them."""
    left = iter(range(n))

    async def lookup_loop() -> None:
        for _ in left:
            now = datetime.now(UTC)
            entry, salt, write = _single_write(now)
            await log.write_verdict(write)
            log_promise.sign_promise(
                log_promise.make_promise(
                    entry, salt, log_id=key.kid, promised_at=now, max_merge_delay=MERGE_DELAY
                ),
                key,
            )

    await asyncio.gather(*(lookup_loop() for _ in range(concurrency)))


def bench_single_path(url: str, label: str, n: int, concurrencies: Sequence[int]) -> bool:
    """Single lookups' writes through :meth:`LookupLog.write_verdict` (group commit).

    Each lookup spends its rate and log quota, is appended with its Merkle
    subtrees and counts its subject, in its group's transaction, then gets its
    signed promise. Returns whether the highest concurrency met the target.
    """
    engine = create_engine_for(url)
    upgrade_schema(engine)
    unlimited = RateLimits(requests_per_second=1e9, burst=10**9, log_rows_per_minute=10**9)
    log = _CountingLog(session_factory(engine), LookupQuotas(unlimited))
    key = SigningKey.generate()
    met = False
    try:
        asyncio.run(_single_lookups(log, key, min(n, 300), 8))  # warm up
        for concurrency in concurrencies:
            log.groups = 0
            cpu = time.process_time()
            started = time.perf_counter()
            asyncio.run(_single_lookups(log, key, n, concurrency))
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            rate = n / wall
            met = rate >= TARGET_APPENDS
            print(
                f"  {label}, {concurrency:>3} lookups at a time: {rate:>8,.0f} appends/s "
                f"(target {TARGET_APPENDS:,.0f}/s: {_verdict(met)}); "
                f"CPU {cpu / n * 1e6:,.0f} us/append; {n / max(log.groups, 1):.1f} per transaction"
            )
    finally:
        engine.dispose()
    return met


def _fresh_postgres(server_url: str) -> tuple[str, Callable[[], None]]:
    """A new database on ``server_url`` and the function that drops it."""
    name = f"credence_bench_log_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server_url).set(database=name).render_as_string(hide_password=False), drop


def bench_single_paths(
    directory: Path, postgres: str | None, n: int, concurrencies: Sequence[int]
) -> None:
    print(f"== 1b. the single path: {n:,} lookups' writes per run (group commit) ==")
    bench_single_path(sqlite_url_for(directory), "SQLite    ", n, concurrencies)
    if not postgres:
        print("  PostgreSQL: skipped (give --postgres URL or set $CREDENCE_TEST_POSTGRES_URL)")
        return
    url, drop = _fresh_postgres(postgres)
    try:
        bench_single_path(url, "PostgreSQL", n, concurrencies)
    finally:
        drop()


# -- 2. proofs on a large log -------------------------------------------------------


def build_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree, level by level: what ``merkle.append`` would store."""
    node = merkle.node_hash
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def check_builder() -> None:
    """The fast builder stores exactly what incremental appends store."""
    for n in (1, 2, 3, 1_000, 1_025):
        leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]
        memory = merkle.MemorySubtrees()
        for size, leaf in enumerate(leaves):
            merkle.append(memory, size, leaf)
        levels = build_levels(leaves)
        stored = sum(len(level) for level in levels)
        if stored != len(memory) or any(
            memory.get(level, index) != value
            for level, hashes in enumerate(levels)
            for index, value in enumerate(hashes)
        ):
            raise AssertionError(f"fast builder disagrees with merkle.append at {n} leaves")


def _chunks(rows: Iterator[tuple[object, ...]], size: int) -> Iterator[list[tuple[object, ...]]]:
    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_log(path: Path, n: int) -> list[bytes]:
    """Fill the (migrated, empty) registry database at ``path`` with ``n`` entries.

    Returns the commitments, in log order.
    """
    started = time.perf_counter()
    blob = os.urandom(32 * n)
    commitments = [blob[i : i + 32] for i in range(0, 32 * n, 32)]
    del blob
    levels = build_levels([merkle.leaf_hash(c) for c in commitments])
    nodes = sum(len(level) for level in levels)
    progress(f"hashed {n:,} leaves, {nodes:,} subtrees in {time.perf_counter() - started:.1f} s")

    # A build-only connection: no journal, a large cache. The timed reads use
    # the registry's own engine and tuning.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-2000000")
        t0 = time.perf_counter()
        connection.execute("BEGIN")
        for level, hashes in enumerate(levels):
            for first in range(0, len(hashes), CHUNK):
                connection.executemany(
                    "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)",
                    zip(
                        itertools.repeat(level),
                        range(first, first + CHUNK),
                        hashes[first : first + CHUNK],
                        strict=False,
                    ),
                )
        connection.execute("COMMIT")
        del levels
        progress(f"inserted {nodes:,} merkle_nodes rows in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        issued = datetime(2026, 1, 1, tzinfo=UTC)
        base_ms = int(issued.timestamp() * 1000)
        kinds = ",".join(str(kind) for kind in KINDS)

        def rows() -> Iterator[tuple[object, ...]]:
            for idx, commitment in enumerate(commitments):
                # Time-ordered query ids and one issue time per 1,000 entries, like real traffic.
                stamp = issued + timedelta(seconds=idx // 1_000)
                yield (
                    idx,
                    f"{base_ms + idx // 1_000:012x}{secrets.token_hex(10)}",
                    REQUESTER,
                    SUBJECT_TYPE,
                    secrets.token_bytes(32),
                    PURPOSE,
                    kinds,
                    "",
                    BASIS,
                    OUTCOME_DISPATCHED,
                    "",
                    stamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    secrets.token_bytes(16),
                    commitment,
                    None,
                )

        # One transaction: a commit per chunk would write most index pages again
        # each time (the three indexes are keyed by random values).
        connection.execute("BEGIN")
        for chunk in _chunks(rows(), CHUNK):
            connection.executemany(
                "INSERT INTO log_entries (idx, query_id, requester, subject_type, subject_ref, "
                "purpose, kinds, grant_id, basis, outcome, reason, issued_at, salt, commitment, "
                "embargo_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                chunk,
            )
        connection.execute("COMMIT")
        progress(f"inserted {n:,} log_entries rows in {time.perf_counter() - t0:.1f} s")
        connection.execute("ANALYZE")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    size_mb = path.stat().st_size / 1e6
    progress(f"log of {n:,} built in {time.perf_counter() - started:.1f} s ({size_mb:,.0f} MB)")
    return commitments


class CountingStore:
    """Counts a store's reads: the number of SELECTs a proof costs through SqlSubtrees."""

    def __init__(self, inner: merkle.SubtreeStore) -> None:
        self.inner = inner
        self.reads = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.inner.get(level, index)

    def put(self, level: int, index: int, hash_: bytes) -> None:
        self.inner.put(level, index, hash_)


class _Recorder:
    """A store that records which subtrees a proof reads and answers with zeros."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def get(self, level: int, index: int) -> bytes:
        self.keys.append((level, index))
        return bytes(32)

    def put(self, level: int, index: int, hash_: bytes) -> None:  # noqa: ARG002
        raise AssertionError("proofs never write")


class _DictStore:
    def __init__(self, hashes: dict[tuple[int, int], bytes]) -> None:
        self.hashes = hashes

    def get(self, level: int, index: int) -> bytes:
        return self.hashes[level, index]

    def put(self, level: int, index: int, hash_: bytes) -> None:  # noqa: ARG002
        raise AssertionError("proofs never write")


def prefetched(
    session: Session, proof: Callable[[merkle.SubtreeStore], list[bytes]]
) -> list[bytes]:
    """Prototype (bench only): run ``proof`` with every subtree read in ONE SELECT.

    The maths runs twice: once to learn which subtrees it reads (pure, cheap),
    once over the fetched hashes.
    """
    recorder = _Recorder()
    proof(recorder)
    found = session.execute(
        select(MerkleNode.level, MerkleNode.idx, MerkleNode.hash).where(
            # OR of key pairs: SQLite answers each from the primary key, where a
            # row-value IN (VALUES ...) scans the table.
            or_(
                *(
                    and_(MerkleNode.level == level, MerkleNode.idx == idx)
                    for level, idx in dict.fromkeys(recorder.keys)
                )
            )
        )
    )
    return proof(_DictStore({(level, idx): value for level, idx, value in found}))


def median_us(fn: Callable[..., object], cases: Sequence[tuple[Any, ...]]) -> float:
    """The median time of ``fn(*case)`` over ``cases``, in microseconds."""
    times = []
    for case in cases:
        started = time.perf_counter()
        fn(*case)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _line(label: str, micros: float, target: float | None = TARGET_PROOF_US) -> None:
    ratio = f"  (target < {target:,.0f} us: {_verdict(micros < target)})" if target else ""
    print(f"  {label:<56}{micros:>9.1f} us{ratio}")


def bench_proofs(directory: Path, n: int, q: int, rng: random.Random) -> None:
    print(f"== 2. proofs on a SQLite log of {n:,} entries ({q} random queries, medians) ==")
    sub = directory / f"log-{n}"
    sub.mkdir()
    engine, sessions = fresh_registry(sub)
    engine.dispose()
    commitments = build_log(sub / "registry.db", n)
    engine = create_engine_for(sqlite_url_for(sub))
    sessions = session_factory(engine)
    try:
        sizes = [rng.randrange(n // 2, n) + 1 for _ in range(q)]
        sizes[0] = n
        indices = [rng.randrange(size) for size in sizes]
        firsts = [rng.randrange(1, size) for size in sizes]
        inclusions = list(zip(indices, sizes, strict=True))
        consistencies = list(zip(firsts, sizes, strict=True))
        with sessions() as session:
            roots = {m: merkle.root(SqlSubtrees(session), m) for m in {*sizes, *firsts}}
            # Warm the page cache as a running registry's would be.
            for i, size in inclusions[:20]:
                merkle.inclusion_proof(SqlSubtrees(session), i, size)
            counter = CountingStore(SqlSubtrees(session))
            merkle.inclusion_proof(counter, indices[0], n)
            inclusion_reads = counter.reads
            counter = CountingStore(SqlSubtrees(session))
            merkle.consistency_proof(counter, firsts[0], n)
            consistency_reads = counter.reads
        print(
            f"  SELECTs per proof at {n:,} (one sample): inclusion {inclusion_reads}, "
            f"consistency {consistency_reads}"
        )

        with sessions() as session:

            def sql_inclusion(i: int, m: int) -> list[bytes]:
                return merkle.inclusion_proof(SqlSubtrees(session), i, m)

            def sql_consistency(f: int, m: int) -> list[bytes]:
                return merkle.consistency_proof(SqlSubtrees(session), f, m)

            def one_select_inclusion(i: int, m: int) -> list[bytes]:
                return prefetched(session, lambda store: merkle.inclusion_proof(store, i, m))

            def one_select_consistency(f: int, m: int) -> list[bytes]:
                return prefetched(session, lambda store: merkle.consistency_proof(store, f, m))

            if one_select_inclusion(indices[1], n) != sql_inclusion(indices[1], n):
                raise AssertionError("the one-SELECT prototype disagrees with SqlSubtrees")
            _line(
                "inclusion, SqlSubtrees + maths (open session)",
                median_us(sql_inclusion, inclusions),
            )
            _line(
                "consistency, SqlSubtrees + maths (open session)",
                median_us(sql_consistency, consistencies),
            )
            _line(
                "inclusion, prototype: all reads in one SELECT",
                median_us(one_select_inclusion, inclusions),
                None,  # a comparison, not the request path
            )
            _line(
                "consistency, prototype: all reads in one SELECT",
                median_us(one_select_consistency, consistencies),
                None,  # a comparison, not the request path
            )

        def full_inclusion(i: int, m: int) -> tuple[int, list[bytes]]:
            with sessions() as session:
                return transparency.inclusion_proof(session, commitments[i], m)

        def full_consistency(f: int, m: int) -> list[bytes]:
            with sessions() as session:
                return transparency.consistency_proof(session, f, m)

        _line(
            "inclusion, transparency.inclusion_proof, own session",
            median_us(full_inclusion, inclusions),
        )
        _line(
            "consistency, transparency.consistency_proof, own session",
            median_us(full_consistency, consistencies),
        )
        checks = [
            (merkle.leaf_hash(commitments[i]), i, m, full_inclusion(i, m)[1], roots[m])
            for i, m in inclusions
        ]
        _line("verify inclusion (client)", median_us(merkle.verify_inclusion, checks))
        cchecks = [(f, m, roots[f], roots[m], full_consistency(f, m)) for f, m in consistencies]
        _line("verify consistency (client)", median_us(merkle.verify_consistency, cchecks))
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=20_000, help="single appends to time")
    parser.add_argument("--batch", type=int, default=1_000, help="rows per batch transaction")
    parser.add_argument("--batch-entries", type=int, default=100_000, help="batched appends")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--big", action="store_true", help="also a log of 10M entries")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-appends", action="store_true")
    parser.add_argument("--single", type=int, default=5_000, help="single-path lookups per run")
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 64], help="single lookups at a time"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CREDENCE_TEST_POSTGRES_URL"),
        help="a PostgreSQL server that may create databases ($CREDENCE_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the single appends")
    args = parser.parse_args(argv)
    sizes: list[int] = list(args.sizes) + ([10_000_000] if args.big else [])
    rng = random.Random(args.seed)
    check_builder()
    with tempfile.TemporaryDirectory(prefix="credence-bench-log-") as tmp:
        directory = Path(tmp)
        if not args.skip_appends:
            appends = directory / "appends"
            appends.mkdir()
            bench_appends(appends, args.entries, args.batch, args.batch_entries, args.profile)
            single = directory / "single"
            single.mkdir()
            bench_single_paths(single, args.postgres, args.single, args.concurrency)
        for n in sizes:
            bench_proofs(directory, n, args.queries, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
