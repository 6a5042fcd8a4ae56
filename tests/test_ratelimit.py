"""The per-requester token bucket: the maths, and stored in the database."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from central_registry import database
from central_registry.limits.buckets import BucketState, TokenBucket
from central_registry.limits.rate_store import take_rate_tokens
from credence.errors import ResourceExhausted


def test_burst_then_refused_with_retry_after() -> None:
    bucket, state = TokenBucket(10, 3), None
    for _ in range(3):
        state = bucket.take(state, "acme", 100.0)
    with pytest.raises(ResourceExhausted, match="rate limit of 10 lookups/s") as caught:
        bucket.take(state, "acme", 100.0)
    assert caught.value.retry_after == pytest.approx(0.1)


def test_tokens_refill_over_time_and_buckets_are_per_requester() -> None:
    bucket = TokenBucket(10, 2)
    acme = bucket.take(None, "acme", 0.0, cost=2)
    bucket.take(None, "other", 0.0, cost=2)  # another requester, another (full) bucket
    with pytest.raises(ResourceExhausted):
        bucket.take(acme, "acme", 0.05)
    bucket.take(acme, "acme", 0.1)


def test_a_request_larger_than_the_burst_says_so() -> None:
    with pytest.raises(ResourceExhausted, match="send smaller batches") as caught:
        TokenBucket(10, 5).take(None, "acme", 0.0, cost=6)
    assert caught.value.retry_after is None


# --- the pure maths ----------------------------------------------------------------


def test_token_bucket_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        TokenBucket(0, 5)
    with pytest.raises(ValueError, match="burst at least 1"):
        TokenBucket(1, 0.5)


def test_token_bucket_returns_the_new_state_and_caps_the_refill() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert bucket.take(None, "acme", now=100.0, cost=2) == BucketState(3.0, 100.0)
    # A long pause refills to the burst, never beyond.
    assert bucket.take(BucketState(0.0, 0.0), "acme", now=100.0) == BucketState(4.0, 100.0)


def test_a_clock_behind_the_stored_time_refills_nothing_and_keeps_the_later_time() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert bucket.take(BucketState(2.0, 50.0), "acme", now=49.0) == BucketState(1.0, 50.0)
    with pytest.raises(ResourceExhausted, match="rate limit of 10 lookups/s") as caught:
        bucket.take(BucketState(0.5, 50.0), "acme", now=40.0)
    assert caught.value.retry_after == pytest.approx(0.05)


# --- the buckets in the database, shared by registry processes ----------------------

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = database.create_engine_for(database_url)
    database.upgrade_schema(engine)
    yield database.session_factory(engine)
    engine.dispose()


def _take(sessions: sessionmaker[Session], at: datetime, cost: float = 1.0) -> float:
    with sessions.begin() as session:
        return take_rate_tokens(session, "acme", TokenBucket(10, 3), at, cost)


def test_stored_bucket_spends_refuses_and_refills(sessions: sessionmaker[Session]) -> None:
    assert [_take(sessions, NOW) for _ in range(3)] == [2.0, 1.0, 0.0]
    with pytest.raises(ResourceExhausted, match="rate limit of 10 lookups/s for 'acme'") as caught:
        _take(sessions, NOW + timedelta(milliseconds=50))
    assert caught.value.retry_after == pytest.approx(0.05)
    # The refusal wrote nothing: the refill still counts from the last spend.
    assert _take(sessions, NOW + timedelta(milliseconds=100)) == pytest.approx(0.0)
    with pytest.raises(ResourceExhausted, match="send smaller batches"):
        _take(sessions, NOW + timedelta(seconds=10), cost=4)
    with sessions.begin() as session:
        other = take_rate_tokens(session, "beta", TokenBucket(10, 3), NOW)
    assert other == 2.0


def test_concurrent_takes_never_spend_a_token_twice(sessions: sessionmaker[Session]) -> None:
    def take_once(_: int) -> bool:
        try:
            # A frozen clock: no refill, so exactly the burst is served.
            _take(sessions, NOW)
        except ResourceExhausted:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(take_once, range(24)))
    assert outcomes.count(True) == 3
