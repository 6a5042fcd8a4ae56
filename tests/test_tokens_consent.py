from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from support.grants import (
    NOW,
    OTHER_SUBJECT,
    PURPOSE,
    REGISTRY_ID,
    REQUESTER,
    SUBJECT,
    World,
    claims_of,
    key,
)

from credence.errors import (
    BadSignature,
    ClaimMismatch,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotYetValid,
    PermissionDenied,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongPayloadType,
)
from credence.grants.tokens import (
    CONSENT_REQUEST_TYP,
    PurposePolicy,
    countersign_consent,
)
from credence.jws import sign_compact
from credence.keys import KeySet

WORLD = World()


def test_consent_round_trip() -> None:
    consent = WORLD.verify(WORLD.consent(), expected_issuer=REGISTRY_ID)
    assert consent.issuer == REGISTRY_ID
    assert consent.subject_ref == SUBJECT
    assert consent.requester == REQUESTER
    assert consent.purpose == PURPOSE
    assert consent.scope == ("blacklist", "credit")
    assert (consent.not_before, consent.expires_at) == (NOW, NOW + timedelta(days=7))
    assert consent.max_uses == 3
    assert consent.data_life == timedelta(days=30)
    assert consent.issued_at == NOW
    assert consent.request.subject_kid == WORLD.subject.kid
    assert consent.binding.subject_key == WORLD.subject.public
    assert len({consent.grant_id, consent.request.jti, consent.binding.jti}) == 3


def test_consent_embeds_the_exact_request_and_binding() -> None:
    request, binding = WORLD.request(), WORLD.binding()
    claims = claims_of(WORLD.consent(request, binding))
    assert (claims["req"], claims["bnd"]) == (request, binding)
    assert claims["aud"] == REQUESTER


def test_scope_is_normalised_and_validated() -> None:
    assert WORLD.terms(scope=("credit", "blacklist")).scope == ("blacklist", "credit")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subject_ref": SUBJECT.upper()}, "64 lowercase hex"),
        ({"scope": ()}, "at least one verdict kind"),
        ({"scope": ("fraud",)}, "names 'fraud'"),
        ({"scope": ("credit", "credit")}, "twice"),
        ({"scope": "credit"}, "list of verdict kinds"),
        ({"max_uses": 0}, "max_uses must be an integer >= 1"),
        ({"max_uses": True}, "max_uses must be an integer >= 1"),
        ({"data_life": timedelta(seconds=-1)}, "data_life must be a non-negative"),
        ({"data_life": timedelta(seconds=1.5)}, "whole number of seconds"),
        ({"expires_at": NOW}, "must expire after it becomes valid"),
        ({"purpose": ""}, "purpose must be a non-empty string"),
        ({"requester": "x" * 257}, "at most 256"),
    ],
)
def test_consent_terms_refuse_bad_input(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        WORLD.terms(**changes)


def test_consent_terms_refuse_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WORLD.terms(not_before=datetime(2026, 11, 28, 10, 0))


# --- the registry's countersignature ----------------------------------------


def test_countersign_refuses_a_request_signed_by_another_subjects_key() -> None:
    request = WORLD.request(personal=WORLD.other_subject)
    expected = (
        f"consent request is signed by key {WORLD.other_subject.kid} "
        f"but the binding names key {WORLD.subject.kid}"
    )
    with pytest.raises(UnknownKey, match=expected):
        WORLD.consent(request=request)


def test_countersign_refuses_a_binding_from_an_unknown_identity_member() -> None:
    with pytest.raises(UnknownKey, match=key("rogue").kid):
        WORLD.consent(binding=WORLD.binding(issuer_key=key("rogue")))


def test_countersign_refuses_a_binding_for_another_subject() -> None:
    binding = WORLD.binding(subject_ref=OTHER_SUBJECT)
    expected = (
        f"consent request is for subject …{SUBJECT[-8:]} "
        f"but the binding names …{OTHER_SUBJECT[-8:]}"
    )
    with pytest.raises(ClaimMismatch, match=expected):
        WORLD.consent(binding=binding)


def test_countersign_refuses_an_expired_request() -> None:
    request = WORLD.request(WORLD.terms(expires_at=NOW + timedelta(hours=1)))
    with pytest.raises(Expired, match="consent request expired at 2026-11-28T11:00:00Z"):
        WORLD.consent(request=request, now=NOW + timedelta(hours=2))


def test_countersign_accepts_a_request_that_starts_later() -> None:
    later = NOW + timedelta(days=3)
    token = WORLD.consent(request=WORLD.request(WORLD.terms(now=later)))
    assert WORLD.verify(token, now=later).not_before == later
    with pytest.raises(NotYetValid, match="consent is not valid before 2026-12-01T10:00:00Z"):
        WORLD.verify(token)


def test_countersign_refuses_a_consent_request_of_another_typ() -> None:
    request = sign_compact(claims_of(WORLD.request()), WORLD.subject, "mandate+jwt")
    with pytest.raises(WrongPayloadType, match=r"expected 'consent-request\+jwt'"):
        WORLD.consent(request=request)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_uses": 6}, "purpose 'counterparty-check' allows at most 5 uses, the consent asks"),
        ({"expires_at": NOW + timedelta(days=31)}, "allows a validity of at most 30 days"),
        ({"purpose": "marketing"}, "purpose 'marketing' is not allowed by the fair-use policy"),
    ],
)
def test_countersign_refuses_terms_beyond_the_policy(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PermissionDenied, match=message):
        WORLD.consent(request=WORLD.request(WORLD.terms(**changes)))


def test_policy_caps_data_life_when_set() -> None:
    world = World(policy={PURPOSE: PurposePolicy(timedelta(days=30), 5, timedelta(days=7))})
    with pytest.raises(PermissionDenied, match="data life of at most 7 days"):
        world.consent()


def test_consent_ends_when_the_binding_ends() -> None:
    binding = WORLD.binding(validity=timedelta(days=2))
    consent = WORLD.verify(WORLD.consent(binding=binding))
    assert consent.expires_at == NOW + timedelta(days=2)


def test_registry_id_must_be_given() -> None:
    with pytest.raises(InvalidInput, match="registry id"):
        countersign_consent(
            WORLD.request(),
            WORLD.binding(),
            registry_key=WORLD.registry,
            registry_id="",
            identity_keys=WORLD.identity_keys,
            now=NOW,
            policy=WORLD.policy,
        )


# --- what a node refuses ----------------------------------------------------


def test_consent_without_the_subject_signature_is_refused() -> None:
    with pytest.raises(InvalidInput, match="lacks the subject's signed request 'req'"):
        WORLD.verify(WORLD.forge_consent(req=None))
    unsigned = WORLD.request().rsplit(".", 1)[0] + "."
    with pytest.raises(BadSignature, match="must be 64 bytes, got 0"):
        WORLD.verify(WORLD.forge_consent(req=unsigned))


def test_consent_with_a_request_the_registry_signed_itself_is_refused() -> None:
    request = sign_compact(claims_of(WORLD.request()), WORLD.registry, CONSENT_REQUEST_TYP)
    with pytest.raises(UnknownKey, match=f"signed by key {WORLD.registry.kid} but the binding"):
        WORLD.verify(WORLD.forge_consent(req=request))


def test_consent_with_a_request_from_another_subjects_key_is_refused() -> None:
    request = WORLD.request(personal=WORLD.other_subject)
    with pytest.raises(UnknownKey, match=f"signed by key {WORLD.other_subject.kid}"):
        WORLD.verify(WORLD.forge_consent(req=request))


def test_consent_without_a_binding_is_refused() -> None:
    with pytest.raises(InvalidInput, match="lacks the subject key binding 'bnd'"):
        WORLD.verify(WORLD.forge_consent(bnd=""))


def test_consent_with_a_binding_from_an_unknown_identity_member_is_refused() -> None:
    rogue = key("rogue identity")
    consent = WORLD.forge_consent(bnd=WORLD.binding(issuer_key=rogue))
    with pytest.raises(UnknownKey, match=rogue.kid):
        WORLD.verify(consent)


def test_consent_for_another_subject_than_the_request_is_refused() -> None:
    expected = f"consent is for subject …{OTHER_SUBJECT[-8:]} but the request names …{SUBJECT[-8:]}"
    with pytest.raises(ClaimMismatch, match=expected):
        WORLD.verify(WORLD.forge_consent(sub=OTHER_SUBJECT))


def test_binding_for_another_subject_than_the_request_is_refused() -> None:
    # A genuine binding of the same personal key, but for a different subject.
    consent = WORLD.forge_consent(bnd=WORLD.binding(subject_ref=OTHER_SUBJECT))
    with pytest.raises(ClaimMismatch, match=f"binding names …{OTHER_SUBJECT[-8:]}"):
        WORLD.verify(consent)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_uses": 4}, "consent allows 4 uses but the request allows 3"),
        ({"data_life": 31 * 86400}, "data life of 31 days, 0:00:00 but the request allows 30 days"),
        ({"purpose": "debt-collection"}, "purpose 'debt-collection' but the request names"),
        ({"aud": "mallory"}, "addressed to 'mallory' but the subject named requester 'acme"),
        ({"nbf": int(NOW.timestamp()) - 60}, "outside the request's"),
        ({"exp": int((NOW + timedelta(days=8)).timestamp())}, "outside the request's"),
    ],
)
def test_consent_wider_than_the_request_is_refused(
    overrides: dict[str, object], message: str
) -> None:
    audience = overrides.get("aud", REQUESTER)
    consent = WORLD.forge_consent(**overrides)
    with pytest.raises(ClaimMismatch, match=message):
        WORLD.verify(consent, expected_audience=audience, policy=None)


def test_consent_scope_wider_than_the_request_is_refused() -> None:
    request = WORLD.request(WORLD.terms(scope=("blacklist",)))
    consent = WORLD.forge_consent(req=request, scope=["blacklist", "credit"])
    with pytest.raises(ClaimMismatch, match=r"consent scope includes \['credit'\]"):
        WORLD.verify(consent)


def test_consent_narrower_than_the_request_is_accepted() -> None:
    consent = WORLD.forge_consent(scope=["credit"], max_uses=1, data_life=3600)
    verified = WORLD.verify(consent)
    assert (verified.scope, verified.max_uses, verified.data_life) == (
        ("credit",),
        1,
        timedelta(hours=1),
    )


def test_nodes_recheck_the_policy() -> None:
    # The subject asked for 10 uses and a registry with a looser policy signed it.
    loose = World(policy={PURPOSE: PurposePolicy(timedelta(days=30), 10)})
    token = loose.consent(request=loose.request(loose.terms(max_uses=10)))
    assert WORLD.verify(token, policy=None).max_uses == 10
    with pytest.raises(PermissionDenied, match="allows at most 5 uses, the consent asks for 10"):
        WORLD.verify(token)


def test_expired_consent_is_refused() -> None:
    later = NOW + timedelta(days=7, minutes=5)
    with pytest.raises(
        Expired, match=r"consent expired at 2026-12-05T10:00:00Z \(now 2026-12-05T10:05:00Z\)"
    ):
        WORLD.verify(WORLD.consent(), now=later)


def test_consent_whose_binding_expired_is_refused() -> None:
    binding = WORLD.binding(validity=timedelta(days=1))
    consent = WORLD.forge_consent(bnd=binding)
    with pytest.raises(Expired, match="binding expired at 2026-11-29T10:00:00Z"):
        WORLD.verify(consent, now=NOW + timedelta(days=2))


def test_consent_for_another_requester_is_refused() -> None:
    with pytest.raises(WrongAudience, match="consent is for 'acme-leasing', not for 'mallory'"):
        WORLD.verify(WORLD.consent(), expected_audience="mallory")


def test_consent_from_another_issuer_is_refused() -> None:
    with pytest.raises(WrongIssuer, match="issued by 'registry'; accepted: \\['registry-2'\\]"):
        WORLD.verify(WORLD.consent(), expected_issuer="registry-2")


def test_consent_signed_by_an_unknown_registry_key_is_refused() -> None:
    with pytest.raises(UnknownKey, match=WORLD.registry.kid):
        WORLD.verify(WORLD.consent(), registry_keys=KeySet([key("new registry").public]))


def test_tampered_consent_is_refused() -> None:
    header, _, signature = WORLD.consent().split(".")
    payload = WORLD.forge_consent(max_uses=1).split(".")[1]
    with pytest.raises(BadSignature, match="does not verify"):
        WORLD.verify(f"{header}.{payload}.{signature}")


def test_a_mandate_presented_as_a_consent_is_refused() -> None:
    with pytest.raises(WrongPayloadType, match=r"'mandate\+jwt', expected 'consent\+jwt'"):
        WORLD.verify(WORLD.mandate())


def test_a_consent_request_presented_as_a_consent_is_refused() -> None:
    with pytest.raises(WrongPayloadType, match=r"'consent-request\+jwt'"):
        WORLD.verify(WORLD.request())


def test_oversized_consent_is_refused() -> None:
    token = WORLD.forge_consent(pad="x" * 16384)
    with pytest.raises(MessageTooLarge, match="limit is 16384"):
        WORLD.verify(token)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data_life": "30d"}, "'data_life' must be an integer"),
        ({"max_uses": 1.0}, "'max_uses' must be an integer >= 1"),
        ({"scope": ["credit", "fraud"]}, "names 'fraud'"),
        ({"exp": 1.9e9}, "'exp' must be an integer NumericDate"),
    ],
)
def test_malformed_consent_claims_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        WORLD.verify(WORLD.forge_consent(**overrides))


def test_terms_are_frozen() -> None:
    terms = WORLD.terms()
    with pytest.raises(AttributeError):
        terms.max_uses = 9  # type: ignore[misc]
    assert replace(terms, max_uses=2).max_uses == 2
