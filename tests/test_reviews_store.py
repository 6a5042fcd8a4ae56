"""Human reviews in the registry's database (SQLite and PostgreSQL): asking, bounds, deciding.

From the subject's side and the attacker's: a review names a verdict about
the proven subject only, once while open, within bounds; what the log keeps
names ids, never the statement; a decision is signed once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from central_registry import database, review_notices, reviews
from central_registry.log.entries import entries_for_subject
from central_registry.models import LogEntry, Review, VerdictRecord
from central_registry.transparency import log_size
from central_registry.verdict_records import erase_expired_records
from credence import payloads
from credence.envelope import Envelope, verify_message
from credence.errors import FailedPrecondition, InvalidInput, NotFound, ResourceExhausted
from credence.keys import KeySet, SigningKey
from credence.statements import MAX_STATEMENT
from credence.v1 import agency_pb2, registry_pb2

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
ME, OTHER = bytes([1]) * 32, bytes([2]) * 32


@pytest.fixture
def schema() -> Schema:
    """The registry's database."""
    return database


def _verdict(session: Session, verdict_id: str, subject: bytes = ME, **changes: object) -> None:
    values: dict[str, object] = {
        "verdict_id": verdict_id, "query_id": f"q-{verdict_id}", "subject_type": 1,
        "subject_ref": subject, "requester": "lender-1", "answered": "court-1,bank-1",
        "issued_at": NOW - timedelta(minutes=1), "expires_at": NOW + timedelta(days=1),
        "explanation": None,
    }  # fmt: skip
    values.update(changes)
    session.add(VerdictRecord(**values))


def _ask(session: Session, verdict_id: str, subject: bytes = ME, statement: str = "paid") -> Review:
    return reviews.open_review(
        session, verdict_id=verdict_id, subject_ref=subject, statement=statement,
        registry_id="registry", now=NOW,
    )  # fmt: skip


def _count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Review)) or 0)


def test_a_review_is_kept_open_and_logged_under_the_subject_with_ids_only(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _verdict(session, "v1")
    with sessions.begin() as session:
        review = _ask(session, "v1", statement="  The judgment was paid\n\tin March.  ")
    assert review.state == "open"
    assert review.statement == "The judgment was paid\n\tin March."  # trimmed
    assert review.query_id == "q-v1"
    assert review.agencies == ""
    with sessions() as session:
        assert log_size(session) == 1
        (entry,) = entries_for_subject(session, ME, NOW)
        assert entry.idx == review.log_index == 0
        assert entry.query_id == review.review_id
        assert entry.requester == "registry"
        assert entry.reason == "review of verdict v1"
        assert entry.basis == "human review"
        assert "paid" not in " ".join(str(v) for v in vars(entry).values())
        assert review_notices.untold(session, review) == ["court-1", "bank-1"]
        record = reviews.review_record(review)
    assert (record.state, record.verdict_id, record.log_index) == ("open", "v1", 0)
    assert not record.HasField("outcome")


def test_another_subjects_or_an_unknown_or_expired_verdict_is_not_found_and_nothing_kept(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _verdict(session, "theirs", subject=OTHER)
        _verdict(session, "old", expires_at=NOW - timedelta(seconds=1))
    for verdict_id in ("theirs", "unknown", "old"):
        with pytest.raises(NotFound) as refused, sessions.begin() as session:
            _ask(session, verdict_id)
        # The same words whether the verdict exists for someone else or not at all.
        assert str(refused.value).startswith(f"no verdict {verdict_id!r} about you")
    with sessions() as session:
        assert _count(session) == 0
        assert log_size(session) == 0


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("", r"statement of 1\.\.4000"),
        ("   ", r"statement of 1\.\.4000"),
        ("x" * (MAX_STATEMENT + 1), r"statement of 1\.\.4000"),
        ("paid\x1b[2J\x1b]0;owned\x07", "control characters"),
        ("pa\x85id", "control characters"),
    ],
)
def test_an_empty_oversized_or_escape_laden_statement_is_refused_and_nothing_kept(
    sessions: sessionmaker[Session], statement: str, reason: str
) -> None:
    with sessions.begin() as session:
        _verdict(session, "v1")
    with pytest.raises(InvalidInput, match=reason), sessions.begin() as session:
        _ask(session, "v1", statement=statement)
    with sessions() as session:
        assert _count(session) == 0
        assert log_size(session) == 0


def test_a_second_review_while_one_is_open_names_the_open_one_and_after_a_decision_is_taken(
    sessions: sessionmaker[Session],
) -> None:
    key = SigningKey.generate()
    with sessions.begin() as session:
        _verdict(session, "v1")
    with sessions.begin() as session:
        first = _ask(session, "v1").review_id
    still_open = f"review {first} of verdict v1 is still open"
    with pytest.raises(FailedPrecondition, match=still_open), sessions.begin() as session:
        _ask(session, "v1")
    with sessions.begin() as session:
        reviews.decide(session, first, outcome="upheld", statement="right", reviewer="alice",
                       key=key, now=NOW)  # fmt: skip
    with sessions.begin() as session:
        assert _ask(session, "v1").review_id != first
    with sessions() as session:
        assert _count(session) == 2
        assert log_size(session) == 2


def test_a_subject_has_at_most_the_bound_of_open_reviews(sessions: sessionmaker[Session]) -> None:
    bound = reviews.MAX_OPEN_PER_SUBJECT
    with sessions.begin() as session:
        for index in range(bound + 1):
            _verdict(session, f"v{index}")
        _verdict(session, "elsewhere", subject=OTHER)
    for index in range(bound):
        with sessions.begin() as session:
            _ask(session, f"v{index}")
    too_many = f"you have {bound} reviews open"
    with pytest.raises(ResourceExhausted, match=too_many), sessions.begin() as session:
        _ask(session, f"v{bound}")
    with sessions.begin() as session:
        _ask(session, "elsewhere", subject=OTHER)  # another subject's bound is their own
    with sessions() as session:
        assert _count(session) == bound + 1
        assert log_size(session) == bound + 1


def test_a_decision_is_signed_once_and_a_second_refused_leaving_the_first(
    sessions: sessionmaker[Session],
) -> None:
    key = SigningKey.generate()
    with sessions.begin() as session:
        _verdict(session, "v1")
    with sessions.begin() as session:
        review_id = _ask(session, "v1").review_id
    for outcome, statement, error in (
        ("removed", "x", InvalidInput),
        ("upheld", " ", InvalidInput),
    ):
        with pytest.raises(error), sessions.begin() as session:
            reviews.decide(session, review_id, outcome=outcome, statement=statement,
                           reviewer="alice", key=key, now=NOW)  # fmt: skip
    with sessions.begin() as session:
        reviews.decide(session, review_id, outcome="corrected", statement=" record fixed ",
                       reviewer="alice", key=key, now=NOW)  # fmt: skip
    decided = r"decided already \(corrected by alice\)"
    with pytest.raises(FailedPrecondition, match=decided), sessions.begin() as session:
        reviews.decide(session, review_id, outcome="upheld", statement="no",
                       reviewer="mallory", key=key, now=NOW)  # fmt: skip
    with pytest.raises(NotFound), sessions.begin() as session:
        reviews.decide(session, "nope", outcome="upheld", statement="no", reviewer="alice",
                       key=key, now=NOW)  # fmt: skip
    with sessions() as session:
        review = session.get(Review, review_id)
        assert review is not None
        assert review.outcome is not None
        record = reviews.review_record(review)
    assert (review.state, review.reviewer, review.outcome_statement) == (
        "corrected", "alice", "record fixed",
    )  # fmt: skip
    signed = verify_message(
        Envelope.from_proto(record.outcome), payloads.REVIEW_OUTCOME, KeySet([key.public]),
        registry_pb2.ReviewOutcome,
    )  # fmt: skip
    assert (signed.review_id, signed.verdict_id, signed.outcome, signed.reviewer) == (
        review_id, "v1", "corrected", "alice",
    )  # fmt: skip
    assert bytes(signed.subject.ref) == ME


def test_notices_are_one_per_agency_and_the_told_ones_are_not_told_again(
    sessions: sessionmaker[Session],
) -> None:
    key = SigningKey.generate()
    with sessions.begin() as session:
        _verdict(session, "v1")
    with sessions.begin() as session:
        review = _ask(session, "v1", statement="look again")
    notice = verify_message(
        review_notices.signed_notice(review, "court-1", key), payloads.REVIEW_NOTICE,
        KeySet([key.public]), agency_pb2.ReviewNotice,
    )  # fmt: skip
    assert (notice.agency, notice.review_id, notice.query_id, notice.statement) == (
        "court-1", review.review_id, "q-v1", "look again",
    )  # fmt: skip
    with sessions.begin() as session:
        review_notices.mark_told(session, review.review_id, ["court-1"])
    with sessions() as session:
        stored = session.get(Review, review.review_id)
        assert stored is not None
        assert review_notices.untold(session, stored) == ["bank-1"]
        # Only reviews older than the request's own attempt are retried.
        assert review_notices.open_with_untold(session, NOW) == []
        assert review_notices.open_with_untold(session, NOW + review_notices.RETRY_AFTER) == [
            review.review_id
        ]
    with sessions.begin() as session:
        review_notices.mark_told(session, review.review_id, ["bank-1", "court-1"])
    with sessions() as session:
        stored = session.get(Review, review.review_id)
        assert stored is not None
        assert stored.agencies == "court-1,bank-1"
        assert review_notices.open_with_untold(session, NOW + timedelta(days=1)) == []


def test_the_retry_pass_reaches_an_untold_review_behind_a_full_batch_of_told_ones(
    sessions: sessionmaker[Session],
) -> None:
    # More open reviews than one pass takes, all told in full or with their
    # verdict erased, asked before the one an agency was not told of: none of
    # them may fill the pass and hide it.
    crowd = review_notices.RETRY_BATCH + 5
    with sessions.begin() as session:
        for index in range(crowd + 1):
            subject = index.to_bytes(32, "big")
            _verdict(session, f"v{index}", subject, issued_at=NOW - timedelta(hours=2))
            session.flush()
            review = reviews.open_review(
                session, verdict_id=f"v{index}", subject_ref=subject, statement="look",
                registry_id="registry", now=NOW - timedelta(minutes=crowd + 1 - index),
            )  # fmt: skip
            if index < crowd:
                review_notices.mark_told(session, review.review_id, ["court-1", "bank-1"])
            else:
                last = review.review_id
        # One more, untold, whose verdict row is gone: nobody is left to tell.
        _verdict(session, "gone", OTHER)
        session.flush()
        reviews.open_review(
            session, verdict_id="gone", subject_ref=OTHER, statement="look",
            registry_id="registry", now=NOW - timedelta(hours=1),
        )  # fmt: skip
        session.delete(session.get(VerdictRecord, "gone"))
    with sessions() as session:
        assert review_notices.open_with_untold(session, NOW + timedelta(hours=1)) == [last]


def test_open_reviews_are_counted_by_age_and_queued_oldest_first(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        for index in range(3):
            _verdict(session, f"v{index}")
    for index, age in enumerate((timedelta(hours=1), timedelta(days=3), timedelta(days=40))):
        with sessions.begin() as session:
            reviews.open_review(
                session, verdict_id=f"v{index}", subject_ref=ME, statement="s",
                registry_id="registry", now=NOW - age,
            )  # fmt: skip
    with sessions() as session:
        assert reviews.open_review_ages(session, NOW + timedelta(hours=2)) == {
            "under_1d": 1, "1d_7d": 1, "7d_30d": 0, "over_30d": 1,
        }  # fmt: skip
        assert [r.verdict_id for r in reviews.open_reviews(session)] == ["v2", "v1", "v0"]
        assert [r.verdict_id for r in reviews.reviews_for(session, ME)] == ["v0", "v1", "v2"]
        assert reviews.reviews_for(session, OTHER) == []
        assert session.scalar(select(func.count()).select_from(LogEntry)) == 3


def test_decided_reviews_go_once_their_verdict_row_and_the_kept_time_are_past(
    sessions: sessionmaker[Session],
) -> None:
    key = SigningKey.generate()
    with sessions.begin() as session:
        _verdict(session, "v-old", expires_at=NOW + timedelta(days=1))
        _verdict(session, "v-open", expires_at=NOW + timedelta(days=1))
        _verdict(session, "v-long", expires_at=NOW + timedelta(days=400))
    with sessions.begin() as session:
        old, still_open, long_lived = (
            _ask(session, v).review_id for v in ("v-old", "v-open", "v-long")
        )
    with sessions.begin() as session:
        for review_id in (old, long_lived):
            reviews.decide(session, review_id, outcome="upheld", statement="checked",
                           reviewer="alice", key=key, now=NOW)  # fmt: skip
    later = NOW + reviews.DECIDED_KEPT + timedelta(days=1)
    with sessions.begin() as session:
        # Kept time not yet past: nothing goes, though v-old's row has expired.
        assert erase_expired_records(session, NOW + timedelta(days=2)) == 2
        assert reviews.erase_decided_reviews(session, NOW + timedelta(days=2)) == 0
    with sessions.begin() as session:
        assert reviews.erase_decided_reviews(session, later) == 1
    with sessions() as session:
        left = {review.review_id: review.state for review in session.scalars(select(Review))}
    # The open one stays however old; the decided one whose verdict row lives stays.
    assert left == {still_open: "open", long_lived: "upheld"}
