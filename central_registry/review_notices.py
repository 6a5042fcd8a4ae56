"""Telling the agencies of a review: signed notices over the fan-out, and retries.

Each agency whose answer a reviewed verdict was built from gets a
:class:`~credence.v1.agency_pb2.ReviewNotice` signed by the registry for it
alone (``AgencyNodeService.NotifyReview``), over the fan-out's mTLS channels
under the lookups' deadline. An agency not reached (down, no longer active,
refusing) does not fail the subject's request: ``Review.agencies`` keeps who
was told, and :func:`retry_notices_periodically` tells the others every
:data:`RETRY_SECONDS`, while the review is open and its verdict's row is kept
(a node keeps a notice once, so a repeat is harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import grpc
import grpc.aio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from central_registry.fanout import AgencyTarget, FanOut
from central_registry.models import Review, VerdictRecord, join_names, split_names
from credence import payloads
from credence.clock import Clock
from credence.envelope import Envelope, sign
from credence.errors import CredenceError, NotFound
from credence.keys import SigningKey
from credence.manifest import TrustedManifest
from credence.storage import reader
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2

__all__ = [
    "RETRY_AFTER",
    "RETRY_SECONDS",
    "retry_notices",
    "retry_notices_periodically",
    "signed_notice",
    "tell_agencies",
]

_log = logging.getLogger(__name__)

#: Open reviews one retry pass looks at (the oldest).
RETRY_BATCH = 100
#: A review is retried by the background pass only this long after it was asked
#: for, so the pass does not race the request's own notices.
RETRY_AFTER = timedelta(seconds=30)
#: Seconds between two passes telling agencies a review's request could not reach.
RETRY_SECONDS = 30.0


def signed_notice(review: Review, agency: str, key: SigningKey) -> Envelope:
    """The registry-signed notice of ``review`` for ``agency`` alone."""
    notice = agency_pb2.ReviewNotice(
        review_id=review.review_id,
        verdict_id=review.verdict_id,
        query_id=review.query_id,
        subject=common_pb2.SubjectRef(type=review.subject_type, ref=review.subject_ref),  # type: ignore[arg-type]
        statement=review.statement,
        agency=agency,
    )
    notice.requested_at.FromDatetime(review.requested_at)
    return sign(payloads.REVIEW_NOTICE, notice.SerializeToString(), [key])


def untold(session: Session, review: Review) -> list[str]:
    """The agencies the verdict was built from that have not been told of ``review``."""
    if session.get(VerdictRecord, review.verdict_id) is None:
        return []  # erased with its lookup's data: nobody left to tell about
    return list(split_names(review.untold))


def mark_told(session: Session, review_id: str, agencies: Sequence[str]) -> Review:
    """Add ``agencies`` to those told of the review; the review.

    Raises:
        NotFound: no such review.
    """
    review = session.get(Review, review_id, with_for_update=True)
    if review is None:
        raise NotFound(f"no review {review_id}")
    told = split_names(review.agencies)
    review.agencies = join_names([*told, *(a for a in sorted(agencies) if a not in told)])
    review.untold = join_names(a for a in split_names(review.untold) if a not in agencies)
    return review


async def notify(
    fanout: FanOut,
    manifest: TrustedManifest,
    notices: dict[str, Envelope],
    *,
    deadline: float,
) -> list[str]:
    """Send each agency its signed notice in parallel; the agencies that took it.

    An agency that is not active, cannot be reached or refuses is left out
    (and logged): it is told on a later pass.
    """

    async def tell(agency: str, notice: Envelope) -> str | None:
        try:
            member = manifest.active_member(agency)
            target = AgencyTarget(agency, member.endpoint, manifest.member_keys(agency))
            stub = agency_pb2_grpc.AgencyNodeServiceStub(fanout.channel(target))
            await stub.NotifyReview(
                agency_pb2.NotifyReviewRequest(notice=notice.to_proto()), timeout=deadline
            )
        except grpc.aio.AioRpcError as exc:
            _log.warning("review notice not taken by %s (%s): will retry", agency, exc.code().name)
            return None
        except CredenceError as exc:
            _log.warning("review notice for %s not sent (%s): will retry", agency, exc)
            return None
        return agency

    told = await asyncio.gather(*(tell(agency, notice) for agency, notice in notices.items()))
    return [agency for agency in told if agency is not None]


async def tell_agencies(
    review_id: str,
    *,
    sessions: sessionmaker[Session],
    fanout: FanOut,
    manifest: TrustedManifest,
    key: SigningKey,
    deadline: float,
) -> Review:
    """Notify the agencies not yet told of a review; the review as then stored.

    Raises:
        NotFound: no such review.
    """

    def notices() -> dict[str, Envelope]:
        with reader(sessions()) as session:
            review = session.get(Review, review_id)
            if review is None:
                raise NotFound(f"no review {review_id}")
            return {
                agency: signed_notice(review, agency, key) for agency in untold(session, review)
            }

    pending = await asyncio.to_thread(notices)
    told = await notify(fanout, manifest, pending, deadline=deadline) if pending else []

    def keep() -> Review:
        with sessions.begin() as session:
            return mark_told(session, review_id, told)

    return await asyncio.to_thread(keep)


def open_with_untold(session: Session, now: datetime) -> list[str]:
    """Open reviews (the oldest, at most :data:`RETRY_BATCH`) some agency was not told of.

    Only those still untold whose verdict's row is kept: reviews told in full,
    or whose verdict was erased, never fill the pass.
    """
    return list(
        session.scalars(
            select(Review.review_id)
            .join(VerdictRecord, VerdictRecord.verdict_id == Review.verdict_id)
            .where(
                Review.state == "open",
                Review.untold != "",
                Review.requested_at <= now - RETRY_AFTER,
            )
            .order_by(Review.requested_at)
            .limit(RETRY_BATCH)
        )
    )


async def retry_notices(
    *,
    sessions: sessionmaker[Session],
    fanout: FanOut,
    manifest: TrustedManifest,
    key: SigningKey,
    deadline: float,
    now: datetime,
) -> int:
    """One pass: tell the agencies open reviews could not reach; how many reviews it retried."""

    def pending() -> list[str]:
        with reader(sessions()) as session:
            return open_with_untold(session, now)

    retried = await asyncio.to_thread(pending)
    for review_id in retried:
        await tell_agencies(
            review_id, sessions=sessions, fanout=fanout, manifest=manifest, key=key,
            deadline=deadline,
        )  # fmt: skip
    return len(retried)


async def retry_notices_periodically(
    *,
    sessions: sessionmaker[Session],
    fanout: FanOut,
    manifest: Callable[[], TrustedManifest],
    key: SigningKey,
    deadline: float,
    clock: Clock,
    interval: float = RETRY_SECONDS,
) -> None:
    """Every ``interval`` seconds, :func:`retry_notices` with the current manifest."""
    while True:
        await asyncio.sleep(interval)
        try:
            await retry_notices(
                sessions=sessions, fanout=fanout, manifest=manifest(), key=key,
                deadline=deadline, now=clock(),
            )  # fmt: skip
        except Exception:
            _log.exception("retrying review notices failed; will retry")
