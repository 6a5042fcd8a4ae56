"""What a lookup spends before anything is written for it, and the daily subject limit.

Each request spends its requester's request rate and quota of log rows per
minute in the database, before anything else is written for it, so the limits
hold across every registry process. A refused single lookup also spends the
quota of refused rows, which bounds what a flood of them adds to the log.
The distinct subjects a requester looks up per day are counted in the log
transaction itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from central_registry.config import RateLimits
from central_registry.limits.buckets import REFUSED_ROWS, TokenBucket, log_quota, log_quota_key
from central_registry.limits.rate_store import HeldBuckets
from central_registry.limits.subject_usage import note_subject_uses
from credence.errors import ResourceExhausted

__all__ = ["LookupQuotas"]


_Explain = Callable[[ResourceExhausted], ResourceExhausted]


def _spend_all(
    held: HeldBuckets, now: datetime, *costs: tuple[str, float, _Explain | None]
) -> None:
    """Spend every ``(key, cost, explain)`` or none; ``explain`` rewords a bucket's refusal.

    Raises:
        ResourceExhausted: a bucket has too few tokens; nothing was spent.
    """
    after = {}
    for key, cost, explain in costs:
        try:
            after[key] = held.after(key, cost, now)
        except ResourceExhausted as exc:
            if explain is None:
                raise
            raise explain(exc) from None
    held.apply(after)


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

    def hold(self, session: Session, requesters: Iterable[str], now: datetime) -> HeldBuckets:
        """Lock the rate and quota buckets of ``requesters`` for the caller's transaction.

        Spend them with :meth:`spend_request` and :meth:`spend_refusal`; store
        what was spent with :meth:`HeldBuckets.write` before the transaction ends.
        """
        buckets: dict[str, TokenBucket] = {}
        for requester in requesters:
            buckets[requester] = self._rate
            buckets[log_quota_key(requester)] = self._row_quota
            buckets[log_quota_key(requester, REFUSED_ROWS)] = self._refused_quota
        return HeldBuckets(session, buckets, now)

    def spend_request(self, held: HeldBuckets, requester: str, rows: int, now: datetime) -> None:
        """Spend one request of ``requester``'s rate and ``rows`` of its log-row quota, or neither.

        Raises:
            ResourceExhausted: the rate or the quota is spent; ``retry_after`` says when
                to retry.
        """
        _spend_all(
            held,
            now,
            (requester, 1.0, None),
            (log_quota_key(requester), float(rows), self._rows_spent(requester, rows)),
        )

    def spend_refusal(self, held: HeldBuckets, requester: str, now: datetime) -> None:
        """Spend a row of ``requester``'s log-row quota and of its refused-rows quota, or neither.

        What logging one refused single lookup costs.

        Raises:
            ResourceExhausted: a quota is spent; the message names the setting.
        """
        _spend_all(
            held,
            now,
            (log_quota_key(requester), 1.0, self._rows_spent(requester, 1)),
            (log_quota_key(requester, REFUSED_ROWS), 1.0, self._refused_spent(requester)),
        )

    def take_request(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        """Spend one request of ``requester``'s rate and ``rows`` of its log-row quota.

        Raises:
            ResourceExhausted: the rate or the quota is spent; ``retry_after`` says when
                to retry.
        """
        held = self.hold(session, [requester], now)
        self.spend_request(held, requester, rows, now)
        held.write()

    def take_rows(self, session: Session, requester: str, rows: int, now: datetime) -> None:
        """Spend ``rows`` of ``requester``'s quota of logged lookups per minute.

        Raises:
            ResourceExhausted: the quota is spent; the message names the setting to raise.
        """
        held = self.hold(session, [requester], now)
        _spend_all(
            held, now, (log_quota_key(requester), float(rows), self._rows_spent(requester, rows))
        )
        held.write()

    def _rows_spent(self, requester: str, rows: int) -> _Explain:
        def explain(exc: ResourceExhausted) -> ResourceExhausted:
            quota = self._limits.log_rows_per_minute
            return ResourceExhausted(
                f"{requester!r} reached its quota of {quota} logged lookups per minute "
                f"({rows} more asked): slow down or ask the registry operator to raise "
                f"log_rows_per_minute",
                retry_after=exc.retry_after,
            )

        return explain

    def _refused_spent(self, requester: str) -> _Explain:
        def explain(exc: ResourceExhausted) -> ResourceExhausted:
            quota = self._limits.refused_rows_per_minute
            return ResourceExhausted(
                f"{requester!r} reached its quota of {quota} logged refused lookups per "
                f"minute (refused_rows_per_minute)",
                retry_after=exc.retry_after,
            )

        return explain

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
