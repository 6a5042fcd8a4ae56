"""Mandate grants: an authority's lookup under a named legal basis.

A mandate (``mandate+jwt``) is issued and signed by an ``authority`` member. It
names the statute and case, and an embargo: the subject sees the lookup in the
log no later than ``embargo_until``, which may lie at most ``max_embargo`` after
issue. Every function is pure: the clock arrives as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.encoding import format_time, require_utc, to_epoch
from credence.errors import ClaimMismatch, InvalidInput
from credence.grants._claims import (
    check_scope,
    check_subject_ref,
    check_terms,
    check_text,
    claim_str,
    claim_time,
    new_jti,
    sign_limited,
)
from credence.jws import (
    DEFAULT_SKEW,
    check_audience,
    check_issuer,
    check_time_claims,
    verify_compact,
)
from credence.keys import KeySet, SigningKey

MANDATE_TYP = "mandate+jwt"
MANDATE_MAX_SIZE = 8192
DEFAULT_MAX_EMBARGO = timedelta(days=90)


@dataclass(frozen=True)
class LegalBasis:
    """The statute and the case number a mandate relies on.

    Raises:
        InvalidInput: either is empty or longer than 256 characters.
    """

    statute: str
    case: str

    def __post_init__(self) -> None:
        check_text(self.statute, "legal basis statute")
        check_text(self.case, "legal basis case")


@dataclass(frozen=True)
class MandateTerms:
    """What an authority may look up, for whom, why, and until when.

    Raises:
        InvalidInput: a field is malformed.
    """

    subject_ref: str
    requester: str
    purpose: str
    scope: tuple[str, ...]
    legal_basis: LegalBasis
    not_before: datetime
    expires_at: datetime
    embargo_until: datetime

    def __post_init__(self) -> None:
        check_terms(self, "mandate")
        for name in ("not_before", "expires_at", "embargo_until"):
            object.__setattr__(self, name, require_utc(getattr(self, name), name))


@dataclass(frozen=True)
class VerifiedMandate:
    """A mandate whose signature, validity, audience and embargo bound were checked."""

    grant_id: str
    issuer: str
    subject_ref: str
    requester: str
    purpose: str
    scope: tuple[str, ...]
    legal_basis: LegalBasis
    issued_at: datetime
    not_before: datetime
    expires_at: datetime
    embargo_until: datetime


def _embargo_error(embargo_until: datetime, issued_at: datetime, max_embargo: timedelta) -> str:
    return (
        f"mandate embargo until {format_time(embargo_until)} is more than {max_embargo} "
        f"after its issue at {format_time(issued_at)}"
    )


def issue_mandate(
    terms: MandateTerms,
    *,
    authority_id: str,
    authority_key: SigningKey,
    now: datetime,
    max_embargo: timedelta = DEFAULT_MAX_EMBARGO,
    jti: str | None = None,
) -> str:
    """Sign a mandate as an authority member.

    Raises:
        InvalidInput: the embargo exceeds ``max_embargo`` or the id is malformed.
        MessageTooLarge: the token would exceed :data:`MANDATE_MAX_SIZE`.
    """
    if terms.embargo_until > now + max_embargo:
        raise InvalidInput(_embargo_error(terms.embargo_until, now, max_embargo))
    claims = {
        "iss": check_text(authority_id, "authority id"),
        "sub": terms.subject_ref,
        "aud": terms.requester,
        "purpose": terms.purpose,
        "scope": list(terms.scope),
        "legal_basis": {"statute": terms.legal_basis.statute, "case": terms.legal_basis.case},
        "embargo_until": to_epoch(terms.embargo_until),
        "iat": to_epoch(now),
        "nbf": to_epoch(terms.not_before),
        "exp": to_epoch(terms.expires_at),
        "jti": jti or new_jti(),
    }
    return sign_limited(claims, authority_key, MANDATE_TYP, MANDATE_MAX_SIZE)


def verify_mandate(
    token: str,
    *,
    authority_keys: KeySet,
    expected_audience: str | None,
    now: datetime,
    max_embargo: timedelta = DEFAULT_MAX_EMBARGO,
    expected_issuer: str | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> VerifiedMandate:
    """Verify a mandate against the authority members' keys.

    Raises:
        MessageTooLarge: the token exceeds :data:`MANDATE_MAX_SIZE`.
        InvalidInput: malformed token or claims.
        BadSignature: the signature does not verify or the header is refused.
        UnknownKey: the signing key is not an authority's.
        WrongPayloadType: a token of another kind (e.g. a consent).
        Expired: the mandate has expired.
        NotYetValid: the mandate is not valid yet.
        WrongAudience: the mandate is for another requester.
        WrongIssuer: the mandate is not from ``expected_issuer``.
        ClaimMismatch: the embargo is longer than ``max_embargo`` allows.
    """
    claims = verify_compact(token, authority_keys, MANDATE_TYP, max_size=MANDATE_MAX_SIZE)
    check_time_claims(claims, now, skew, label="mandate")
    if expected_audience is not None:
        check_audience(claims, expected_audience, label="mandate")
    if expected_issuer is not None:
        check_issuer(claims, expected_issuer, label="mandate")
    basis = claims.get("legal_basis")
    if not isinstance(basis, dict) or set(basis) != {"statute", "case"}:
        raise InvalidInput(f"mandate claim 'legal_basis' must be {{statute, case}}, got {basis!r}")
    issued_at = claim_time(claims, "iat")
    embargo_until = claim_time(claims, "embargo_until")
    if embargo_until > issued_at + max_embargo:
        raise ClaimMismatch(_embargo_error(embargo_until, issued_at, max_embargo))
    try:
        terms = MandateTerms(
            subject_ref=check_subject_ref(claims.get("sub"), "mandate claim 'sub'"),
            requester=claim_str(claims, "aud", "mandate"),
            purpose=claim_str(claims, "purpose", "mandate"),
            scope=check_scope(claims.get("scope"), "mandate claim 'scope'"),
            legal_basis=LegalBasis(statute=basis["statute"], case=basis["case"]),
            not_before=claim_time(claims, "nbf"),
            expires_at=claim_time(claims, "exp"),
            embargo_until=embargo_until,
        )
    except InvalidInput as exc:
        raise InvalidInput(f"mandate: {exc}") from exc
    return VerifiedMandate(
        grant_id=claim_str(claims, "jti", "mandate"),
        issuer=claim_str(claims, "iss", "mandate"),
        subject_ref=terms.subject_ref,
        requester=terms.requester,
        purpose=terms.purpose,
        scope=terms.scope,
        legal_basis=terms.legal_basis,
        issued_at=issued_at,
        not_before=terms.not_before,
        expires_at=terms.expires_at,
        embargo_until=terms.embargo_until,
    )
