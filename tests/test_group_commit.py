"""Group commit of single lookups, from the requester's and the operator's side (both backends).

Single lookups waiting at the same moment share one transaction
(:meth:`central_registry.lookup_log.LookupLog.write_verdict`). Each keeps its
own fate: a used-up grant or a spent quota refuses its lookup alone, and the
refusal is logged. A registry killed mid-group loses nothing it said was
committed and leaves no part of a group; writers in several processes keep
the log's indexes dense and its tree whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from support import group_writer

from central_registry import database
from central_registry.config import RateLimits
from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.rows import LogRow, dispatched_row, refused_row
from central_registry.lookup_log import LookupLog
from central_registry.models import Grant, LogEntry, MerkleNode
from central_registry.store import grant_rows
from central_registry.transparency import SqlSubtrees
from central_registry.verdict_writes import VerdictOutcome, VerdictWrite
from credence.errors import CredenceError, PermissionDenied, ResourceExhausted
from credence.transparency import merkle
from credence.v1 import common_pb2

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
REQUESTER = "company-x"
WRITER = Path(group_writer.__file__)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine_for(database_url)
    database.upgrade_schema(engine)
    yield engine
    engine.dispose()


class _CountingLog(LookupLog):
    """The lookup log, keeping the size of each group it was handed."""

    def __init__(self, sessions: sessionmaker[Session], limits: RateLimits) -> None:
        super().__init__(sessions, LookupQuotas(limits))
        self.groups: list[int] = []

    def write_verdicts(self, writes: Sequence[VerdictWrite]) -> list[VerdictOutcome]:
        self.groups.append(len(writes))
        return super().write_verdicts(writes)


def _grant(sessions: sessionmaker[Session], grant_id: str, subject: bytes, max_uses: int) -> None:
    with sessions.begin() as session:
        grant_rows.add_grant(
            session,
            grant_id=grant_id,
            kind="consent",
            subject_ref_hex=subject.hex(),
            requester=REQUESTER,
            purpose="credit_assessment",
            scope=["credit"],
            issued_at=NOW,
            not_before=NOW,
            expires_at=NOW + timedelta(days=30),
            max_uses=max_uses,
            data_life_seconds=3600,
            token="header.payload.signature",
        )


def _lookup(
    query_id: str, subject: bytes, grant_id: str = "", error: CredenceError | None = None
) -> VerdictWrite:
    def refusal(reason: CredenceError) -> LogRow | None:
        return refused_row(
            REQUESTER,
            common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=subject),
            purpose=2,
            kinds=[2],
            error=reason,
            now=NOW,
        )

    if error is not None:
        return VerdictWrite(REQUESTER, NOW, refusal, error=error)
    row = dispatched_row(
        query_id=query_id,
        requester=REQUESTER,
        subject_type=1,
        subject_ref=subject,
        purpose=2,
        kinds=(2,),
        grant_id=grant_id,
        issued_at=NOW,
        salt=hashlib.sha256(query_id.encode()).digest()[:16],
        commitment=hashlib.sha256(b"commitment " + query_id.encode()).digest(),
        basis=f"consent {grant_id}" if grant_id else "public register",
        embargo_until=None,
    )
    return VerdictWrite(REQUESTER, NOW, refusal, row=row, grant_id=grant_id)


async def _together(log: LookupLog, writes: Sequence[VerdictWrite]) -> list[int | BaseException]:
    """Submit every write in the same moment, as concurrent lookups would."""
    return await asyncio.gather(
        *(log.write_verdict(write) for write in writes), return_exceptions=True
    )


def _log(sessions: sessionmaker[Session]) -> list[tuple[int, str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(LogEntry.idx, LogEntry.outcome, LogEntry.reason).order_by(LogEntry.idx)
        )
        return [(idx, outcome, reason) for idx, outcome, reason in rows]


def _uses(sessions: sessionmaker[Session], grant_id: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(Grant.uses).where(Grant.grant_id == grant_id)) or 0)


def _assert_tree_matches_log(sessions: sessionmaker[Session]) -> int:
    """Indexes dense from 0, one leaf per entry, and the stored tree's root is the leaves'."""
    with sessions() as session:
        indexes = list(session.scalars(select(LogEntry.idx).order_by(LogEntry.idx)))
        assert indexes == list(range(len(indexes))), "log indexes must be dense from 0"
        leaves = list(session.scalars(select(LogEntry.commitment).order_by(LogEntry.idx)))
        stored_leaves = session.scalar(
            select(func.count()).select_from(MerkleNode).where(MerkleNode.level == 0)
        )
        assert stored_leaves == len(leaves), "every entry has its leaf, and no more"
        if leaves:
            memory = merkle.MemorySubtrees()
            for size, leaf in enumerate(leaves):
                merkle.append(memory, size, merkle.leaf_hash(leaf))
            assert merkle.root(SqlSubtrees(session), len(leaves)) == merkle.root(
                memory, len(leaves)
            )
        return len(indexes)


def test_a_used_up_grant_refuses_only_its_own_lookup(sessions: sessionmaker[Session]) -> None:
    person, other = b"\x01" * 32, b"\x02" * 32
    _grant(sessions, "once", person, max_uses=1)
    log = _CountingLog(sessions, RateLimits())
    writes = [
        _lookup("q0", person, "once"),
        _lookup("q1", other),
        _lookup("q2", person, "once"),  # the grant's second use
        _lookup("q3", other, error=PermissionDenied("not allowed this purpose")),
    ]
    results = asyncio.run(_together(log, writes))

    assert log.groups == [4], "the four concurrent lookups share one transaction"
    assert isinstance(results[0], int)
    assert isinstance(results[1], int)
    assert isinstance(results[2], ResourceExhausted)
    assert "allowed 1 uses, all used" in str(results[2])
    assert isinstance(results[3], PermissionDenied)
    assert _uses(sessions, "once") == 1, "the grant's uses are counted exactly"
    logged = _log(sessions)
    assert [outcome for _, outcome, _ in logged].count("dispatched") == 2
    refusals = sorted(reason for _, outcome, reason in logged if outcome == "refused")
    assert refusals == [
        "PERMISSION_DENIED: not allowed this purpose",
        "RESOURCE_EXHAUSTED: grant once allowed 1 uses, all used: ask the subject for a new grant",
    ]
    assert {results[0], results[1]} <= {idx for idx, _, _ in logged}
    _assert_tree_matches_log(sessions)


def test_a_spent_rate_refuses_only_the_lookups_past_it(sessions: sessionmaker[Session]) -> None:
    log = _CountingLog(sessions, RateLimits(requests_per_second=0.001, burst=2))
    writes = [_lookup(f"q{index}", bytes([index + 1]) * 32) for index in range(4)]
    results = asyncio.run(_together(log, writes))

    assert log.groups == [4]
    assert [isinstance(result, int) for result in results] == [True, True, False, False]
    assert all("rate limit" in str(result) for result in results[2:])
    logged = _log(sessions)
    assert [outcome for _, outcome, _ in logged].count("refused") == 2, "refusals are logged"
    _assert_tree_matches_log(sessions)


def test_a_group_over_the_daily_subjects_is_written_lookup_by_lookup(
    sessions: sessionmaker[Session],
) -> None:
    subjects = [bytes([index]) * 32 for index in range(1, 4)]
    for index, subject in enumerate(subjects):
        _grant(sessions, f"g{index}", subject, max_uses=1)
    log = _CountingLog(sessions, RateLimits(distinct_subjects_per_day=2))
    writes = [_lookup(f"q{i}", subject, f"g{i}") for i, subject in enumerate(subjects)]
    results = asyncio.run(_together(log, writes))

    # The group is refused as a whole, then each lookup is written alone.
    assert log.groups == [3, 1, 1, 1]
    assert [isinstance(result, int) for result in results] == [True, True, False]
    assert "3 distinct subjects today" in str(results[2])
    # The refused lookup's grant is untouched; the others' are used once each.
    assert [_uses(sessions, f"g{index}") for index in range(3)] == [1, 1, 0]
    assert [outcome for _, outcome, _ in _log(sessions)] == ["dispatched", "dispatched", "refused"]
    _assert_tree_matches_log(sessions)


def _writer(url: str, groups: int, size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(groups), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _committed(lines: Sequence[str]) -> dict[int, str]:
    said = {}
    for line in lines:
        index, query_id = line.split()
        said[int(index)] = query_id
    return said


def test_a_registry_killed_mid_group_loses_nothing_committed_and_writes_no_half_group(
    database_url: str, engine: Engine, sessions: sessionmaker[Session]
) -> None:
    size = 8
    writer = _writer(database_url, 0, size)
    lines: list[str] = []
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 120
        while len(lines) < 10 * size and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert len(lines) >= 10 * size, "the writer committed groups before the kill"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        assert writer.stdout is not None
        writer.stdout.close()
    engine.dispose()  # the killed process's connection is gone; start afresh

    size_after = _assert_tree_matches_log(sessions)
    assert size_after % size == 0, "a group is written whole or not at all"
    with sessions() as session:
        stored = dict(session.execute(select(LogEntry.idx, LogEntry.query_id)).all())
    said = _committed(lines)
    assert all(stored.get(index) == query_id for index, query_id in said.items()), (
        "every lookup the writer was told is committed is in the log, at its index"
    )


def test_two_writer_processes_keep_the_log_dense(
    backend: str, database_url: str, sessions: sessionmaker[Session]
) -> None:
    if backend != "postgresql":
        pytest.skip("several registry processes share PostgreSQL, not a SQLite file")
    groups, size = 25, 8
    writers = [_writer(database_url, groups, size) for _ in range(2)]
    outputs = [writer.communicate(timeout=240)[0] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0]

    assert _assert_tree_matches_log(sessions) == 2 * groups * size
    said = [_committed(output.splitlines()) for output in outputs]
    assert not set(said[0]) & set(said[1]), "no index is given to both processes"
    with sessions() as session:
        stored = dict(session.execute(select(LogEntry.idx, LogEntry.query_id)).all())
    assert stored == {**said[0], **said[1]}
