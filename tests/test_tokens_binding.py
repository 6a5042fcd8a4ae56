from __future__ import annotations

from datetime import timedelta

import pytest
from support.grants import IDENTITY_ID, NOW, SUBJECT, World, claims_of, key

from credence.errors import (
    BadSignature,
    Expired,
    InvalidInput,
    MessageTooLarge,
    UnknownKey,
    WrongPayloadType,
)
from credence.grants.tokens import BINDING_TYP, issue_binding, verify_binding
from credence.jws import sign_compact
from credence.keys import KeySet

WORLD = World()


def test_binding_round_trip() -> None:
    token = WORLD.binding(validity=timedelta(days=10))
    binding = verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW)
    assert binding.issuer == IDENTITY_ID
    assert binding.subject_ref == SUBJECT
    assert binding.subject_key == WORLD.subject.public
    assert binding.issued_at == NOW
    assert binding.expires_at == NOW + timedelta(days=10)
    assert claims_of(token)["sjwk"]["kid"] == WORLD.subject.kid


def test_binding_from_an_unknown_identity_member_is_refused() -> None:
    token = WORLD.binding(issuer_key=key("rogue member"))
    with pytest.raises(UnknownKey, match=key("rogue member").kid):
        verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW)


def test_binding_from_a_non_identity_member_is_refused() -> None:
    # The registry's own key is not an identity key: it cannot vouch for subjects.
    token = WORLD.binding(issuer_key=WORLD.registry)
    with pytest.raises(UnknownKey, match="not among the trusted keys"):
        verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW)


def test_expired_binding_is_refused() -> None:
    token = WORLD.binding(validity=timedelta(days=1))
    with pytest.raises(Expired, match="binding expired at 2026-11-29T10:00:00Z"):
        verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW + timedelta(days=2))


def test_binding_typ_is_checked() -> None:
    claims = claims_of(WORLD.binding())
    token = sign_compact(claims, WORLD.identity, "consent+jwt")
    with pytest.raises(WrongPayloadType, match=r"expected 'binding\+jwt'"):
        verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW)


def test_tampered_binding_key_is_refused() -> None:
    header, _, signature = WORLD.binding().split(".")
    swapped = WORLD.binding(personal=key("attacker personal")).split(".")[1]
    with pytest.raises(BadSignature, match="does not verify"):
        verify_binding(
            f"{header}.{swapped}.{signature}", identity_keys=WORLD.identity_keys, now=NOW
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sjwk": None}, "lacks the subject's public key"),
        ({"sjwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}, "32 bytes"),
        ({"sjwk": {**key("x").public.to_jwk(), "d": "secret"}}, "holds a private key"),
        ({"sub": "AB" * 32}, "64 lowercase hex"),
        ({"iss": ""}, "claim 'iss'"),
    ],
)
def test_malformed_binding_claims_are_refused(change: dict[str, object], message: str) -> None:
    token = sign_compact({**claims_of(WORLD.binding()), **change}, WORLD.identity, BINDING_TYP)
    with pytest.raises(InvalidInput, match=message):
        verify_binding(token, identity_keys=WORLD.identity_keys, now=NOW)


def test_oversized_binding_is_refused() -> None:
    token = sign_compact(
        {**claims_of(WORLD.binding()), "pad": "x" * 5000}, WORLD.identity, BINDING_TYP
    )
    with pytest.raises(MessageTooLarge, match="limit is 4096"):
        verify_binding(token, identity_keys=KeySet([WORLD.identity.public]), now=NOW)


@pytest.mark.parametrize(
    ("subject_ref", "member_id", "validity", "message"),
    [
        ("xyz", IDENTITY_ID, timedelta(days=1), "64 lowercase hex"),
        (SUBJECT, "", timedelta(days=1), "member id"),
        (SUBJECT, IDENTITY_ID, timedelta(0), "must be positive"),
        (SUBJECT, IDENTITY_ID, timedelta(seconds=-5), "non-negative"),
    ],
)
def test_issue_binding_validates_input(
    subject_ref: str, member_id: str, validity: timedelta, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        issue_binding(
            subject_ref_hex=subject_ref,
            subject_key=WORLD.subject.public,
            member_id=member_id,
            member_key=WORLD.identity,
            now=NOW,
            validity=validity,
        )
