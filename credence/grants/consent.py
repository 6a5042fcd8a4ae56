"""Consent grants: the subject's request and the registry's countersignature.

A consent is three compact JWS documents, so that no single party can
fabricate it:

* a **binding** (:mod:`credence.grants.binding`), signed by an
  identity-verifying member, naming the subject's personal key;
* a **consent request** (``consent-request+jwt``), signed by that personal
  key: requester, purpose, scope, validity, uses and data life;
* the **consent** (``consent+jwt``), the registry's countersignature carrying
  the other two in ``req`` and ``bnd``, never wider than the request, and
  within the registry's fair-use policy for the purpose.

A consent the registry issues also carries its place in the registry's
revocation list, in the shape of draft-ietf-oauth-status-list:
``"status": {"status_list": {"idx": 17, "uri": "credence://<registry>/status-list"}}``.
A node reads bit ``idx`` of the signed list (:mod:`credence.grants.status_list`) to
learn whether the subject revoked it.

Every function is pure: the clock arrives as ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from credence.encoding import format_time, require_utc, to_epoch
from credence.errors import ClaimMismatch, InvalidInput, PermissionDenied, UnknownKey
from credence.grants._claims import (
    check_positive_int,
    check_scope,
    check_subject_ref,
    check_terms,
    check_text,
    claim_str,
    claim_time,
    new_jti,
    short_ref,
    sign_limited,
    whole_seconds,
)
from credence.grants.binding import VerifiedBinding, verify_binding
from credence.jws import (
    DEFAULT_SKEW,
    check_audience,
    check_issuer,
    check_time_claims,
    peek_header,
    verify_compact,
)
from credence.keys import KeySet, SigningKey

CONSENT_REQUEST_TYP = "consent-request+jwt"
CONSENT_TYP = "consent+jwt"
CONSENT_REQUEST_MAX_SIZE = 4096
# A consent embeds the request and the binding.
CONSENT_MAX_SIZE = 16384


@dataclass(frozen=True)
class PurposePolicy:
    """The registry's fair-use caps for one purpose (nodes check them again)."""

    max_validity: timedelta
    max_uses: int
    max_data_life: timedelta | None = None


@dataclass(frozen=True)
class ConsentTerms:
    """What a subject consents to; validated and normalised on construction.

    Raises:
        InvalidInput: a field is malformed (see the field checks).
    """

    subject_ref: str
    requester: str
    purpose: str
    scope: tuple[str, ...]
    not_before: datetime
    expires_at: datetime
    max_uses: int
    data_life: timedelta

    def __post_init__(self) -> None:
        check_terms(self, "consent")
        object.__setattr__(self, "not_before", require_utc(self.not_before))
        object.__setattr__(self, "expires_at", require_utc(self.expires_at))
        check_positive_int(self.max_uses, "max_uses", 1)
        whole_seconds(self.data_life, "data_life")


@dataclass(frozen=True)
class VerifiedConsentRequest:
    """A consent request whose signature under the bound subject key was checked."""

    terms: ConsentTerms
    subject_kid: str
    issued_at: datetime
    jti: str


@dataclass(frozen=True)
class VerifiedConsent:
    """A consent whose three signatures and mutual agreement were checked."""

    grant_id: str
    issuer: str
    subject_ref: str
    requester: str
    purpose: str
    scope: tuple[str, ...]
    issued_at: datetime
    not_before: datetime
    expires_at: datetime
    max_uses: int
    data_life: timedelta
    request: VerifiedConsentRequest
    binding: VerifiedBinding
    #: Bit index in the registry's revocation list; None for a consent without one.
    status_index: int | None = None


@dataclass(frozen=True)
class CheckedConsentRequest:
    """A consent request and its binding, verified and within the fair-use policy."""

    request_token: str
    binding_token: str
    request: VerifiedConsentRequest
    binding: VerifiedBinding


def status_list_uri(registry_id: str) -> str:
    """The ``uri`` a consent names for the registry's revocation list."""
    return f"credence://{registry_id}/status-list"


def status_claim(index: int, registry_id: str) -> dict[str, Any]:
    """The ``status`` claim placing a consent at bit ``index`` of the registry's list.

    Raises:
        InvalidInput: ``index`` is negative or not an integer.
    """
    check_positive_int(index, "status index", 0)
    return {"status_list": {"idx": index, "uri": status_list_uri(registry_id)}}


def _status_index(claims: Mapping[str, Any]) -> int | None:
    status = claims.get("status")
    if status is None:
        return None
    entry = status.get("status_list") if isinstance(status, dict) else None
    if not isinstance(entry, dict):
        raise InvalidInput("consent claim 'status' must hold a 'status_list' object")
    return check_positive_int(entry.get("idx"), "consent claim 'status.status_list.idx'", 0)


def _terms_claims(terms: ConsentTerms) -> dict[str, Any]:
    return {
        "sub": terms.subject_ref,
        "purpose": terms.purpose,
        "scope": list(terms.scope),
        "nbf": to_epoch(terms.not_before),
        "exp": to_epoch(terms.expires_at),
        "max_uses": terms.max_uses,
        "data_life": whole_seconds(terms.data_life, "data_life"),
    }


def _terms_from_claims(claims: Mapping[str, Any], requester_claim: str, label: str) -> ConsentTerms:
    data_life = claims.get("data_life")
    if isinstance(data_life, bool) or not isinstance(data_life, int):
        raise InvalidInput(f"{label} claim 'data_life' must be an integer, got {data_life!r}")
    try:
        return ConsentTerms(
            subject_ref=check_subject_ref(claims.get("sub"), f"{label} claim 'sub'"),
            requester=claim_str(claims, requester_claim, label),
            purpose=claim_str(claims, "purpose", label),
            scope=check_scope(claims.get("scope"), f"{label} claim 'scope'"),
            not_before=claim_time(claims, "nbf"),
            expires_at=claim_time(claims, "exp"),
            max_uses=check_positive_int(claims.get("max_uses"), f"{label} claim 'max_uses'", 1),
            data_life=timedelta(seconds=data_life),
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{label}: {exc}") from exc


def sign_consent_request(
    terms: ConsentTerms, subject_key: SigningKey, now: datetime, *, jti: str | None = None
) -> str:
    """Sign a consent request with the subject's personal key.

    Raises:
        MessageTooLarge: the token would exceed :data:`CONSENT_REQUEST_MAX_SIZE`.
    """
    claims = {
        **_terms_claims(terms),
        "requester": terms.requester,
        "iat": to_epoch(now),
        "jti": jti or new_jti(),
    }
    return sign_limited(claims, subject_key, CONSENT_REQUEST_TYP, CONSENT_REQUEST_MAX_SIZE)


def verify_consent_request(token: str, binding: VerifiedBinding) -> VerifiedConsentRequest:
    """Verify a consent request under the key the binding names (no time checks).

    Raises:
        UnknownKey: the request is signed by a key other than the bound one.
        ClaimMismatch: the request is for another subject than the binding.
        VerificationError: a bad signature or wrong typ.
        InvalidInput: malformed claims.
    """
    bound = binding.subject_key
    try:
        claims = verify_compact(
            token, KeySet([bound]), CONSENT_REQUEST_TYP, max_size=CONSENT_REQUEST_MAX_SIZE
        )
    except UnknownKey:
        kid = peek_header(token, max_size=CONSENT_REQUEST_MAX_SIZE).get("kid")
        raise UnknownKey(
            f"consent request is signed by key {kid} but the binding names key {bound.kid}"
        ) from None
    terms = _terms_from_claims(claims, "requester", "consent request")
    if terms.subject_ref != binding.subject_ref:
        raise ClaimMismatch(
            f"consent request is for subject {short_ref(terms.subject_ref)} "
            f"but the binding names {short_ref(binding.subject_ref)}"
        )
    return VerifiedConsentRequest(
        terms=terms,
        subject_kid=bound.kid,
        issued_at=claim_time(claims, "iat"),
        jti=claim_str(claims, "jti", "consent request"),
    )


def check_purpose_policy(terms: ConsentTerms, policy: Mapping[str, PurposePolicy]) -> None:
    """Check consent terms against the fair-use caps for their purpose.

    Raises:
        PermissionDenied: the purpose has no policy, or a cap is exceeded.
    """
    caps = policy.get(terms.purpose)
    if caps is None:
        raise PermissionDenied(f"purpose {terms.purpose!r} is not allowed by the fair-use policy")
    validity = terms.expires_at - terms.not_before
    if validity > caps.max_validity:
        raise PermissionDenied(
            f"purpose {terms.purpose!r} allows a validity of at most {caps.max_validity}, "
            f"the consent asks for {validity}"
        )
    if terms.max_uses > caps.max_uses:
        raise PermissionDenied(
            f"purpose {terms.purpose!r} allows at most {caps.max_uses} uses, "
            f"the consent asks for {terms.max_uses}"
        )
    if caps.max_data_life is not None and terms.data_life > caps.max_data_life:
        raise PermissionDenied(
            f"purpose {terms.purpose!r} allows a data life of at most {caps.max_data_life}, "
            f"the consent asks for {terms.data_life}"
        )


def check_consent_request(
    request_token: str,
    binding_token: str,
    *,
    identity_keys: KeySet,
    now: datetime,
    policy: Mapping[str, PurposePolicy],
) -> CheckedConsentRequest:
    """Verify a subject's consent request and its binding, before countersigning.

    Raises:
        VerificationError: the binding or request does not verify, or the
            request has expired.
        PermissionDenied: the request exceeds the policy for its purpose.
    """
    binding = verify_binding(binding_token, identity_keys=identity_keys, now=now)
    request = verify_consent_request(request_token, binding)
    # The request may start in the future (nbf), so only expiry and issue time count now.
    check_time_claims(
        {"exp": to_epoch(request.terms.expires_at), "iat": to_epoch(request.issued_at)},
        now,
        label="consent request",
    )
    check_purpose_policy(request.terms, policy)
    return CheckedConsentRequest(request_token, binding_token, request, binding)


def sign_consent(
    checked: CheckedConsentRequest,
    *,
    registry_key: SigningKey,
    registry_id: str,
    now: datetime,
    jti: str | None = None,
    status_index: int | None = None,
) -> str:
    """Countersign a checked consent request.

    The consent copies the request's terms; it ends when the binding ends if
    that is sooner. ``status_index`` places it in the registry's revocation list.

    Raises:
        InvalidInput: a negative ``status_index`` or a malformed registry id.
        MessageTooLarge: the consent would exceed :data:`CONSENT_MAX_SIZE`.
    """
    terms = checked.request.terms
    claims = {
        **_terms_claims(terms),
        "iss": check_text(registry_id, "registry id"),
        "aud": terms.requester,
        "exp": to_epoch(min(terms.expires_at, checked.binding.expires_at)),
        "iat": to_epoch(now),
        "jti": jti or new_jti(),
        "req": checked.request_token,
        "bnd": checked.binding_token,
    }
    if status_index is not None:
        claims["status"] = status_claim(status_index, registry_id)
    return sign_limited(claims, registry_key, CONSENT_TYP, CONSENT_MAX_SIZE)


def countersign_consent(
    request_token: str,
    binding_token: str,
    *,
    registry_key: SigningKey,
    registry_id: str,
    identity_keys: KeySet,
    now: datetime,
    policy: Mapping[str, PurposePolicy],
    jti: str | None = None,
    status_index: int | None = None,
) -> str:
    """Verify a subject's consent request and its binding, then countersign it.

    Terms beyond the fair-use policy are refused, not shrunk, so the subject
    never grants something other than what they signed.

    Raises:
        VerificationError: the binding or request does not verify, or the
            request has expired.
        PermissionDenied: the request exceeds the policy for its purpose.
        MessageTooLarge: the consent would exceed :data:`CONSENT_MAX_SIZE`.
    """
    checked = check_consent_request(
        request_token, binding_token, identity_keys=identity_keys, now=now, policy=policy
    )
    return sign_consent(
        checked,
        registry_key=registry_key,
        registry_id=registry_id,
        now=now,
        jti=jti,
        status_index=status_index,
    )


def _check_within_request(consent: ConsentTerms, requested: ConsentTerms) -> None:
    if consent.subject_ref != requested.subject_ref:
        raise ClaimMismatch(
            f"consent is for subject {short_ref(consent.subject_ref)} "
            f"but the request names {short_ref(requested.subject_ref)}"
        )
    if consent.requester != requested.requester:
        raise ClaimMismatch(
            f"consent is addressed to {consent.requester!r} "
            f"but the subject named requester {requested.requester!r}"
        )
    if consent.purpose != requested.purpose:
        raise ClaimMismatch(
            f"consent is for purpose {consent.purpose!r} "
            f"but the request names {requested.purpose!r}"
        )
    extra = sorted(set(consent.scope) - set(requested.scope))
    if extra:
        raise ClaimMismatch(f"consent scope includes {extra}, which the request does not")
    if consent.not_before < requested.not_before or consent.expires_at > requested.expires_at:
        raise ClaimMismatch(
            f"consent is valid {format_time(consent.not_before)} to "
            f"{format_time(consent.expires_at)}, outside the request's "
            f"{format_time(requested.not_before)} to {format_time(requested.expires_at)}"
        )
    if consent.max_uses > requested.max_uses:
        raise ClaimMismatch(
            f"consent allows {consent.max_uses} uses but the request allows {requested.max_uses}"
        )
    if consent.data_life > requested.data_life:
        raise ClaimMismatch(
            f"consent allows a data life of {consent.data_life} "
            f"but the request allows {requested.data_life}"
        )


def verify_consent(
    token: str,
    *,
    registry_keys: KeySet,
    identity_keys: KeySet,
    expected_audience: str | None,
    now: datetime,
    policy: Mapping[str, PurposePolicy] | None,
    expected_issuer: str | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> VerifiedConsent:
    """Verify a consent: registry countersignature, subject request, binding, agreement.

    Raises:
        MessageTooLarge: the token exceeds :data:`CONSENT_MAX_SIZE`.
        InvalidInput: malformed token or claims.
        BadSignature: any of the three signatures does not verify.
        UnknownKey: an unknown registry or identity key, or the request is not
            signed by the bound key.
        WrongPayloadType: a token of another kind (e.g. a mandate).
        Expired: the consent or its binding has expired.
        NotYetValid: the consent is not valid yet.
        WrongAudience: the consent is for another requester.
        WrongIssuer: the consent is not from ``expected_issuer``.
        ClaimMismatch: the consent goes beyond what the subject requested.
        PermissionDenied: the consent exceeds the fair-use policy.
    """
    claims = verify_compact(token, registry_keys, CONSENT_TYP, max_size=CONSENT_MAX_SIZE)
    check_time_claims(claims, now, skew, label="consent")
    if expected_audience is not None:
        check_audience(claims, expected_audience, label="consent")
    if expected_issuer is not None:
        check_issuer(claims, expected_issuer, label="consent")
    terms = _terms_from_claims(claims, "aud", "consent")
    request_token, binding_token = claims.get("req"), claims.get("bnd")
    if not isinstance(request_token, str) or not request_token:
        raise InvalidInput("consent lacks the subject's signed request 'req'")
    if not isinstance(binding_token, str) or not binding_token:
        raise InvalidInput("consent lacks the subject key binding 'bnd'")
    binding = verify_binding(binding_token, identity_keys=identity_keys, now=now, skew=skew)
    request = verify_consent_request(request_token, binding)
    _check_within_request(terms, request.terms)
    if policy is not None:
        check_purpose_policy(terms, policy)
    return VerifiedConsent(
        grant_id=claim_str(claims, "jti", "consent"),
        issuer=claim_str(claims, "iss", "consent"),
        subject_ref=terms.subject_ref,
        requester=terms.requester,
        purpose=terms.purpose,
        scope=terms.scope,
        issued_at=claim_time(claims, "iat"),
        not_before=terms.not_before,
        expires_at=terms.expires_at,
        max_uses=terms.max_uses,
        data_life=terms.data_life,
        request=request,
        binding=binding,
        status_index=_status_index(claims),
    )
