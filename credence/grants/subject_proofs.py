"""A subject proving who they are to the registry, with their own personal key.

Subjects hold no certificate. To read their lookups, list or revoke their
grants, or contest a record, the subject signs a short-lived compact JWS
(``typ`` ``subject-access+jwt``) naming the action, with the personal key an
identity-verifying member bound to their subject reference. The registry
checks it against the keys bound to that reference, and refuses one it has
seen before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.encoding import to_epoch
from credence.errors import ClaimMismatch, InvalidInput
from credence.grants._claims import check_subject_ref, claim_str, new_jti
from credence.jws import (
    check_audience,
    check_time_claims,
    peek_header,
    sign_compact,
    verify_compact,
)
from credence.keys import KeySet, SigningKey

SUBJECT_ACCESS_TYP = "subject-access+jwt"
MAX_PROOF_LIFETIME = timedelta(minutes=5)
MAX_PROOF_SIZE = 4096
ACTIONS = frozenset(
    {
        "list-lookups", "list-grants", "revoke-grant", "contest", "list-contests", "list-records",
        "request-review", "list-reviews", "list-explanations",
    }
)  # fmt: skip


@dataclass(frozen=True)
class SubjectProof:
    """A verified proof: who, for which action, with which key."""

    subject_ref: str
    action: str
    target: str
    jti: str
    kid: str
    expires_at: datetime


def sign_subject_proof(
    *,
    subject_key: SigningKey,
    subject_ref_hex: str,
    registry_id: str,
    action: str,
    now: datetime,
    target: str = "",
    lifetime: timedelta = timedelta(minutes=2),
) -> str:
    """The subject's signed request to act on their own data.

    Raises:
        InvalidInput: an unknown action or too long a lifetime.
    """
    if action not in ACTIONS:
        raise InvalidInput(f"unknown subject action {action!r} (known: {sorted(ACTIONS)})")
    if lifetime > MAX_PROOF_LIFETIME:
        raise InvalidInput(f"a subject proof lives at most {MAX_PROOF_LIFETIME}")
    claims = {
        "sub": check_subject_ref(subject_ref_hex),
        "aud": registry_id,
        "action": action,
        "target": target,
        "iat": to_epoch(now),
        "exp": to_epoch(now + lifetime),
        "jti": new_jti(),
    }
    return sign_compact(claims, subject_key, SUBJECT_ACCESS_TYP)


def verify_subject_proof(
    token: str,
    *,
    subject_keys: KeySet,
    registry_id: str,
    action: str,
    now: datetime,
) -> SubjectProof:
    """Check a subject proof against the keys bound to the subject it names.

    Raises:
        MessageTooLarge, InvalidInput, BadSignature, UnknownKey, WrongPayloadType:
            not a valid proof signed by a bound key.
        Expired, NotYetValid: outside its short lifetime.
        WrongAudience: made for another registry.
        ClaimMismatch: made for another action, or living too long.
    """
    claims = verify_compact(token, subject_keys, SUBJECT_ACCESS_TYP, max_size=MAX_PROOF_SIZE)
    check_time_claims(claims, now, label="subject proof")
    check_audience(claims, registry_id, label="subject proof")
    if claims.get("action") != action:
        raise ClaimMismatch(f"subject proof is for action {claims.get('action')!r}, not {action!r}")
    issued, expires = claims.get("iat"), claims.get("exp")
    if isinstance(issued, int) and isinstance(expires, int):
        if expires - issued > MAX_PROOF_LIFETIME.total_seconds():
            raise ClaimMismatch(f"subject proof lives longer than {MAX_PROOF_LIFETIME}")
    else:
        raise InvalidInput("subject proof needs integer iat and exp")
    target = claims.get("target", "")
    if not isinstance(target, str):
        raise InvalidInput("subject proof claim 'target' must be a string")
    header_kid = str(peek_header(token, max_size=MAX_PROOF_SIZE).get("kid", ""))
    return SubjectProof(
        subject_ref=check_subject_ref(claims.get("sub"), "subject proof claim 'sub'"),
        action=action,
        target=target,
        jti=claim_str(claims, "jti", "subject proof"),
        kid=header_kid,
        expires_at=datetime.fromtimestamp(expires, tz=now.tzinfo),
    )
