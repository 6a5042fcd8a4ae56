from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from support.grants import AUTHORITY_ID, NOW, SUBJECT, World, claims_of, key

from credence.errors import (
    BadSignature,
    ClaimMismatch,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotYetValid,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongPayloadType,
)
from credence.grants.tokens import (
    MANDATE_TYP,
    LegalBasis,
    VerifiedMandate,
    issue_mandate,
    verify_mandate,
)
from credence.jws import sign_compact
from credence.keys import KeySet

WORLD = World()


def verify(
    token: str,
    *,
    authority_keys: KeySet = WORLD.authority_keys,
    expected_audience: str | None = AUTHORITY_ID,
    now: datetime = NOW,
    max_embargo: timedelta = timedelta(days=90),
    expected_issuer: str | None = None,
) -> VerifiedMandate:
    return verify_mandate(
        token,
        authority_keys=authority_keys,
        expected_audience=expected_audience,
        now=now,
        max_embargo=max_embargo,
        expected_issuer=expected_issuer,
    )


def forge(**overrides: object) -> str:
    """A genuine mandate re-signed by the authority with changed claims."""
    return sign_compact({**claims_of(WORLD.mandate()), **overrides}, WORLD.authority, MANDATE_TYP)


def test_mandate_round_trip() -> None:
    token = WORLD.mandate()
    mandate = verify(token, expected_issuer=AUTHORITY_ID)
    assert mandate.issuer == AUTHORITY_ID
    assert mandate.subject_ref == SUBJECT
    assert mandate.requester == AUTHORITY_ID
    assert mandate.purpose == "tax-enforcement"
    assert mandate.scope == ("credit",)
    assert mandate.legal_basis == LegalBasis("Tax Procedure Act s. 93", "TX-2026-0042")
    assert (mandate.issued_at, mandate.not_before) == (NOW, NOW)
    assert mandate.expires_at == NOW + timedelta(days=14)
    assert mandate.embargo_until == NOW + timedelta(days=60)
    assert mandate.grant_id == claims_of(token)["jti"]


def test_issue_refuses_an_embargo_beyond_the_maximum() -> None:
    terms = WORLD.mandate_terms(embargo_until=NOW + timedelta(days=91))
    with pytest.raises(InvalidInput, match="embargo until 2027-02-27T10:00:00Z is more than 90"):
        WORLD.mandate(terms)
    issue_mandate(
        terms,
        authority_id=AUTHORITY_ID,
        authority_key=WORLD.authority,
        now=NOW,
        max_embargo=timedelta(days=91),
    )


def test_verify_refuses_an_embargo_beyond_the_maximum() -> None:
    token = forge(embargo_until=int((NOW + timedelta(days=120)).timestamp()))
    with pytest.raises(ClaimMismatch, match="is more than 90 days, 0:00:00 after its issue"):
        verify(token)
    with pytest.raises(ClaimMismatch, match="more than 30 days"):
        verify(WORLD.mandate(), max_embargo=timedelta(days=30))


def test_mandate_from_a_non_authority_is_refused() -> None:
    # A member without the authority role signs a mandate for itself.
    rogue = key("rogue company")
    token = issue_mandate(
        WORLD.mandate_terms(), authority_id=AUTHORITY_ID, authority_key=rogue, now=NOW
    )
    with pytest.raises(UnknownKey, match=rogue.kid):
        verify(token)


def test_a_consent_presented_as_a_mandate_is_refused() -> None:
    consent = WORLD.consent()
    with pytest.raises(WrongPayloadType, match=r"'consent\+jwt', expected 'mandate\+jwt'"):
        verify(consent, authority_keys=KeySet([WORLD.registry.public]))


def test_tampered_mandate_is_refused() -> None:
    header, _, signature = WORLD.mandate().split(".")
    payload = forge(scope=["blacklist", "credit"]).split(".")[1]
    with pytest.raises(BadSignature, match="does not verify"):
        verify(f"{header}.{payload}.{signature}")


def test_expired_mandate_is_refused() -> None:
    with pytest.raises(Expired, match="mandate expired at 2026-12-12T10:00:00Z"):
        verify(WORLD.mandate(), now=NOW + timedelta(days=15))


def test_mandate_not_yet_valid_is_refused() -> None:
    later = NOW + timedelta(days=2)
    token = WORLD.mandate(WORLD.mandate_terms(now=later), now=NOW)
    with pytest.raises(NotYetValid, match="mandate is not valid before 2026-11-30T10:00:00Z"):
        verify(token)


def test_mandate_for_another_requester_is_refused() -> None:
    with pytest.raises(WrongAudience, match="mandate is for 'tax-office', not for 'police'"):
        verify(WORLD.mandate(), expected_audience="police")


def test_mandate_from_another_issuer_is_refused() -> None:
    with pytest.raises(WrongIssuer, match="issued by 'tax-office'"):
        verify(WORLD.mandate(), expected_issuer="court")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"legal_basis": None}, "'legal_basis' must be {statute, case}"),
        ({"legal_basis": {"statute": "x"}}, "'legal_basis' must be {statute, case}"),
        ({"legal_basis": {"statute": "x", "case": ""}}, "legal basis case"),
        ({"embargo_until": "2027-01-01"}, "'embargo_until' must be an integer"),
        ({"scope": []}, "at least one verdict kind"),
        ({"sub": "not-a-ref"}, "claim 'sub' must be 64 lowercase hex"),
        ({"nbf": None}, "'nbf' must be an integer"),
    ],
)
def test_malformed_mandate_claims_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        verify(forge(**overrides))


def test_oversized_mandate_is_refused() -> None:
    with pytest.raises(MessageTooLarge, match="limit is 8192"):
        verify(forge(pad="x" * 8192))


def test_legal_basis_requires_both_parts() -> None:
    with pytest.raises(InvalidInput, match="legal basis statute"):
        LegalBasis(statute="", case="C-1")
