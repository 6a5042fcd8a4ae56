"""What a lookup spends before anything is written for it, and the daily subject limit.

Each request spends its requester's request rate and quota of log rows per
minute in the database, before anything else is written for it, so the limits
hold across every registry process. A refused single lookup also spends the
quota of refused rows, which bounds what a flood of them adds to the log.
The distinct subjects a requester looks up per day are counted in the log
transaction itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from central_registry.config import RateLimits
from central_registry.limits.buckets import REFUSED_ROWS, TokenBucket, log_quota, log_quota_key
from central_registry.limits.rate_store import take_rate_tokens
from central_registry.limits.subject_usage import note_subject_uses
from credence.errors import ResourceExhausted

__all__ = ["LookupQuotas"]


def _seconds_to_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class LookupQuotas:
    """A member's request rate, log-row quotas and distinct subjects per day."""

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._rate = TokenBucket(limits.requests_per_second, float(limits.burst))
        self._row_quota = log_quota(limits.log_rows_per_minute)
        self._refused_quota = log_quota(limits.refused_rows_per_minute)

    def take_request(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        """Spend one request of ``requester``'s rate and ``rows`` of its log-row quota.

        Raises:
            ResourceExhausted: the rate or the quota is spent; ``retry_after`` says when
                to retry.
        """
        take_rate_tokens(session, requester, self._rate, now)
        self.take_rows(session, requester, rows, now)

    def take_rows(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        """Spend ``rows`` of ``requester``'s quota of logged lookups per minute.

        Raises:
            ResourceExhausted: the quota is spent; the message names the setting to raise.
        """
        try:
            take_rate_tokens(
                session, log_quota_key(requester), self._row_quota, now, cost=float(rows)
            )
        except ResourceExhausted as exc:
            quota = self._limits.log_rows_per_minute
            raise ResourceExhausted(
                f"{requester!r} reached its quota of {quota} logged lookups per minute "
                f"({rows} more asked): slow down or ask the registry operator to raise "
                f"log_rows_per_minute",
                retry_after=exc.retry_after,
            ) from None

    def take_refused_rows(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        """Spend ``rows`` of ``requester``'s quota of refused single lookups logged per minute.

        Raises:
            ResourceExhausted: the quota is spent; the message names the setting.
        """
        try:
            take_rate_tokens(
                session,
                log_quota_key(requester, REFUSED_ROWS),
                self._refused_quota,
                now,
                cost=float(rows),
            )
        except ResourceExhausted as exc:
            quota = self._limits.refused_rows_per_minute
            raise ResourceExhausted(
                f"{requester!r} reached its quota of {quota} logged refused lookups per "
                f"minute (refused_rows_per_minute)",
                retry_after=exc.retry_after,
            ) from None

    def note_subjects(
        self, session: Session, requester: str, subjects: Sequence[bytes], now: datetime
    ) -> None:
        """Count the subjects ``requester`` looks up today, within the daily limit.

        Raises:
            ResourceExhausted: over the limit of distinct subjects per day;
                ``retry_after`` is the time to midnight UTC.
        """
        if not subjects:
            return
        used = note_subject_uses(session, requester, now.strftime("%Y-%m-%d"), subjects)
        limit = self._limits.distinct_subjects_per_day
        if used > limit:
            raise ResourceExhausted(
                f"{requester!r} looked up {used} distinct subjects today, over the "
                f"limit of {limit}",
                retry_after=_seconds_to_midnight(now),
            )
