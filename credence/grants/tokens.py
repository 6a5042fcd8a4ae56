"""Grants (consent and mandate) as compact JWS: the public surface.

The documents live in :mod:`credence.grants.binding`,
:mod:`credence.grants.consent` (consent request, consent) and
:mod:`credence.grants.mandate`; this module re-exports them and
adds the one check every node makes before answering: does this verified
grant cover this query?
"""

from __future__ import annotations

from collections.abc import Iterable

from credence.errors import ClaimMismatch, WrongAudience
from credence.grants._claims import KINDS, short_ref
from credence.grants.binding import (
    BINDING_MAX_SIZE,
    BINDING_TYP,
    VerifiedBinding,
    issue_binding,
    verify_binding,
)
from credence.grants.consent import (
    CONSENT_MAX_SIZE,
    CONSENT_REQUEST_MAX_SIZE,
    CONSENT_REQUEST_TYP,
    CONSENT_TYP,
    ConsentTerms,
    PurposePolicy,
    VerifiedConsent,
    VerifiedConsentRequest,
    check_purpose_policy,
    countersign_consent,
    sign_consent_request,
    verify_consent,
    verify_consent_request,
)
from credence.grants.mandate import (
    DEFAULT_MAX_EMBARGO,
    MANDATE_MAX_SIZE,
    MANDATE_TYP,
    LegalBasis,
    MandateTerms,
    VerifiedMandate,
    issue_mandate,
    verify_mandate,
)

__all__ = [
    "BINDING_MAX_SIZE",
    "BINDING_TYP",
    "CONSENT_MAX_SIZE",
    "CONSENT_REQUEST_MAX_SIZE",
    "CONSENT_REQUEST_TYP",
    "CONSENT_TYP",
    "DEFAULT_MAX_EMBARGO",
    "KINDS",
    "MANDATE_MAX_SIZE",
    "MANDATE_TYP",
    "ConsentTerms",
    "Grant",
    "LegalBasis",
    "MandateTerms",
    "PurposePolicy",
    "VerifiedBinding",
    "VerifiedConsent",
    "VerifiedConsentRequest",
    "VerifiedMandate",
    "check_grant_for_query",
    "check_purpose_policy",
    "countersign_consent",
    "issue_binding",
    "issue_mandate",
    "sign_consent_request",
    "verify_binding",
    "verify_consent",
    "verify_consent_request",
    "verify_mandate",
]

Grant = VerifiedConsent | VerifiedMandate


def check_grant_for_query(
    grant: Grant,
    *,
    subject_ref_hex: str,
    requester: str,
    purpose: str,
    kinds: Iterable[str],
) -> None:
    """Check that a verified grant covers a query (subject, requester, purpose, kinds).

    Validity in time and signatures are checked when the grant is verified;
    revocation and use counting are the registry's.

    Raises:
        ClaimMismatch: the grant is for another subject or purpose, or does not
            cover a requested kind.
        WrongAudience: the grant was issued to another requester.
    """
    name = "consent" if isinstance(grant, VerifiedConsent) else "mandate"
    if grant.subject_ref != subject_ref_hex:
        raise ClaimMismatch(
            f"{name} {grant.grant_id} is for subject {short_ref(grant.subject_ref)} "
            f"but the query names {short_ref(subject_ref_hex)}"
        )
    if grant.requester != requester:
        raise WrongAudience(
            f"{name} {grant.grant_id} was issued to {grant.requester!r}, not to {requester!r}"
        )
    if grant.purpose != purpose:
        raise ClaimMismatch(
            f"{name} {grant.grant_id} is for purpose {grant.purpose!r}, not {purpose!r}"
        )
    wanted = list(kinds)
    if not wanted:
        raise ClaimMismatch("the query names no verdict kind")
    missing = sorted(set(wanted) - set(grant.scope))
    if missing:
        raise ClaimMismatch(
            f"{name} {grant.grant_id} covers {', '.join(grant.scope)} "
            f"but the query asks for {', '.join(missing)}"
        )
