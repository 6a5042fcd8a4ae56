"""Human review of a verdict: the subject's request, the agencies' notices, the decision.

A subject names a verdict about them (``verdict_records``) and says what a
person should look at. The registry keeps the review open, appends a row to
its transparency log (ids only, :func:`central_registry.log.rows.review_row`),
and tells every agency whose answer the verdict was built from with a
:class:`~credence.v1.agency_pb2.ReviewNotice` it signs, one per agency (the
audience), over the fan-out's mTLS channels; one it cannot reach is told
later (:mod:`central_registry.review_notices`). An operator decides (upheld
or corrected, with a statement): the registry signs a
:class:`~credence.v1.registry_pb2.ReviewOutcome` the subject reads.

Functions taking a ``Session`` run in the caller's transaction.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from central_registry.log.entries import append_entries
from central_registry.log.rows import review_row
from central_registry.models import Review, VerdictRecord, split_names
from central_registry.transparency import lock_log
from credence import payloads
from credence.envelope import Envelope, sign
from credence.errors import (
    FailedPrecondition,
    InvalidInput,
    NotFound,
    ResourceExhausted,
)
from credence.keys import SigningKey
from credence.statements import check_statement
from credence.v1 import common_pb2, registry_pb2

__all__ = [
    "DECIDED_KEPT",
    "MAX_LISTED",
    "MAX_OPEN_PER_SUBJECT",
    "OUTCOMES",
    "decide",
    "erase_decided_reviews",
    "open_review",
    "open_reviews",
    "review_record",
    "reviews_for",
]

_log = logging.getLogger(__name__)

#: What an operator may decide.
OUTCOMES = ("upheld", "corrected")
#: Open reviews a subject may have at once: each reaches people, so it is bounded.
MAX_OPEN_PER_SUBJECT = 20
#: How long a decided review is kept at least, so the subject can read its
#: outcome: it goes then, or with its verdict's row if that lives longer.
DECIDED_KEPT = timedelta(days=90)
#: Reviews ListMyReviews returns at most (the newest).
MAX_LISTED = 200


def open_review(
    session: Session,
    *,
    verdict_id: str,
    subject_ref: bytes,
    statement: str,
    registry_id: str,
    now: datetime,
) -> Review:
    """Keep a subject's request for review of one of their verdicts, open and logged.

    Raises:
        InvalidInput: an empty or too long statement.
        NotFound: no such verdict about this subject (whether it exists about
            someone else is not said).
        FailedPrecondition: a review of the verdict is open already.
        ResourceExhausted: the subject has :data:`MAX_OPEN_PER_SUBJECT` open reviews.
    """
    statement = check_statement(statement, what="a review")
    # The log's writer lock first: two requests for one verdict take turns.
    lock_log(session)
    verdict = session.get(VerdictRecord, verdict_id)
    if verdict is None or verdict.subject_ref != subject_ref or verdict.expires_at <= now:
        raise NotFound(
            f"no verdict {verdict_id!r} about you: copy the verdict id from "
            "`credence me lookups` or `credence me explanations`"
        )
    already = session.scalar(
        select(Review.review_id).where(Review.verdict_id == verdict_id, Review.state == "open")
    )
    if already is not None:
        raise FailedPrecondition(
            f"review {already} of verdict {verdict_id} is still open: wait for its outcome "
            "(`credence me reviews`)"
        )
    open_count = session.scalar(
        select(func.count())
        .select_from(Review)
        .where(Review.subject_ref == subject_ref, Review.state == "open")
    )
    if (open_count or 0) >= MAX_OPEN_PER_SUBJECT:
        raise ResourceExhausted(
            f"you have {MAX_OPEN_PER_SUBJECT} reviews open: ask again once one is decided"
        )
    review_id = uuid.uuid4().hex
    row = review_row(
        review_id=review_id, verdict_id=verdict_id, registry=registry_id,
        subject_type=verdict.subject_type, subject_ref=subject_ref, now=now,
    )  # fmt: skip
    log_index = append_entries(session, [row])
    review = Review(
        review_id=review_id,
        verdict_id=verdict_id,
        query_id=verdict.query_id,
        subject_type=verdict.subject_type,
        subject_ref=subject_ref,
        statement=statement,
        state="open",
        agencies="",
        untold=verdict.answered,
        requested_at=now,
        log_index=log_index,
    )
    session.add(review)
    session.flush()
    _log.info(
        "review %s of verdict %s (query %s) requested: log entry %d",
        review_id, verdict_id, verdict.query_id, log_index,
    )  # fmt: skip
    return review


def decide(
    session: Session,
    review_id: str,
    *,
    outcome: str,
    statement: str,
    reviewer: str,
    key: SigningKey,
    now: datetime,
) -> Review:
    """Decide an open review: sign the outcome and keep it.

    Raises:
        InvalidInput: an unknown outcome, or an empty or too long statement.
        NotFound: no such review.
        FailedPrecondition: it was decided already.
    """
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome[:20]!r}")
    statement = check_statement(statement, what="a decision")
    review = session.get(Review, review_id, with_for_update=True)
    if review is None:
        raise NotFound(
            f"no review {review_id[:64]!r}: list them with `credence registry reviews list`"
        )
    if review.state != "open":
        raise FailedPrecondition(
            f"review {review_id} was decided already ({review.state} by {review.reviewer})"
        )
    message = registry_pb2.ReviewOutcome(
        review_id=review.review_id,
        verdict_id=review.verdict_id,
        subject=common_pb2.SubjectRef(type=review.subject_type, ref=review.subject_ref),  # type: ignore[arg-type]
        outcome=outcome,
        statement=statement,
        reviewer=reviewer,
    )
    message.decided_at.FromDatetime(now)
    envelope = sign(payloads.REVIEW_OUTCOME, message.SerializeToString(), [key])
    review.state = outcome
    review.decided_at = now
    review.reviewer = reviewer
    review.outcome_statement = statement
    review.outcome = envelope.to_bytes()
    _log.info("review %s of verdict %s %s by %s", review_id, review.verdict_id, outcome, reviewer)
    return review


def review_record(review: Review) -> registry_pb2.ReviewRecord:
    """The review as the subject sees it."""
    record = registry_pb2.ReviewRecord(
        review_id=review.review_id,
        verdict_id=review.verdict_id,
        query_id=review.query_id,
        statement=review.statement,
        state=review.state,
        agencies=split_names(review.agencies),
        log_index=review.log_index or 0,
    )
    record.requested_at.FromDatetime(review.requested_at)
    if review.outcome is not None:
        record.outcome.CopyFrom(Envelope.from_bytes(review.outcome).to_proto())
    return record


def reviews_for(session: Session, subject_ref: bytes) -> list[Review]:
    """A subject's reviews, newest first (at most :data:`MAX_LISTED`)."""
    return list(
        session.scalars(
            select(Review)
            .where(Review.subject_ref == subject_ref)
            .order_by(Review.requested_at.desc(), Review.review_id)
            .limit(MAX_LISTED)
        )
    )


def open_reviews(session: Session, limit: int = MAX_LISTED) -> list[Review]:
    """Open reviews, oldest first: the operator's queue."""
    return list(
        session.scalars(
            select(Review).where(Review.state == "open").order_by(Review.requested_at).limit(limit)
        )
    )


#: Age buckets of open reviews (the metrics' label values): upper bounds in days.
AGE_BUCKETS = (("under_1d", 1), ("1d_7d", 7), ("7d_30d", 30), ("over_30d", None))


def open_review_ages(session: Session, now: datetime) -> dict[str, int]:
    """How many reviews are open in each age bucket."""
    counts = dict.fromkeys((name for name, _ in AGE_BUCKETS), 0)
    for requested_at in session.scalars(select(Review.requested_at).where(Review.state == "open")):
        days = (now - requested_at).total_seconds() / 86400
        name = next(name for name, bound in AGE_BUCKETS if bound is None or days < bound)
        counts[name] += 1
    return counts


def erase_decided_reviews(session: Session, now: datetime) -> int:
    """Delete the decided reviews past :data:`DECIDED_KEPT` whose verdict row is gone.

    An open review stays until a person decides it, however old. Returns how many went.
    """
    kept_verdicts = select(VerdictRecord.verdict_id)
    result = session.execute(
        delete(Review).where(
            Review.state != "open",
            Review.decided_at <= now - DECIDED_KEPT,
            Review.verdict_id.not_in(kept_verdicts),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
