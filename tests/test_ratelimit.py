"""The per-requester token bucket."""

from __future__ import annotations

import pytest

from central_registry.ratelimit import RateLimiter
from credence.errors import ResourceExhausted


def test_burst_then_refused_with_retry_after() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    for _ in range(3):
        limiter.take("acme", now=100.0)
    with pytest.raises(ResourceExhausted, match="rate limit of 10 lookups/s") as caught:
        limiter.take("acme", now=100.0)
    assert caught.value.retry_after == pytest.approx(0.1)


def test_tokens_refill_over_time_and_buckets_are_per_requester() -> None:
    limiter = RateLimiter(rate=10, burst=2)
    limiter.take("acme", now=0.0, cost=2)
    limiter.take("other", now=0.0, cost=2)
    with pytest.raises(ResourceExhausted):
        limiter.take("acme", now=0.05)
    limiter.take("acme", now=0.1)


def test_a_request_larger_than_the_burst_says_so() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    with pytest.raises(ResourceExhausted, match="send smaller batches") as caught:
        limiter.take("acme", now=0.0, cost=6)
    assert caught.value.retry_after is None
