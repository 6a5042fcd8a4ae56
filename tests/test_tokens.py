from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from support.grants import (
    AUTHORITY_ID,
    NOW,
    OTHER_SUBJECT,
    PURPOSE,
    REGISTRY_ID,
    REQUESTER,
    SUBJECT,
    World,
)

from credence.errors import ClaimMismatch, WrongAudience
from credence.grants import tokens
from credence.grants.tokens import Grant, VerifiedConsent, VerifiedMandate, check_grant_for_query

WORLD = World()


def consent_grant() -> VerifiedConsent:
    return WORLD.verify(WORLD.consent(request=WORLD.request(WORLD.terms(scope=("blacklist",)))))


def mandate_grant() -> VerifiedMandate:
    return tokens.verify_mandate(
        WORLD.mandate(),
        authority_keys=WORLD.authority_keys,
        expected_audience=AUTHORITY_ID,
        now=NOW,
        max_embargo=timedelta(days=90),
    )


def test_public_surface_is_pinned() -> None:
    assert sorted(tokens.__all__) == sorted(
        [
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
    )
    for name in tokens.__all__:
        assert hasattr(tokens, name), name


@pytest.mark.parametrize(
    ("grant", "requester", "purpose", "kinds"),
    [
        (consent_grant(), REQUESTER, PURPOSE, ["blacklist"]),
        (mandate_grant(), AUTHORITY_ID, "tax-enforcement", ["credit"]),
    ],
)
def test_grant_covers_its_query(
    grant: Grant, requester: str, purpose: str, kinds: list[str]
) -> None:
    check_grant_for_query(
        grant, subject_ref_hex=SUBJECT, requester=requester, purpose=purpose, kinds=kinds
    )


def test_grant_for_another_subject_is_refused() -> None:
    grant = consent_grant()
    expected = f"is for subject …{SUBJECT[-8:]} but the query names …{OTHER_SUBJECT[-8:]}"
    with pytest.raises(ClaimMismatch, match=expected):
        check_grant_for_query(
            grant,
            subject_ref_hex=OTHER_SUBJECT,
            requester=REQUESTER,
            purpose=PURPOSE,
            kinds=["blacklist"],
        )


def test_grant_used_by_another_requester_is_refused() -> None:
    grant = mandate_grant()
    with pytest.raises(WrongAudience, match="issued to 'tax-office', not to 'acme-leasing'"):
        check_grant_for_query(
            grant,
            subject_ref_hex=SUBJECT,
            requester=REQUESTER,
            purpose="tax-enforcement",
            kinds=["credit"],
        )


def test_grant_for_another_purpose_is_refused() -> None:
    with pytest.raises(ClaimMismatch, match="for purpose 'counterparty-check', not 'marketing'"):
        check_grant_for_query(
            consent_grant(),
            subject_ref_hex=SUBJECT,
            requester=REQUESTER,
            purpose="marketing",
            kinds=["blacklist"],
        )


def test_kind_outside_the_scope_is_refused() -> None:
    grant = consent_grant()
    with pytest.raises(
        ClaimMismatch,
        match=f"consent {grant.grant_id} covers blacklist but the query asks for credit",
    ):
        check_grant_for_query(
            grant,
            subject_ref_hex=SUBJECT,
            requester=REQUESTER,
            purpose=PURPOSE,
            kinds=["blacklist", "credit"],
        )


def test_query_without_kinds_is_refused() -> None:
    with pytest.raises(ClaimMismatch, match="names no verdict kind"):
        check_grant_for_query(
            consent_grant(), subject_ref_hex=SUBJECT, requester=REQUESTER, purpose=PURPOSE, kinds=[]
        )


# --- interoperability: PyJWT reads our grants with a key object ---------------


def test_pyjwt_verifies_a_consent_and_refuses_a_tampered_one() -> None:
    # PyJWT reads the real clock, so this consent is issued around the real time.
    now = datetime.now(UTC)
    world = World()
    token = world.consent(
        world.request(world.terms(now=now), now=now), world.binding(now=now), now=now
    )
    claims = jwt.decode(
        token,
        key=world.registry.public.public_key,
        algorithms=["EdDSA"],
        audience=REQUESTER,
        issuer=REGISTRY_ID,
    )
    assert claims["sub"] == SUBJECT
    assert jwt.get_unverified_header(token)["typ"] == "consent+jwt"
    # The embedded subject request verifies under the subject's key from the binding.
    subject_claims = jwt.decode(
        claims["req"], key=world.subject.public.public_key, algorithms=["EdDSA"]
    )
    assert subject_claims["requester"] == REQUESTER

    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{header}.{payload}.{flipped}",
            key=world.registry.public.public_key,
            algorithms=["EdDSA"],
            audience=REQUESTER,
        )


def test_pyjwt_verifies_a_mandate() -> None:
    now = datetime.now(UTC)
    token = WORLD.mandate(WORLD.mandate_terms(now=now), now=now)
    claims = jwt.decode(
        token, key=WORLD.authority.public.public_key, algorithms=["EdDSA"], audience=AUTHORITY_ID
    )
    assert claims["legal_basis"]["case"] == "TX-2026-0042"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            token, key=WORLD.authority.public.public_key, algorithms=["EdDSA"], audience="police"
        )
