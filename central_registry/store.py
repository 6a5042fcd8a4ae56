"""The central registry's repositories: members, manifests, bindings, grants, log, usage.

Every function receives a ``Session`` and runs in the caller's transaction
(``with session.begin():``); none commits. Rows come back as the ORM objects
of :mod:`central_registry.models`, readable after the commit (the sessions of
:func:`credence.storage.session_factory` do not expire on commit).

What must hold across several registry processes sharing one database is
decided by the database, in one statement: a grant's use count, a log index,
a subject counted once per day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import Insert, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import (
    GRANT_KINDS,
    MEMBER_ROLES,
    Base,
    Binding,
    Grant,
    LogEntry,
    Manifest,
    Member,
    RateBucket,
    RevokedSerial,
    SubjectUsage,
    join_names,
)
from central_registry.ratelimit import BucketState, TokenBucket
from credence.encoding import format_time, require_utc
from credence.errors import (
    AlreadyExists,
    Expired,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    NotYetValid,
    ResourceExhausted,
    Revoked,
    Unavailable,
)
from credence.keys import VerifyKey

__all__ = [
    "add_binding",
    "add_enrolment",
    "add_grant",
    "approve_member",
    "bindings_for",
    "entries_for_subject",
    "get_grant",
    "get_manifest",
    "get_member",
    "grant_for_request",
    "grants_for_subject",
    "latest_manifest",
    "list_members",
    "log_entry",
    "log_size",
    "next_status_index",
    "note_subject_use",
    "note_subject_uses",
    "prune_subject_usage",
    "revoke_grant",
    "revoke_serial",
    "revoked_serials",
    "revoked_status_indexes",
    "set_member_state",
    "status_list_state",
    "store_manifest",
    "take_rate_tokens",
    "use_grant",
]

_REF_HEX = re.compile(r"[0-9a-f]{64}")
# RFC 5280 serials are at most 20 octets; hex without prefix or sign, as in the manifest.
_SERIAL_HEX = re.compile(r"[0-9a-f]{1,40}")
# Appends race only on PostgreSQL (SQLite has one writer); each lost race means
# another append committed, so a handful of attempts is plenty.
_APPEND_ATTEMPTS = 5


def _subject_ref_hex(text: str) -> str:
    ref = text.lower()
    if not _REF_HEX.fullmatch(ref):
        raise InvalidInput(f"subject reference must be 64 hex digits, got {text!r}")
    return ref


def _serial_hex(text: str) -> str:
    serial = text.lower().removeprefix("0x").lstrip("0") or "0"
    if not _SERIAL_HEX.fullmatch(serial) or serial == "0":
        raise InvalidInput(f"certificate serial must be 1 to 40 hex digits, not zero; got {text!r}")
    return serial


def _insert_new(session: Session, row: Base, taken: str) -> None:
    # A savepoint keeps the caller's transaction usable after a refusal, and the
    # primary key decides a race between processes.
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise AlreadyExists(taken) from None


# --- members ----------------------------------------------------------------


def add_enrolment(
    session: Session,
    *,
    member_id: str,
    display_name: str,
    role: str,
    endpoint: str,
    signing_key_raw: bytes,
    record_kinds: Iterable[str],
    csr_pem: str,
    now: datetime,
) -> Member:
    """Record an enrolment request; the member stays pending until approved.

    Args:
        session: the caller's session, inside its transaction.
        member_id: the id the member asks for (its certificate's identity).
        display_name: shown to operators.
        role: ``agency``, ``company`` or ``authority``.
        endpoint: ``host:port`` where an agency answers; may be empty for others.
        signing_key_raw: the member's 32-byte Ed25519 public key.
        record_kinds: record kinds an agency holds (empty for other roles).
        csr_pem: the certificate signing request, kept for approval.
        now: the enrolment time.

    Returns:
        The new pending member.

    Raises:
        InvalidInput: unknown role, or the signing key is not 32 bytes.
        AlreadyExists: the member id is taken.
    """
    if role not in MEMBER_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(MEMBER_ROLES)}, got {role!r}")
    kid = VerifyKey.from_raw(bytes(signing_key_raw)).kid
    now = require_utc(now)
    member = Member(
        member_id=member_id,
        display_name=display_name,
        role=role,
        state="pending",
        endpoint=endpoint,
        signing_key=bytes(signing_key_raw),
        signing_kid=kid,
        record_kinds=join_names(record_kinds),
        identity_verifier=False,
        allowed_purposes="",
        allowed_kinds="",
        csr_pem=csr_pem,
        created_at=now,
        updated_at=now,
    )
    _insert_new(
        session, member, f"member id {member_id!r} is already enrolled: choose another member id"
    )
    return member


def get_member(session: Session, member_id: str) -> Member:
    """The member with ``member_id``.

    Raises:
        NotFound: no member has that id.
    """
    member = session.get(Member, member_id)
    if member is None:
        raise NotFound(
            f"no member {member_id!r}: check the id with `credence registry members list`"
        )
    return member


def list_members(session: Session, state: str | None = None) -> list[Member]:
    """Every member, by id; only those in ``state`` when given."""
    statement = select(Member).order_by(Member.member_id)
    if state is not None:
        statement = statement.where(Member.state == state)
    return list(session.scalars(statement))


def approve_member(
    session: Session,
    member_id: str,
    *,
    certificate_pem: str,
    serial_hex: str,
    allowed_purposes: Iterable[str],
    allowed_kinds: Iterable[str],
    identity_verifier: bool,
    now: datetime,
) -> Member:
    """Make a pending member active with its certificate and access rights.

    Args:
        session: the caller's session, inside its transaction.
        member_id: the pending member.
        certificate_pem: the certificate issued from its CSR.
        serial_hex: that certificate's serial, hex.
        allowed_purposes: purpose names it may request under.
        allowed_kinds: verdict kind names it may request.
        identity_verifier: whether it may bind subjects' personal keys.
        now: the approval time.

    Returns:
        The member, now active.

    Raises:
        NotFound: no such member.
        FailedPrecondition: the member is not pending.
        InvalidInput: the serial is not hex.
    """
    member = get_member(session, member_id)
    if member.state != "pending":
        raise FailedPrecondition(
            f"member {member_id!r} is {member.state}, not pending: only a pending enrolment "
            f"can be approved"
        )
    member.certificate_pem = certificate_pem
    member.certificate_serial = _serial_hex(serial_hex)
    member.allowed_purposes = join_names(allowed_purposes)
    member.allowed_kinds = join_names(allowed_kinds)
    member.identity_verifier = identity_verifier
    member.state = "active"
    member.updated_at = require_utc(now)
    return member


# Suspension and reinstatement; approval is its own step (it issues a certificate).
_TRANSITIONS = {"suspended": "active", "active": "suspended"}
_VERBS = {"suspended": "suspended", "active": "reinstated"}


def set_member_state(session: Session, member_id: str, state: str, now: datetime) -> Member:
    """Suspend (``state="suspended"``) or reinstate (``state="active"``) a member.

    Raises:
        InvalidInput: ``state`` is neither ``suspended`` nor ``active``.
        NotFound: no such member.
        FailedPrecondition: the member is not in the state the change starts
            from (e.g. reinstating a member that is not suspended).
    """
    if state not in _TRANSITIONS:
        raise InvalidInput(f"a member can be set to active or suspended, not {state!r}")
    member = get_member(session, member_id)
    wanted_from = _TRANSITIONS[state]
    if member.state != wanted_from:
        if member.state == "pending":
            hint = f"approve it first with `credence registry members approve {member_id}`"
        else:
            hint = f"only a member that is {wanted_from} can be {_VERBS[state]}"
        raise FailedPrecondition(
            f"member {member_id!r} is {member.state}, not {wanted_from}: {hint}"
        )
    member.state = state
    member.updated_at = require_utc(now)
    return member


def revoke_serial(session: Session, serial_hex: str, member_id: str, now: datetime) -> None:
    """Add a certificate serial to the revocation list; revoking twice keeps the first time.

    Raises:
        InvalidInput: the serial is not hex.
    """
    serial = _serial_hex(serial_hex)
    if session.get(RevokedSerial, serial) is not None:
        return
    try:
        with session.begin_nested():
            session.add(RevokedSerial(serial=serial, member_id=member_id, revoked_at=now))
    except IntegrityError:
        return  # another process revoked it just now; the first time stands


def revoked_serials(session: Session) -> list[str]:
    """Every revoked serial, lower-case hex, sorted."""
    return list(session.scalars(select(RevokedSerial.serial).order_by(RevokedSerial.serial)))


# --- manifests --------------------------------------------------------------


def latest_manifest(session: Session) -> Manifest | None:
    """The newest manifest version, or None before the first is published."""
    return session.scalars(select(Manifest).order_by(Manifest.version.desc()).limit(1)).first()


def get_manifest(session: Session, version: int) -> Manifest:
    """Manifest ``version``.

    Raises:
        NotFound: that version was never published.
    """
    manifest = session.get(Manifest, version)
    if manifest is None:
        raise NotFound(f"manifest version {version} was never published")
    return manifest


def store_manifest(
    session: Session, *, version: int, issued_at: datetime, expires_at: datetime, envelope: bytes
) -> Manifest:
    """Keep a newly signed manifest version.

    Raises:
        AlreadyExists: ``version`` is stored already; sign the next one.
    """
    manifest = Manifest(
        version=version,
        issued_at=require_utc(issued_at),
        expires_at=require_utc(expires_at),
        envelope=bytes(envelope),
    )
    _insert_new(
        session,
        manifest,
        f"manifest version {version} exists already: publish a version above the latest",
    )
    return manifest


# --- subject key bindings ---------------------------------------------------


def add_binding(
    session: Session,
    *,
    subject_ref_hex: str,
    subject_kid: str,
    identity_member: str,
    token: str,
    now: datetime,
    expires_at: datetime,
) -> Binding:
    """Bind a subject's personal key; binding the same key again refreshes it.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    ref = _subject_ref_hex(subject_ref_hex)
    binding = session.get(Binding, (ref, subject_kid))
    if binding is None:
        binding = Binding(
            subject_ref=ref,
            subject_kid=subject_kid,
            identity_member=identity_member,
            binding_token=token,
            registered_at=require_utc(now),
            expires_at=require_utc(expires_at),
        )
        try:
            with session.begin_nested():
                session.add(binding)
        except IntegrityError:
            # Another process bound the same key meanwhile: refresh that row.
            binding = session.get(Binding, (ref, subject_kid), populate_existing=True)
            assert binding is not None  # the insert just collided with it
        else:
            return binding
    binding.identity_member = identity_member
    binding.binding_token = token
    binding.expires_at = require_utc(expires_at)
    return binding


def bindings_for(session: Session, subject_ref_hex: str, now: datetime) -> list[Binding]:
    """The subject's unexpired key bindings, oldest first.

    Raises:
        InvalidInput: the subject reference is not 64 hex digits.
    """
    ref = _subject_ref_hex(subject_ref_hex)
    statement = (
        select(Binding)
        .where(Binding.subject_ref == ref, Binding.expires_at > require_utc(now))
        .order_by(Binding.registered_at, Binding.subject_kid)
    )
    return list(session.scalars(statement))


# --- grants -----------------------------------------------------------------


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
        subject_ref=_subject_ref_hex(subject_ref_hex),
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
    _insert_new(
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
        Grant.subject_ref == _subject_ref_hex(subject_ref_hex), Grant.request_jti == request_jti
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
    result = session.execute(
        update(Grant)
        .where(
            Grant.grant_id == grant_id,
            Grant.revoked_at.is_(None),
            or_(Grant.max_uses.is_(None), Grant.uses < Grant.max_uses),
            Grant.not_before <= now,
            Grant.expires_at > now,
        )
        .values(uses=Grant.uses + 1)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
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
    ref = _subject_ref_hex(subject_ref_hex)
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
    ref = _subject_ref_hex(subject_ref_hex)
    statement = (
        select(Grant).where(Grant.subject_ref == ref).order_by(Grant.issued_at, Grant.grant_id)
    )
    return list(session.scalars(statement))


# --- transparency log -------------------------------------------------------


def log_size(session: Session) -> int:
    """How many entries the log holds (indexes are dense from 0)."""
    return int(session.scalar(select(func.coalesce(func.max(LogEntry.idx) + 1, 0))) or 0)


def log_entry(session: Session, idx: int) -> LogEntry:
    """The entry at leaf index ``idx``.

    Raises:
        NotFound: the log has no entry at that index.
    """
    entry = session.get(LogEntry, idx)
    if entry is None:
        raise NotFound(
            f"no log entry at index {idx}: the log has {log_size(session)} entries, from index 0"
        )
    return entry


def entries_for_subject(session: Session, subject_ref: bytes, now: datetime) -> list[LogEntry]:
    """The log entries about a subject that it may see now, in log order.

    Entries under a mandate's embargo stay hidden until the embargo ends.
    """
    now = require_utc(now)
    statement = (
        select(LogEntry)
        .where(
            LogEntry.subject_ref == bytes(subject_ref),
            or_(LogEntry.embargo_until.is_(None), LogEntry.embargo_until <= now),
        )
        .order_by(LogEntry.idx)
    )
    return list(session.scalars(statement))


# --- distinct subjects per day ------------------------------------------------


def _require_day(day: str) -> str:
    try:
        valid = date.fromisoformat(day).isoformat() == day
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    return day


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, object]]) -> None:
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "sqlite":
        statement = sqlite.insert(SubjectUsage).on_conflict_do_nothing()
    elif dialect == "postgresql":
        statement = postgresql.insert(SubjectUsage).on_conflict_do_nothing()
    else:
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(insert(SubjectUsage), row)
            except IntegrityError:
                pass  # noted already: the point of the primary key
        return
    session.execute(statement, rows)


def note_subject_uses(
    session: Session, requester: str, day: str, subject_refs: Iterable[bytes]
) -> int:
    """Note that ``requester`` looked these subjects up on ``day``.

    Args:
        session: the caller's session, inside its transaction.
        requester: the member id.
        day: the UTC day, ``YYYY-MM-DD``.
        subject_refs: the 32-byte subject references (repeats count once).

    Returns:
        How many distinct subjects the requester has looked up that day,
        these included.

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
    """
    _require_day(day)
    refs = {bytes(ref) for ref in subject_refs}
    if refs:
        _insert_ignoring_duplicates(
            session,
            [{"requester": requester, "day": day, "subject_ref": ref} for ref in sorted(refs)],
        )
    count = session.scalar(
        select(func.count())
        .select_from(SubjectUsage)
        .where(and_(SubjectUsage.requester == requester, SubjectUsage.day == day))
    )
    return int(count or 0)


def note_subject_use(session: Session, requester: str, day: str, subject_ref: bytes) -> int:
    """Note one lookup of ``subject_ref`` by ``requester`` on ``day``.

    Returns:
        How many distinct subjects the requester has looked up that day, this one included.

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
    """
    return note_subject_uses(session, requester, day, (subject_ref,))


def prune_subject_usage(session: Session, before_day: str) -> int:
    """Forget the usage of days before ``before_day`` (``YYYY-MM-DD``).

    Returns:
        How many rows were removed.

    Raises:
        ValueError: ``before_day`` is not ``YYYY-MM-DD``.
    """
    result = session.execute(
        delete(SubjectUsage).where(SubjectUsage.day < _require_day(before_day))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- request rate -------------------------------------------------------------


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
    for _ in range(_APPEND_ATTEMPTS):
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
