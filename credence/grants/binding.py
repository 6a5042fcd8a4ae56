"""Key bindings: an identity-verifying member vouches for a subject's personal key.

A binding (``binding+jwt``) says "this personal Ed25519 public key (``sjwk``)
belongs to subject reference ``sub``". It is signed by the member that verified
the subject's identity at enrolment and travels inside every consent, so a node
can check that the subject, not the registry, signed the consent request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.encoding import to_epoch
from credence.errors import InvalidInput
from credence.grants._claims import (
    check_subject_ref,
    check_text,
    claim_str,
    claim_time,
    new_jti,
    sign_limited,
    whole_seconds,
)
from credence.jws import DEFAULT_SKEW, check_time_claims, verify_compact
from credence.keys import KeySet, SigningKey, VerifyKey

BINDING_TYP = "binding+jwt"
BINDING_MAX_SIZE = 4096


@dataclass(frozen=True)
class VerifiedBinding:
    """A binding whose signature, issuer key and validity were checked."""

    issuer: str
    subject_ref: str
    subject_key: VerifyKey
    issued_at: datetime
    expires_at: datetime
    jti: str


def issue_binding(
    *,
    subject_ref_hex: str,
    subject_key: VerifyKey,
    member_id: str,
    member_key: SigningKey,
    now: datetime,
    validity: timedelta,
    jti: str | None = None,
) -> str:
    """Sign a binding of a subject's personal key to its subject reference.

    Raises:
        InvalidInput: a malformed subject reference, member id or validity.
        MessageTooLarge: the token would exceed :data:`BINDING_MAX_SIZE`.
    """
    check_subject_ref(subject_ref_hex)
    check_text(member_id, "member id")
    if whole_seconds(validity, "binding validity") == 0:
        raise InvalidInput("binding validity must be positive")
    claims = {
        "iss": member_id,
        "sub": subject_ref_hex,
        "sjwk": subject_key.to_jwk(),
        "iat": to_epoch(now),
        "exp": to_epoch(now + validity),
        "jti": jti or new_jti(),
    }
    return sign_limited(claims, member_key, BINDING_TYP, BINDING_MAX_SIZE)


def verify_binding(
    token: str, *, identity_keys: KeySet, now: datetime, skew: timedelta = DEFAULT_SKEW
) -> VerifiedBinding:
    """Verify a binding against the identity-verifying members' keys.

    Raises:
        VerificationError: a bad signature, unknown key, wrong typ or expiry
            (the subclasses of :func:`credence.jws.verify_compact`).
        InvalidInput: a malformed binding or ``sjwk``.
    """
    claims = verify_compact(token, identity_keys, BINDING_TYP, max_size=BINDING_MAX_SIZE)
    check_time_claims(claims, now, skew, label="binding")
    sjwk = claims.get("sjwk")
    if not isinstance(sjwk, Mapping):
        raise InvalidInput("binding lacks the subject's public key 'sjwk'")
    return VerifiedBinding(
        issuer=claim_str(claims, "iss", "binding"),
        subject_ref=check_subject_ref(claims.get("sub"), "binding claim 'sub'"),
        subject_key=VerifyKey.from_jwk(sjwk),
        issued_at=claim_time(claims, "iat"),
        expires_at=claim_time(claims, "exp"),
        jti=claim_str(claims, "jti", "binding"),
    )
