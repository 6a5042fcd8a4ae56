"""A token bucket spent in the database, so a limit holds across registry processes.

The function receives a ``Session`` and runs in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.limits.buckets import BucketState, TokenBucket
from central_registry.models import RateBucket
from credence.encoding import require_utc
from credence.errors import Unavailable

__all__ = ["take_rate_tokens"]

# Creating a bucket races only on PostgreSQL (SQLite has one writer); each lost
# race means another process created it, so a handful of attempts is plenty.
_CREATE_ATTEMPTS = 5


def take_rate_tokens(
    session: Session, requester: str, bucket: TokenBucket, now: datetime, cost: float = 1.0
) -> float:
    """Spend ``cost`` tokens of ``requester``'s bucket, shared by every registry process.

    The row is read ``FOR UPDATE`` (SQLite: the caller's ``BEGIN IMMEDIATE``
    already serialises writers), so concurrent requests on any number of
    processes queue on it and never spend the same token twice. A refusal
    writes nothing: the refill is recomputed from the stored state next time.

    Args:
        session: the caller's session, inside its transaction.
        requester: the member id.
        bucket: the rate and burst.
        now: the request time (the wall clock: shared by processes, unlike a
            monotonic one).
        cost: tokens to spend.

    Returns:
        The tokens left.

    Raises:
        ResourceExhausted: not enough tokens; ``retry_after`` says when there will be.
        Unavailable: the bucket could not be created (never seen in practice:
            a refused insert means the row exists).
    """
    now = require_utc(now)
    for _ in range(_CREATE_ATTEMPTS):
        row = session.execute(
            select(RateBucket.tokens, RateBucket.updated_at)
            .where(RateBucket.requester == requester)
            .with_for_update()
        ).first()
        if row is None:
            taken = bucket.take(None, requester, 0.0, cost)
            try:
                with session.begin_nested():
                    session.execute(
                        insert(RateBucket).values(
                            requester=requester, tokens=taken.tokens, updated_at=now
                        )
                    )
            except IntegrityError:
                continue  # another process created the bucket meanwhile: spend from it
            return taken.tokens
        stored_at: datetime = row.updated_at
        # Seconds since the stored time, exactly: epoch floats lose the microseconds.
        taken = bucket.take(
            BucketState(float(row.tokens), 0.0),
            requester,
            (now - stored_at).total_seconds(),
            cost,
        )
        session.execute(
            update(RateBucket)
            .where(RateBucket.requester == requester)
            .values(tokens=taken.tokens, updated_at=max(now, stored_at))
        )
        return taken.tokens
    raise Unavailable(
        f"could not create the rate bucket of {requester!r} (concurrent requests): retry"
    )
