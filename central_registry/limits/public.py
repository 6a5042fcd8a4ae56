"""What keeps the public port (no client certificate) from being flooded.

Anyone can reach the public port, so every call there is rate-limited twice:
per source address (one address cannot crowd out the others) and overall (many
addresses cannot exhaust the registry). Both use the database-backed token
bucket of :func:`central_registry.limits.rate_store.take_rate_tokens`, so the limits hold
across every registry process sharing the database; a call spends from both
buckets or, when either refuses, from neither. Request fields are bounded here
before anything is verified or written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from google.protobuf.message import Message
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from central_registry.config import PublicLimits
from central_registry.limits.buckets import TokenBucket
from central_registry.limits.rate_store import take_rate_tokens
from central_registry.models import RateBucket
from credence.errors import InvalidInput, ResourceExhausted
from credence.storage import immediate_writer, session_factory

__all__ = [
    "ACCESS",
    "ENROL",
    "PublicGate",
    "bucket_key",
    "check_subject_access",
    "check_text",
    "lock_enrolments",
    "source_address",
    "take_public_tokens",
]

#: The actions with their own buckets.
ENROL = "enrol"
ACCESS = "access"
_OVERALL = "*"
# RateBucket.requester is String(64); member ids never hold ':' so keys cannot clash.
_KEY_LIMIT = 64


def source_address(peer: str) -> str:
    """The caller's address without its port, from ``context.peer()``.

    ``ipv4:127.0.0.1:50000`` gives ``127.0.0.1``, ``ipv6:[::1]:50000`` gives
    ``::1``; any other form (``unix:...``) is kept whole.
    """
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        return rest.rpartition(":")[0] or rest
    if scheme == "ipv6":
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]") or rest
    return peer


def bucket_key(action: str, address: str) -> str:
    """The rate bucket of ``action`` from ``address`` (``*``: every address)."""
    key = f"public:{action}:{address}"
    if len(key) <= _KEY_LIMIT:
        return key
    digest = hashlib.sha256(address.encode()).hexdigest()
    return f"public:{action}:#{digest}"[:_KEY_LIMIT]


def _buckets(action: str, limits: PublicLimits) -> tuple[TokenBucket, TokenBucket]:
    if action == ENROL:
        return (
            TokenBucket(
                limits.enrolments_per_second_per_address, limits.enrolment_burst_per_address
            ),
            TokenBucket(limits.enrolments_per_second, limits.enrolment_burst),
        )
    if action == ACCESS:
        return (
            TokenBucket(limits.access_per_second_per_address, limits.access_burst_per_address),
            TokenBucket(limits.access_per_second, limits.access_burst),
        )
    raise ValueError(f"no public rate limit for {action!r}")


def take_public_tokens(
    session: Session, action: str, address: str, limits: PublicLimits, now: datetime
) -> None:
    """Spend one call of ``action`` from ``address``'s bucket and the overall one.

    Run it in its own transaction and commit it, before the call's work: a
    refused or failing call has used its token all the same, so malformed
    calls are limited too. The address's bucket is taken first, so one
    flooding address is refused before it can drain the overall bucket.

    Raises:
        ResourceExhausted: either bucket is empty; ``retry_after`` says when
            to retry. The caller rolls back, so neither bucket was spent.
        ValueError: an unknown ``action`` (a programming error).
    """
    per_address, overall = _buckets(action, limits)
    what = "enrolments" if action == ENROL else "subject access and enrolment status calls"
    try:
        take_rate_tokens(session, bucket_key(action, address), per_address, now)
    except ResourceExhausted as exc:
        raise ResourceExhausted(
            f"too many {what} from {address}: the limit is {per_address.rate:g}/s "
            f"(burst {per_address.burst:g}) per address",
            retry_after=exc.retry_after,
        ) from None
    try:
        take_rate_tokens(session, bucket_key(action, _OVERALL), overall, now)
    except ResourceExhausted as exc:
        raise ResourceExhausted(
            f"the registry is taking too many {what} from all addresses "
            f"(limit {overall.rate:g}/s, burst {overall.burst:g}): try again later",
            retry_after=exc.retry_after,
        ) from None


def lock_enrolments(session: Session) -> None:
    """Serialise new enrolments across registry processes until the transaction ends.

    Locks the overall enrolment bucket's row (PostgreSQL ``FOR UPDATE``; on
    SQLite the caller's ``BEGIN IMMEDIATE`` already serialises writers), so the
    pending-enrolment count and the insert that follows it cannot interleave
    with another process's and overshoot the cap.
    """
    session.execute(
        select(RateBucket.requester)
        .where(RateBucket.requester == bucket_key(ENROL, _OVERALL))
        .with_for_update()
    )


def check_text(name: str, value: str, limit: int, *, required: bool = False) -> str:
    """``value`` if it is at most ``limit`` characters of printable text.

    Raises:
        InvalidInput: too long, empty when required, or holding control
            characters; the message names the field and the limit, never
            echoing the value.
    """
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters; at most {limit} are allowed")
    if required and not value:
        raise InvalidInput(f"{name} is required")
    if not value.isprintable():
        raise InvalidInput(f"{name} holds control characters: send printable text only")
    return value


class PublicGate:
    """The public port's rate limits, spent in their own committed transaction."""

    def __init__(self, engine: Engine, limits: PublicLimits, clock: Callable[[], datetime]) -> None:
        # The bucket is read and then written: on SQLite take the write lock first.
        self._sessions = session_factory(immediate_writer(engine))
        self._limits = limits
        self._clock = clock

    def admit(self, action: str, peer: str) -> None:
        """Spend one ``action`` call by ``peer`` (``context.peer()``), or refuse it.

        Raises:
            ResourceExhausted: the caller's address or every address together
                is over the limit; nothing was spent.
        """
        with self._sessions.begin() as session:
            take_public_tokens(session, action, source_address(peer), self._limits, self._clock())


#: Field limits of subject access requests (a proof is a short compact JWS).
_SUBJECT_FIELDS = {
    "subject_proof": 4096, "grant_id": 64, "agency": 64, "record_kind": 32, "verdict_id": 64,
}  # fmt: skip


def check_subject_access(request: Message) -> None:
    """Bound the short fields of a subject access request before any is verified.

    Raises:
        InvalidInput: a field is longer than its limit or holds control characters.
    """
    for name, limit in _SUBJECT_FIELDS.items():
        if name in request.DESCRIPTOR.fields_by_name:
            check_text(name, getattr(request, name), limit)
