"""Grants the registry issued (consents and mandates): kept, counted, revoked.

A grant's use count is decided by the database in one conditional statement,
so concurrent lookups on any number of registry processes never exceed its uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from central_registry.models import GRANT_KINDS, Grant, join_names
from central_registry.store._keys import checked_subject_ref, insert_new
from central_registry.store.driver import Driver
from credence.encoding import format_time, require_utc
from credence.errors import (
    Expired,
    InvalidInput,
    NotFound,
    NotYetValid,
    ResourceExhausted,
    Revoked,
)

__all__ = [
    "add_grant",
    "get_grant",
    "grant_for_request",
    "grants_for_subject",
    "next_status_index",
    "revoke_grant",
    "revoked_status_indexes",
    "status_list_state",
    "use_grant",
]


def add_grant(
    session: Session,
    *,
    grant_id: str,
    kind: str,
    subject_ref_hex: str,
    requester: str,
    purpose: str,
    scope: Iterable[str],
    issued_at: datetime,
    not_before: datetime,
    expires_at: datetime,
    max_uses: int | None,
    data_life_seconds: int | None,
    token: str,
    legal_basis: str | None = None,
    embargo_until: datetime | None = None,
    request_jti: str | None = None,
    status_index: int | None = None,
) -> Grant:
    """Keep a grant the registry issued (consent or mandate).

    Args:
        session: the caller's session, inside its transaction.
        grant_id: the token's ``jti``.
        kind: ``consent`` or ``mandate``.
        subject_ref_hex: the subject's reference, 64 hex digits.
        requester: the member the grant is for.
        purpose: the purpose name.
        scope: the verdict kind names covered.
        issued_at: when it was issued.
        not_before: when it starts to be valid.
        expires_at: when it stops being valid.
        max_uses: how many lookups it allows; None for unlimited (mandates).
        data_life_seconds: how long the requester may keep a verdict.
        token: the signed grant token, as issued.
        legal_basis: a mandate's "statute / case".
        embargo_until: until when the subject does not see the lookups (mandates).
        request_jti: the consent request's ``jti`` (consents), unique per subject.
        status_index: the grant's bit in the revocation list; None takes the
            next free one (a token that names its index passes it).

    Returns:
        The stored grant, unused.

    Raises:
        InvalidInput: unknown kind, ``max_uses`` below 1, or a malformed subject reference.
        AlreadyExists: ``grant_id``, the request or ``status_index`` is taken.
    """
    if kind not in GRANT_KINDS:
        raise InvalidInput(f"grant kind must be one of {', '.join(GRANT_KINDS)}, got {kind!r}")
    if max_uses is not None and max_uses < 1:
        raise InvalidInput(f"a grant allows at least 1 use, got max_uses={max_uses}")
    grant = Grant(
        grant_id=grant_id,
        kind=kind,
        subject_ref=checked_subject_ref(subject_ref_hex),
        requester=requester,
        purpose=purpose,
        scope=join_names(scope),
        issued_at=require_utc(issued_at),
        not_before=require_utc(not_before),
        expires_at=require_utc(expires_at),
        max_uses=max_uses,
        uses=0,
        data_life_seconds=data_life_seconds,
        token=token,
        legal_basis=legal_basis,
        embargo_until=None if embargo_until is None else require_utc(embargo_until),
        revoked_at=None,
        request_jti=request_jti,
        status_index=next_status_index(session) if status_index is None else status_index,
    )
    insert_new(
        session,
        grant,
        f"grant {grant_id!r} exists already, or its request or status index "
        f"{grant.status_index} is taken",
    )
    return grant


def next_status_index(session: Session) -> int:
    """The revocation-list bit the next grant takes (a race is settled by the unique key)."""
    highest = session.scalar(select(func.max(Grant.status_index)))
    return 0 if highest is None else highest + 1


def grant_for_request(session: Session, subject_ref_hex: str, request_jti: str) -> Grant | None:
    """The grant that countersigned the subject's consent request ``request_jti``, if any.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    statement = select(Grant).where(
        Grant.subject_ref == checked_subject_ref(subject_ref_hex), Grant.request_jti == request_jti
    )
    return session.scalars(statement.execution_options(populate_existing=True)).first()


def status_list_state(session: Session) -> tuple[int, int]:
    """(grants revoked, grants issued): both only grow, so their sum versions the list."""
    revoked, highest = session.execute(
        select(func.count(Grant.revoked_at), func.max(Grant.status_index))
    ).one()
    return int(revoked), 0 if highest is None else int(highest) + 1


def revoked_status_indexes(session: Session) -> list[int]:
    """The revocation-list bits of every revoked grant."""
    statement = select(Grant.status_index).where(Grant.revoked_at.is_not(None))
    return list(session.scalars(statement))


def get_grant(session: Session, grant_id: str) -> Grant:
    """The grant with ``grant_id``.

    Raises:
        NotFound: the registry never issued it.
    """
    grant = session.get(Grant, grant_id)
    if grant is None:
        raise NotFound(f"no grant {grant_id!r}: the registry did not issue it")
    return grant


_USE = (
    "UPDATE grants SET uses = uses + 1 WHERE grant_id = ? AND revoked_at IS NULL "
    "AND (max_uses IS NULL OR uses < max_uses) AND not_before <= ? AND expires_at > ?"
)


def use_grant(session: Session, grant_id: str, now: datetime) -> None:
    """Count one lookup against a grant, if it still allows one.

    One conditional UPDATE does the check and the count, so concurrent
    lookups on any number of registry processes never exceed ``max_uses``.

    Raises:
        NotFound: no such grant.
        Revoked: the subject revoked it.
        Expired: its validity ended.
        NotYetValid: its validity has not started.
        ResourceExhausted: every use it allows is used (``retry_after`` None:
            waiting does not help, a new grant does).
    """
    now = require_utc(now)
    driver = Driver(session)  # every lookup under a grant runs this: a driver statement
    at = driver.time(now)
    if driver.execute(_USE, (grant_id, at, at)) == 1:
        return
    grant = session.scalars(
        select(Grant).where(Grant.grant_id == grant_id).execution_options(populate_existing=True)
    ).first()
    if grant is None:
        raise NotFound(f"no grant {grant_id!r}: the registry did not issue it")
    if grant.revoked_at is not None:
        raise Revoked(
            f"grant {grant_id} was revoked at {format_time(grant.revoked_at)}: "
            f"ask the subject for a new grant"
        )
    if grant.expires_at <= now:
        raise Expired(
            f"grant {grant_id} expired at {format_time(grant.expires_at)} (now {format_time(now)})"
        )
    if grant.not_before > now:
        raise NotYetValid(
            f"grant {grant_id} is valid from {format_time(grant.not_before)} "
            f"(now {format_time(now)})"
        )
    raise ResourceExhausted(
        f"grant {grant_id} allowed {grant.max_uses} uses, all used: ask the subject for a new grant"
    )


def revoke_grant(
    session: Session, grant_id: str, *, subject_ref_hex: str, now: datetime
) -> datetime:
    """Revoke a consent on its subject's behalf; revoking twice keeps the first time.

    A subject revokes what they granted: consents. A mandate is a legal basis
    the subject did not give and cannot withdraw; it is not found here, in the
    same words as a grant that does not exist, so an embargoed mandate stays hidden.

    Returns:
        When the grant was revoked (the first time).

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
        NotFound: no such consent for this subject (a grant of another subject,
            or a mandate, is not revealed, nor touched).
    """
    ref = checked_subject_ref(subject_ref_hex)
    now = require_utc(now)
    mine = (Grant.grant_id == grant_id, Grant.subject_ref == ref, Grant.kind == "consent")
    session.execute(update(Grant).where(*mine, Grant.revoked_at.is_(None)).values(revoked_at=now))
    revoked_at = session.scalar(select(Grant.revoked_at).where(*mine))
    if revoked_at is None:
        raise NotFound(f"no grant {grant_id!r} for this subject: check the grant id")
    return revoked_at


def grants_for_subject(session: Session, subject_ref_hex: str) -> list[Grant]:
    """Every grant about the subject, revoked and expired ones too, oldest first.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    ref = checked_subject_ref(subject_ref_hex)
    statement = (
        select(Grant).where(Grant.subject_ref == ref).order_by(Grant.issued_at, Grant.grant_id)
    )
    return list(session.scalars(statement))
