"""Token buckets spent in the database, so a limit holds across registry processes.

:class:`HeldBuckets` locks several buckets in one statement, spends them in
memory and writes them back in one more, for a transaction that spends many
(a group of lookups); :func:`take_rate_tokens` spends one. Both receive a
``Session`` and run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from central_registry.limits.buckets import BucketState, TokenBucket
from central_registry.store.driver import Driver, insert_ignoring
from credence.encoding import require_utc

__all__ = ["HeldBuckets", "take_rate_tokens"]


def _spend(
    bucket: TokenBucket, key: str, stored: tuple[float, datetime], now: datetime, cost: float
) -> tuple[float, datetime]:
    """The bucket's (tokens, time) after spending ``cost`` at ``now``.

    Raises:
        ResourceExhausted: not enough tokens.
    """
    tokens, stored_at = stored
    # Seconds since the stored time, exactly: epoch floats lose the microseconds.
    taken = bucket.take(
        BucketState(float(tokens), 0.0), key, (now - stored_at).total_seconds(), cost
    )
    return taken.tokens, max(now, stored_at)


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
    """
    held = HeldBuckets(session, {requester: bucket}, now)
    spent = held.after(requester, cost, now)
    held.apply({requester: spent})
    held.write()
    return spent[0]


_INSERT_FULL = insert_ignoring(
    "rate_buckets", ("requester", "tokens", "updated_at"), ("requester",)
)
_UPDATE = "UPDATE rate_buckets SET tokens = ?, updated_at = ? WHERE requester = ?"


class HeldBuckets:
    """Buckets locked and read in one statement, spent in memory, written back once.

    The rows are read ``FOR UPDATE`` in key order, so transactions holding
    several never wait on each other in a cycle. A bucket not in the table yet
    is first created full as of ``now`` (a concurrent creation wins and is
    kept), then locked with the rest. The caller spends with :meth:`after` and
    :meth:`apply`, so a refusal of one bucket leaves the others as they were.
    Driver statements (:mod:`central_registry.store.driver`): every lookup
    runs them.
    """

    def __init__(self, session: Session, buckets: Mapping[str, TokenBucket], now: datetime) -> None:
        self._driver = Driver(session)
        self._buckets = dict(buckets)
        wanted = sorted(self._buckets)
        self._stored = self._read(wanted)
        missing = [key for key in wanted if key not in self._stored]
        if missing:
            at = self._driver.time(now)
            self._driver.many(
                _INSERT_FULL, [(key, self._buckets[key].burst, at) for key in missing]
            )
            self._stored.update(self._read(missing))
        self._spent: dict[str, tuple[float, datetime]] = {}

    def _read(self, keys: Sequence[str]) -> dict[str, tuple[float, datetime]]:
        driver = self._driver
        marks = ", ".join("?" for _ in keys)
        rows = driver.rows(
            "SELECT requester, tokens, updated_at FROM rate_buckets "  # noqa: S608 - marks only
            f"WHERE requester IN ({marks}) ORDER BY requester{driver.for_update}",
            keys,
        )
        return {key: (float(tokens), driver.read_time(at)) for key, tokens, at in rows}

    def after(self, key: str, cost: float, now: datetime) -> tuple[float, datetime]:
        """Bucket ``key``'s (tokens, time) once ``cost`` is spent at ``now``; nothing is spent.

        Raises:
            ResourceExhausted: the bucket has too few tokens.
            KeyError: a key that is not held (a caller bug).
        """
        current = self._spent.get(key) or self._stored[key]
        return _spend(self._buckets[key], key, current, require_utc(now), cost)

    def apply(self, states: Mapping[str, tuple[float, datetime]]) -> None:
        """Keep the states :meth:`after` computed; :meth:`write` stores them."""
        self._spent.update(states)

    def write(self) -> None:
        """Store every bucket spent since the last write, in one statement."""
        if not self._spent:
            return
        time = self._driver.time
        self._driver.many(
            _UPDATE, [(tokens, time(at), key) for key, (tokens, at) in self._spent.items()]
        )
        self._stored.update(self._spent)
        self._spent = {}
