"""A screening message's grant uses are counted in its log transaction (both backends).

Written from the requester's side: a message whose rows share a one-use
consent, or that pushes its requester over the daily subject limit, must not
get more lookups out of the grant than it allows, and a refused message must
leave the grant and the log as they were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from central_registry import database
from central_registry.config import RateLimits
from central_registry.limits.lookup_quotas import LookupQuotas
from central_registry.log.rows import OUTCOME_DISPATCHED, OUTCOME_REFUSED, LogRow, dispatched_row
from central_registry.lookup_log import LookupLog
from central_registry.models import Grant, LogEntry
from central_registry.store import grant_rows
from credence.errors import CredenceError, ResourceExhausted, Revoked

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
REQUESTER = "company-x"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine_for(database_url)
    database.upgrade_schema(engine)
    yield engine
    engine.dispose()


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


def _row(query_id: str, subject: bytes, grant_id: str) -> LogRow:
    return dispatched_row(
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


def _refused(row: LogRow) -> LogRow:
    return replace(
        row,
        query_id="refused-" + row.query_id,
        outcome=OUTCOME_REFUSED,
        grant_id="",
        basis="",
        reason="RESOURCE_EXHAUSTED",
        commitment=hashlib.sha256(b"refused " + row.query_id.encode()).digest(),
    )


def _uses(sessions: sessionmaker[Session], grant_id: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(Grant.uses).where(Grant.grant_id == grant_id)) or 0)


def _log(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with sessions() as session:
        rows = session.execute(select(LogEntry.query_id, LogEntry.outcome).order_by(LogEntry.idx))
        return [(query_id, outcome) for query_id, outcome in rows]


def test_rows_beyond_a_grants_uses_are_refused_alone(sessions: sessionmaker[Session]) -> None:
    person = b"\x01" * 32
    _grant(sessions, "once", person, max_uses=1)
    rows = [_row("q0", person, "once"), _row("q1", b"\x02" * 32, ""), _row("q2", person, "once")]
    seen: list[Mapping[int, CredenceError]] = []

    def refusal_rows(used_up: Mapping[int, CredenceError]) -> Sequence[LogRow]:
        seen.append(dict(used_up))
        return [_refused(rows[position]) for position in sorted(used_up)]

    log = LookupLog(sessions, LookupQuotas(RateLimits()))
    used_up = log.record_screened(rows, REQUESTER, NOW, refusal_rows)

    # The second use of the one-use grant is refused; the other rows go through.
    assert list(used_up) == [2]
    assert isinstance(used_up[2], ResourceExhausted)
    assert seen == [used_up]
    assert _uses(sessions, "once") == 1
    assert _log(sessions) == [
        ("refused-q2", OUTCOME_REFUSED),
        ("q0", OUTCOME_DISPATCHED),
        ("q1", OUTCOME_DISPATCHED),
    ]


def test_a_revoked_grant_refuses_its_rows_and_counts_nothing(
    sessions: sessionmaker[Session],
) -> None:
    person = b"\x03" * 32
    _grant(sessions, "revoked", person, max_uses=5)
    with sessions.begin() as session:
        grant_rows.revoke_grant(session, "revoked", subject_ref_hex=person.hex(), now=NOW)
    log = LookupLog(sessions, LookupQuotas(RateLimits()))
    used_up = log.record_screened(
        [_row("q0", person, "revoked")], REQUESTER, NOW, lambda used_up: []
    )
    assert isinstance(used_up[0], Revoked)
    assert _uses(sessions, "revoked") == 0
    assert _log(sessions) == []


def test_a_message_over_the_daily_subjects_leaves_grants_and_log_unchanged(
    sessions: sessionmaker[Session],
) -> None:
    subjects = [bytes([index]) * 32 for index in range(1, 4)]
    for index, subject in enumerate(subjects):
        _grant(sessions, f"g{index}", subject, max_uses=1)
    log = LookupLog(sessions, LookupQuotas(RateLimits(distinct_subjects_per_day=2)))
    rows = [_row(f"q{index}", subject, f"g{index}") for index, subject in enumerate(subjects)]
    with pytest.raises(ResourceExhausted, match="3 distinct subjects today"):
        log.record_screened(rows, REQUESTER, NOW, lambda used_up: [])
    # Nothing was spent: each grant still allows its one lookup, and the log is empty.
    assert [_uses(sessions, f"g{index}") for index in range(3)] == [0, 0, 0]
    assert _log(sessions) == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(LogEntry)) == 0
