"""Served verdicts' rows in the registry's database (SQLite and PostgreSQL).

What a subject reads of them: their own explanations only, newest first,
bounded, never one under a mandate's embargo or past its data life; the
verdict served for each of their lookups; rows written by concurrent lookups
in one transaction, and gone at their expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from central_registry import database
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow
from central_registry.models import VerdictRecord
from central_registry.verdict_records import (
    VerdictRecords,
    VerdictRow,
    erase_expired_records,
    explanations_for_subject,
    insert_rows,
    verdict_ids,
)

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
ME, OTHER = bytes([1]) * 32, bytes([2]) * 32


@pytest.fixture
def schema() -> Schema:
    """The registry's database."""
    return database


def _served(
    session: Session,
    name: str,
    *,
    subject: bytes = ME,
    minutes_ago: int = 1,
    life: timedelta = timedelta(days=1),
    explanation: bytes | None = b"signed",
    embargo_until: datetime | None = None,
) -> VerdictRow:
    """Log lookup ``q-<name>`` and write the row of its verdict ``v-<name>``."""
    issued_at = NOW - timedelta(minutes=minutes_ago)
    append_entries(session, [LogRow(
        query_id=f"q-{name}", requester="lender-1", subject_type=1, subject_ref=subject,
        purpose=2, kinds="2", grant_id="g1", basis="consent g1", outcome="dispatched",
        reason="", issued_at=issued_at, salt=hashlib.sha256(name.encode()).digest()[:16],
        commitment=hashlib.sha256(b"leaf " + name.encode()).digest(), embargo_until=embargo_until,
    )])  # fmt: skip
    row = VerdictRow(
        verdict_id=f"v-{name}", query_id=f"q-{name}", subject_type=1, subject_ref=subject,
        requester="lender-1", answered=("bank-1", "court-1"), issued_at=issued_at,
        expires_at=issued_at + life, explanation=explanation and explanation + name.encode(),
    )  # fmt: skip
    insert_rows(session, [row])
    return row


def test_a_subject_reads_its_own_explanations_newest_first(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _served(session, "old", minutes_ago=30)
        _served(session, "new", minutes_ago=2)
        _served(session, "blacklist", minutes_ago=1, explanation=None)
        _served(session, "theirs", subject=OTHER)
        _served(session, "expired", minutes_ago=90, life=timedelta(minutes=60))
        _served(session, "embargoed", embargo_until=NOW + timedelta(hours=3))
    with sessions() as session:
        assert explanations_for_subject(session, ME, NOW) == [b"signednew", b"signedold"]
        assert explanations_for_subject(session, ME, NOW, limit=1) == [b"signednew"]
        assert explanations_for_subject(session, OTHER, NOW) == [b"signedtheirs"]
        # Once the mandate's embargo ends, its explanation shows with the rest.
        later = explanations_for_subject(session, ME, NOW + timedelta(hours=3))
        assert later[0] == b"signedembargoed"
        stored = session.get(VerdictRecord, "v-old")
        assert stored is not None
        assert stored.answered == "bank-1,court-1"


def test_each_lookup_names_the_verdict_served_for_it(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _served(session, "a")
        _served(session, "b", explanation=None)
        _served(session, "c", subject=OTHER)
        _served(session, "gone", minutes_ago=90, life=timedelta(minutes=60))
    asked = ["q-a", "q-b", "q-c", "q-gone", "q-none"]
    with sessions() as session:
        assert verdict_ids(session, ME, asked, NOW) == {"q-a": "v-a", "q-b": "v-b"}
        assert verdict_ids(session, ME, [], NOW) == {}


def test_rows_are_erased_at_their_data_life(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        short = _served(session, "short", life=timedelta(hours=1))
        _served(session, "long", life=timedelta(days=7))
    with sessions.begin() as session:
        assert erase_expired_records(session, short.expires_at - timedelta(seconds=1)) == 0
        assert erase_expired_records(session, short.expires_at) == 1
    with sessions() as session:
        assert [row.verdict_id for row in session.scalars(select(VerdictRecord))] == ["v-long"]
        assert explanations_for_subject(session, ME, NOW) == [b"signedlong"]


def test_concurrent_lookups_write_their_rows_together(sessions: sessionmaker[Session]) -> None:
    records = VerdictRecords(sessions)
    rows = [
        VerdictRow(
            verdict_id=f"v-{index}",
            query_id=f"q-{index}",
            subject_type=1,
            subject_ref=ME,
            requester="lender-1",
            answered=("bank-1",),
            issued_at=NOW,
            expires_at=NOW + timedelta(days=1),
        )
        for index in range(40)
    ]

    async def write_all() -> None:
        await asyncio.gather(*(records.record(row) for row in rows))

    asyncio.run(write_all())
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(VerdictRecord)) == len(rows)
