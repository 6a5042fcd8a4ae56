"""The dispute clock's rules, without a federation: config, manifest, evaluation, node tables.

A contest is due its filing time plus the manifest's ``contest_deadline_days``
(30 when the manifest does not say). From the due date until the agency
resolves the contest, the contested records count for nothing. The node
tables are exercised on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema
from test_manifest import KEYS, first_use, make_manifest, raw_sign

from agency_node import database
from agency_node.contests import filed_at
from agency_node.disputes import OverdueWatch, open_disputes, resolve
from agency_node.evaluation import Evaluator, RecordFacts, contest_overdue, counts
from agency_node.models import Record, RecordDispute
from agency_node.single_store import SingleStore
from central_registry.config import RegistryConfig, parse_config, render_config
from credence.contest_clock import AGE_BUCKETS, age_bucket, contest_ages
from credence.envelope import Envelope
from credence.errors import InvalidInput
from credence.keys import SigningKey
from credence.manifest import sign_manifest
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2, manifest_pb2

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DEADLINE = timedelta(days=30)


# --- the registry's configuration -------------------------------------------------


def test_the_deadline_defaults_to_30_days_and_is_written_into_registry_toml(
    tmp_path: Path,
) -> None:
    written = render_config(RegistryConfig(data_dir=tmp_path))
    assert "contest_deadline_days = 30" in written
    assert parse_config(written, tmp_path).contest_deadline_days == 30
    changed = written.replace("contest_deadline_days = 30", "contest_deadline_days = 45")
    assert parse_config(changed, tmp_path).contest_deadline_days == 45


@pytest.mark.parametrize("days", [0, -1, 366])
def test_a_deadline_outside_1_to_365_days_is_refused_with_what_to_fix(
    tmp_path: Path, days: int
) -> None:
    written = render_config(RegistryConfig(data_dir=tmp_path)).replace(
        "contest_deadline_days = 30", f"contest_deadline_days = {days}"
    )
    with pytest.raises(
        InvalidInput, match=rf"contest_deadline_days is {days}; it must be 1\.\.365"
    ):
        parse_config(written, tmp_path)


# --- the manifest -------------------------------------------------------------------


def test_a_manifest_without_the_field_means_30_days() -> None:
    manifest = make_manifest()
    assert not manifest.HasField("contest_deadline_days")
    trusted = first_use(sign_manifest(manifest, [KEYS["A"]]))
    assert (trusted.contest_deadline_days, trusted.contest_deadline) == (30, DEADLINE)


def test_the_manifest_carries_the_federations_deadline() -> None:
    manifest = make_manifest()
    manifest.contest_deadline_days = 7
    trusted = first_use(sign_manifest(manifest, [KEYS["A"]]))
    assert trusted.contest_deadline == timedelta(days=7)


@pytest.mark.parametrize("days", [0, 366])
def test_a_manifest_with_a_deadline_out_of_bounds_is_refused(days: int) -> None:
    manifest = make_manifest()
    manifest.contest_deadline_days = days
    with pytest.raises(InvalidInput, match=f"contest_deadline_days {days} is outside 1..365"):
        first_use(raw_sign(manifest, "A"))


# --- when the clock starts ------------------------------------------------------------


def test_the_clock_starts_at_the_registrys_filing_time_never_later_than_now() -> None:
    contest = agency_pb2.Contest(contest_id="c1")
    assert filed_at(contest, NOW) == NOW, "no filing time: the clock starts on receipt"
    contest.filed_at.FromDatetime(NOW - DAY)
    assert filed_at(contest, NOW) == NOW - DAY
    contest.filed_at.FromDatetime(NOW + DAY)
    assert filed_at(contest, NOW) == NOW, "a filing time in the future cannot delay the clock"


# --- evaluation -------------------------------------------------------------------------

JUDGMENT = RecordFacts(
    kind="court_judgment",
    category="judgment_debt",
    status="active",
    occurred_at=NOW - 100 * DAY,
    expires_at=None,
    disputed=True,
)


def test_a_record_counts_until_its_contest_falls_due_and_not_from_then() -> None:
    due = NOW + DAY
    contested = replace(JUDGMENT, contest_due_at=due)
    before, at = due - timedelta(microseconds=1), due
    assert counts(contested, before)
    assert not contest_overdue(contested, before)
    assert not counts(contested, at)
    assert contest_overdue(contested, at)
    assert counts(replace(JUDGMENT, contest_due_at=None), at + 1000 * DAY)


def test_an_overdue_record_lists_nothing_and_scores_nothing(
    scorecard: manifest_pb2.Scorecard,
) -> None:
    evaluator = Evaluator(scorecard, ["court_judgment", "loan_default"])
    default = RecordFacts(
        kind="loan_default", category="consumer_loan", status="active",
        occurred_at=NOW - 50 * DAY, expires_at=None, disputed=True,
    )  # fmt: skip
    records = [replace(JUDGMENT, contest_due_at=NOW + DAY), replace(default, contest_due_at=NOW)]
    counted = evaluator.evaluate(records, NOW - DAY)
    assert counted.blacklist.listed
    assert counted.blacklist.disputed
    assert counted.credit.disputed
    assert counted.credit != evaluator.empty_credit

    overdue = evaluator.evaluate(records, NOW + DAY)
    assert not overdue.blacklist.listed
    assert overdue.credit == evaluator.empty_credit, "as if the records did not exist"


@pytest.fixture
def scorecard() -> manifest_pb2.Scorecard:
    return default_scorecard()


# --- age buckets --------------------------------------------------------------------------


def test_age_buckets_cover_every_age_and_count_overdue_open_contests() -> None:
    assert [age_bucket(timedelta(days=d)) for d in (-1, 0, 6, 7, 13, 14, 29, 30, 59, 60, 900)] == [
        "0-7d", "0-7d", "0-7d", "7-14d", "7-14d", "14-30d", "14-30d", "30-60d", "30-60d",
        "60d+", "60d+",
    ]  # fmt: skip
    ages = contest_ages(
        [(NOW - 2 * DAY, NOW + DAY), (NOW - 40 * DAY, NOW - 10 * DAY), (NOW - 8 * DAY, None)],
        NOW,
    )
    assert list(ages.by_age) == [label for _, label in AGE_BUCKETS]
    assert ages.by_age == {"0-7d": 1, "7-14d": 1, "14-30d": 0, "30-60d": 1, "60d+": 0}
    assert ages.overdue == 1, "a contest without a due date (filed before the clock) is not"


# --- the node's tables ----------------------------------------------------------------------


@pytest.fixture
def schema() -> Schema:
    return database


def _contested(session: Session, record_id: str, *contests: tuple[str, datetime]) -> int:
    """A record with an open dispute per (contest id, filing time); its clock from the oldest."""
    record = Record(
        subject_ref=bytes(32), subject_type="person", record_id=record_id,
        kind="court_judgment", category="judgment_debt", status="active",
        occurred_at=NOW - 100 * DAY, expires_at=NOW + 1000 * DAY, content_hash=bytes(32),
        updated_at=NOW, disputed=True, contest_due_at=min(at for _, at in contests) + DEADLINE,
    )  # fmt: skip
    record.disputes.extend(
        RecordDispute(contest_id=contest_id, state="open", note="wrong", at=at)
        for contest_id, at in contests
    )
    session.add(record)
    session.flush()
    return record.id


def _resolve(engine: Engine, contest_id: str, outcome: str) -> int:
    told: list[Envelope] = []
    touched = resolve(
        engine, contest_id, outcome, note="checked", member_id="court",
        signing_key=SigningKey.generate(), now=NOW, deadline=DEADLINE, report=told.append,
    )  # fmt: skip
    assert len(told) == 1
    return touched


def test_a_resolution_restarts_the_clock_from_the_next_open_contest_or_clears_it(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    first, second = NOW - 40 * DAY, NOW - 5 * DAY
    with sessions.begin() as session:
        both = _contested(session, "r1", ("old", first), ("new", second))
        only = _contested(session, "r2", ("old", first))

    assert _resolve(engine, "old", "upheld") == 2
    with sessions() as session:
        clocks = dict(session.execute(select(Record.id, Record.contest_due_at)).all())
        disputed = dict(session.execute(select(Record.id, Record.disputed)).all())
    assert clocks == {both: second + DEADLINE, only: None}
    assert disputed == {both: True, only: False}

    assert _resolve(engine, "new", "corrected") == 1
    with sessions() as session:
        assert session.get(Record, both).contest_due_at is None  # type: ignore[union-attr]


def test_the_store_reads_the_clock_and_an_open_contest_stays_a_dispute(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        pk = _contested(session, "r1", ("c1", NOW - DAY))
        # A re-import rewrites the disputed flag from its file; the contest stays open.
        session.get(Record, pk).disputed = False  # type: ignore[union-attr]
    (facts,) = SingleStore(engine).records_of_many([bytes(32)])[bytes(32)]
    assert facts.contest_due_at == NOW - DAY + DEADLINE
    assert facts.disputed, "an open contest shows as a dispute whatever the import said"


def test_open_disputes_say_when_each_is_due_and_the_watch_warns_once(
    engine: Engine, sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    with sessions.begin() as session:
        _contested(session, "r1", ("late", NOW - 31 * DAY))
        _contested(session, "r2", ("fresh", NOW - DAY))
    with sessions() as session:
        rows = {row.contest_id: row for row in open_disputes(session, DEADLINE)}
    assert rows["late"].due_at == NOW - DAY
    assert rows["late"].overdue(NOW)
    assert rows["fresh"].due_at == NOW + 29 * DAY
    assert not rows["fresh"].overdue(NOW)
    assert rows["late"].age(NOW) == 31 * DAY

    watch = OverdueWatch(sessions, lambda: DEADLINE)
    caplog.set_level(logging.WARNING, logger="agency_node.disputes")
    assert watch.check(NOW) == ["late"]
    assert watch.check(NOW + DAY) == [], "warned once"
    assert watch.check(NOW + 29 * DAY) == ["fresh"]
    lines = [r.getMessage() for r in caplog.records if r.name == "agency_node.disputes"]
    assert len(lines) == 2
    assert "contest late is overdue: it was due by 2026-11-27T10:00:00Z" in lines[0]
    assert bytes(32).hex() not in " ".join(lines), "no subject in the node's log"
