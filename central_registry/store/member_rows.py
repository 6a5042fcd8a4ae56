"""Members: enrolment, approval, suspension, and revoked certificate serials."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import MEMBER_ROLES, Member, RevokedSerial, join_names
from central_registry.store._keys import checked_serial, insert_new
from credence.encoding import require_utc
from credence.errors import FailedPrecondition, InvalidInput, NotFound
from credence.keys import VerifyKey

__all__ = [
    "add_enrolment",
    "approve_member",
    "get_member",
    "list_members",
    "revoke_serial",
    "revoked_serials",
    "set_member_state",
]


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
    witness_key_raw: bytes | None = None,
    agreement_key_raw: bytes | None = None,
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
        witness_key_raw: the member's 32-byte witness cosigning key, if it witnesses.
        agreement_key_raw: an agency's 32-byte X25519 key agreement key (blind aggregation).

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
        witness_key=witness_key_raw,
        agreement_key=agreement_key_raw,
        record_kinds=join_names(record_kinds),
        identity_verifier=False,
        allowed_purposes="",
        allowed_kinds="",
        csr_pem=csr_pem,
        created_at=now,
        updated_at=now,
    )
    insert_new(
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
    member.certificate_serial = checked_serial(serial_hex)
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
    serial = checked_serial(serial_hex)
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
