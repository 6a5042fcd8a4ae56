"""The registry's notices that a subject asked for human review of a verdict this node answered.

The registry signs one :class:`~credence.v1.agency_pb2.ReviewNotice` per
agency whose answer the verdict was built from (``AgencyNodeService.NotifyReview``).
The node keeps what it verifies (the registry's signature and payload type,
the audience being this member, bounded fields) in ``review_notices``, with
whether its own query log holds an answer to the query, so the agency's
people can look at what it answered. A notice is kept once: the registry
retries notices it could not deliver, and a replay stores nothing new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agency_node import database
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import QueryLogEntry, ReviewNotice
from credence import payloads
from credence.clock import Clock
from credence.envelope import Envelope, verify_message
from credence.errors import InvalidInput, WrongAudience
from credence.statements import MAX_STATEMENT
from credence.storage import immediate_writer
from credence.v1 import agency_pb2

__all__ = ["ReviewDesk", "ReviewNoticeRow", "list_notices"]

_log = logging.getLogger(__name__)

#: The longest statement a subject can give (the registry's bound).
#: Ids are the registry's (uuid hex, query ids): at most the columns' 64 characters.
_MAX_ID_CHARS = 64
#: Notices ``credence node reviews`` lists at most (the newest).
MAX_LISTED = 500


def check_notice(notice: agency_pb2.ReviewNotice, member_id: str) -> None:
    """Check a verified notice's audience and sizes.

    Raises:
        WrongAudience: the notice is for another agency.
        InvalidInput: an id is missing or too long, the subject reference is
            not 32 bytes, the statement is too long, or there is no request time.
    """
    if notice.agency != member_id:
        raise WrongAudience(
            f"review notice is for agency {notice.agency[:_MAX_ID_CHARS]!r}, not {member_id!r}"
        )
    for name in ("review_id", "verdict_id", "query_id"):
        value = getattr(notice, name)
        if not value or len(value) > _MAX_ID_CHARS:
            raise InvalidInput(f"review notice {name} must be 1..{_MAX_ID_CHARS} characters")
    if len(notice.subject.ref) != 32:
        raise InvalidInput("review notice subject reference must be 32 bytes")
    if len(notice.statement) > MAX_STATEMENT:
        raise InvalidInput(f"review notice statement is over {MAX_STATEMENT} characters")
    if not notice.HasField("requested_at"):
        raise InvalidInput("review notice has no requested_at")


def answered(session: Session, query_id: str) -> bool:
    """Whether this node's query log holds an answer to ``query_id``."""
    return (
        session.scalar(
            select(QueryLogEntry.id)
            .where(QueryLogEntry.query_id == query_id, QueryLogEntry.outcome == "answered")
            .limit(1)
        )
        is not None
    )


class ReviewDesk:
    """Receives the registry's review notices."""

    def __init__(
        self, *, member_id: str, manifests: ManifestHolder, engine: Engine, clock: Clock
    ) -> None:
        self._member_id = member_id
        self._manifests = manifests
        # Reads whether it is kept, then keeps it: take the write lock up front.
        self._sessions = database.session_factory(immediate_writer(engine))
        self._clock = clock

    def notify(self, envelope_bytes: bytes) -> bool:
        """Verify and keep a notice; whether the node answered its query.

        Raises:
            VerificationError: not signed by the registry, or not a review notice.
            WrongAudience: the notice is for another agency.
            InvalidInput: a field is missing or out of bounds.
        """
        notice = verify_message(
            Envelope.from_bytes(envelope_bytes),
            payloads.REVIEW_NOTICE,
            self._manifests.current().registry_keys,
            agency_pb2.ReviewNotice,
        )
        check_notice(notice, self._member_id)
        try:
            was_answered, new = self._keep(notice, envelope_bytes)
        except IntegrityError:
            # Kept meanwhile by a concurrent delivery of the same notice (PostgreSQL).
            was_answered, new = self._keep(notice, envelope_bytes)
        if new:
            # Ids only: no subject reference, no statement.
            _log.info(
                "review %s of verdict %s asked for (query %s, answered here: %s)",
                notice.review_id, notice.verdict_id, notice.query_id, was_answered,
            )  # fmt: skip
        return was_answered

    def _keep(self, notice: agency_pb2.ReviewNotice, envelope_bytes: bytes) -> tuple[bool, bool]:
        """Keep the notice unless kept already: (whether the query was answered, kept now)."""
        with self._sessions.begin() as session:
            kept = session.get(ReviewNotice, notice.review_id)
            if kept is not None:
                return kept.answered_query, False  # a retry or a replay: nothing new to keep
            was_answered = answered(session, notice.query_id)
            session.add(
                ReviewNotice(
                    review_id=notice.review_id,
                    verdict_id=notice.verdict_id,
                    query_id=notice.query_id,
                    subject_ref=bytes(notice.subject.ref),
                    statement=notice.statement,
                    requested_at=notice.requested_at.ToDatetime(tzinfo=UTC),
                    received_at=self._clock(),
                    answered_query=was_answered,
                    notice=envelope_bytes,
                )
            )
        return was_answered, True


@dataclass(frozen=True)
class ReviewNoticeRow:
    """One notice as ``credence node reviews`` shows it (no subject reference)."""

    review_id: str
    verdict_id: str
    query_id: str
    requested_at: datetime
    received_at: datetime
    answered_query: bool
    statement: str


def list_notices(session: Session, limit: int = MAX_LISTED) -> list[ReviewNoticeRow]:
    """The notices received, newest first."""
    rows = session.scalars(
        select(ReviewNotice).order_by(ReviewNotice.received_at.desc()).limit(limit)
    )
    return [
        ReviewNoticeRow(
            review_id=row.review_id,
            verdict_id=row.verdict_id,
            query_id=row.query_id,
            requested_at=row.requested_at,
            received_at=row.received_at,
            answered_query=row.answered_query,
            statement=row.statement,
        )
        for row in rows
    ]
