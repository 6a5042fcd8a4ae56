"""Per-requester request rate: a token bucket per member, refused with when to retry.

The distinct-subjects-per-day limit lives in the database (``store.note_subject_use``)
because it must hold across restarts; the request rate is a short-term guard
kept in memory by each registry process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from credence.errors import ResourceExhausted


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by requester: ``rate`` tokens per second, ``burst`` at most."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, requester: str, now: float, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of ``requester``'s bucket at monotonic time ``now``.

        Raises:
            ResourceExhausted: not enough tokens; ``retry_after`` says when there will be.
        """
        with self._lock:
            bucket = self._buckets.get(requester)
            if bucket is None:
                bucket = self._buckets[requester] = _Bucket(self._burst, now)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            if cost > self._burst:
                raise ResourceExhausted(
                    f"a request of {cost:.0f} lookups is larger than the burst of "
                    f"{self._burst:.0f} allowed to {requester!r}; send smaller batches"
                )
            if bucket.tokens < cost:
                wait = (cost - bucket.tokens) / self._rate
                raise ResourceExhausted(
                    f"rate limit of {self._rate:g} lookups/s for {requester!r} reached",
                    retry_after=wait,
                )
            bucket.tokens -= cost
