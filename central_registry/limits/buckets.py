"""Token buckets, the pure maths of every rate limit: refused with when to retry.

:class:`TokenBucket`: given a bucket's stored state and the time, it returns
the state after a request or refuses it. The registry keeps each bucket's
state in the database (:func:`central_registry.limits.rate_store.take_rate_tokens`)
so the limit holds across every registry process sharing it.

The quotas of log rows per member and minute (all rows, and refused single
lookups alone) are the same bucket under their own keys (:func:`log_quota_key`),
with :func:`log_quota` as their rate: a row costs one token, a minute refills
the quota.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from credence.errors import ResourceExhausted

__all__ = [
    "LOG_ROWS",
    "REFUSED_ROWS",
    "BucketState",
    "TokenBucket",
    "log_quota",
    "log_quota_key",
]

# Member ids are 1-64 of a-z 0-9 . - (credence.pki): a key holding "~" is never one.
LOG_ROWS = "log-rows"
REFUSED_ROWS = "refused-rows"
_KEY_CHARS = 64  # rate_buckets.requester


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket's tokens as of ``updated`` (seconds on the caller's clock)."""

    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``rate`` tokens per second, ``burst`` at most; one bucket per requester."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")

    def full(self, now: float) -> BucketState:
        """A new requester's bucket: full at ``now``."""
        return BucketState(float(self.burst), now)

    def take(
        self, state: BucketState | None, requester: str, now: float, cost: float = 1.0
    ) -> BucketState:
        """The state after spending ``cost`` tokens at ``now``; ``None`` is a full bucket.

        A ``now`` before ``state.updated`` (another process's clock running a
        little ahead) refills nothing and keeps the later time, so clocks that
        disagree never mint tokens.

        Raises:
            ResourceExhausted: not enough tokens; ``retry_after`` says when there
                will be (None when ``cost`` exceeds the burst: waiting never helps).
        """
        if state is None:
            state = self.full(now)
        elapsed = max(0.0, now - state.updated)
        tokens = min(float(self.burst), state.tokens + elapsed * self.rate)
        if cost > self.burst:
            raise ResourceExhausted(
                f"a request of {cost:.0f} lookups is larger than the burst of "
                f"{self.burst:.0f} allowed to {requester!r}; send smaller batches"
            )
        if tokens < cost:
            raise ResourceExhausted(
                f"rate limit of {self.rate:g} lookups/s for {requester!r} reached",
                retry_after=(cost - tokens) / self.rate,
            )
        return BucketState(tokens - cost, max(now, state.updated))


def log_quota(rows_per_minute: int) -> TokenBucket:
    """The log-row quota as a bucket: a minute's rows at once, refilled over a minute.

    Raises:
        ValueError: ``rows_per_minute`` is below 1.
    """
    return TokenBucket(rows_per_minute / 60.0, float(rows_per_minute))


def log_quota_key(member_id: str, quota: str = LOG_ROWS) -> str:
    """The bucket key of one of ``member_id``'s log quotas, within the column's 64 characters.

    A member id too long for the prefix is hashed; either form holds ``~``,
    which no member id does, so a quota never shares a bucket with a rate.
    """
    prefix = f"~{quota}:"
    key = prefix + member_id
    if len(key) <= _KEY_CHARS:
        return key
    digest = hashlib.sha256(member_id.encode()).hexdigest()
    return (prefix + digest)[:_KEY_CHARS]
