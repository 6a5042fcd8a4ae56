"""Per-requester request rate: a token bucket per member, refused with when to retry.

:class:`TokenBucket` is the pure maths: given a bucket's stored state and the
time, it returns the state after a request or refuses it. The registry keeps
each requester's state in the database (``store.take_rate_tokens``) so the
limit holds across every registry process sharing it. The
distinct-subjects-per-day limit lives in the database too
(``store.note_subject_use``).
"""

from __future__ import annotations

from dataclasses import dataclass

from credence.errors import ResourceExhausted

__all__ = ["BucketState", "TokenBucket"]


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
