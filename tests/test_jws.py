from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from credence.encoding import b64url_decode, b64url_encode
from credence.errors import (
    BadSignature,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotYetValid,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongPayloadType,
)
from credence.jws import (
    check_audience,
    check_issuer,
    check_time_claims,
    peek_header,
    sign_compact,
    sign_raw,
    verify_compact,
    verify_raw,
)
from credence.keys import KeySet, SigningKey, VerifyKey

# RFC 8037 Appendix A.1 (key), A.3 (its thumbprint) and A.4 (the JWS).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_JWS = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)

TYP = "consent+jwt"
NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
KEY = SigningKey.from_seed(hashlib.sha256(b"jws test key").digest())
OTHER = SigningKey.from_seed(hashlib.sha256(b"jws other key").digest())
KEYS = KeySet([KEY.public])
CLAIMS = {"iss": "registry", "sub": "ab" * 32, "aud": "acme", "exp": 1_900_000_000}


def forge(header: dict[str, Any] | bytes, payload: bytes, signer: SigningKey | None) -> str:
    """A compact JWS built by hand, as an attacker would."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64url_encode(raw_header)}.{b64url_encode(payload)}"
    signature = signer.sign(signing_input.encode()) if signer else b""
    return f"{signing_input}.{b64url_encode(signature)}"


def header_of(kid: str = KEY.kid, **changes: Any) -> dict[str, Any]:
    return {"alg": "EdDSA", "kid": kid, "typ": TYP, **changes}


# --- RFC 8037 vector ---------------------------------------------------------


def test_rfc8037_a4_signing_reproduces_the_rfc_serialization() -> None:
    key = SigningKey.from_seed(b64url_decode(RFC8037_D))
    assert key.public.raw() == b64url_decode(RFC8037_X)
    assert key.kid == RFC8037_THUMBPRINT
    assert sign_raw({"alg": "EdDSA"}, b"Example of Ed25519 signing", key) == RFC8037_JWS


def test_rfc8037_a5_validation() -> None:
    public = VerifyKey.from_raw(b64url_decode(RFC8037_X))
    parsed = verify_raw(RFC8037_JWS, public)
    assert parsed.header == {"alg": "EdDSA"}
    assert parsed.payload == b"Example of Ed25519 signing"


def test_rfc8037_vector_with_one_changed_payload_byte_fails() -> None:
    public = VerifyKey.from_raw(b64url_decode(RFC8037_X))
    header, _, signature = RFC8037_JWS.split(".")
    tampered = f"{header}.{b64url_encode(b'Example of Ed25519 signinG')}.{signature}"
    with pytest.raises(BadSignature, match="does not verify"):
        verify_raw(tampered, public)


def test_sign_raw_refuses_another_alg() -> None:
    with pytest.raises(InvalidInput, match="HS256"):
        sign_raw({"alg": "HS256"}, b"x", KEY)


# --- round trip --------------------------------------------------------------


def test_sign_compact_header_is_exact_and_round_trips() -> None:
    token = sign_compact(CLAIMS, KEY, TYP)
    header_b64, payload_b64, _ = token.split(".")
    expected_header = f'{{"alg":"EdDSA","kid":"{KEY.kid}","typ":"consent+jwt"}}'
    assert b64url_decode(header_b64) == expected_header.encode()
    assert (
        b64url_decode(payload_b64)
        == json.dumps(CLAIMS, separators=(",", ":"), sort_keys=True).encode()
    )
    assert verify_compact(token, KEYS, TYP) == CLAIMS
    assert peek_header(token) == {"alg": "EdDSA", "kid": KEY.kid, "typ": TYP}


def test_sign_compact_refuses_unserialisable_claims() -> None:
    with pytest.raises(InvalidInput, match="cannot be serialised"):
        sign_compact({"exp": float("nan")}, KEY, TYP)


# --- attacker cases ----------------------------------------------------------


def test_tampered_payload_is_refused() -> None:
    header, _, signature = sign_compact(CLAIMS, KEY, TYP).split(".")
    payload = b64url_encode(json.dumps({**CLAIMS, "aud": "mallory"}).encode())
    with pytest.raises(BadSignature, match=f"under key {KEY.kid}"):
        verify_compact(f"{header}.{payload}.{signature}", KEYS, TYP)


def test_tampered_header_is_refused() -> None:
    _, payload, signature = sign_compact(CLAIMS, KEY, "mandate+jwt").split(".")
    header = b64url_encode(json.dumps(header_of()).encode())
    with pytest.raises(BadSignature, match="does not verify"):
        verify_compact(f"{header}.{payload}.{signature}", KEYS, TYP)


def test_swapped_typ_is_refused_naming_both() -> None:
    token = sign_compact(CLAIMS, KEY, "mandate+jwt")
    with pytest.raises(WrongPayloadType, match=r"'mandate\+jwt', expected 'consent\+jwt'"):
        verify_compact(token, KEYS, TYP)


def test_missing_typ_is_refused() -> None:
    token = forge({"alg": "EdDSA", "kid": KEY.kid}, b"{}", KEY)
    with pytest.raises(WrongPayloadType, match="None"):
        verify_compact(token, KEYS, TYP)


def test_wrong_key_under_a_trusted_kid_is_refused() -> None:
    token = forge(header_of(), json.dumps(CLAIMS).encode(), OTHER)
    with pytest.raises(BadSignature, match="does not verify"):
        verify_compact(token, KEYS, TYP)


def test_unknown_kid_is_refused() -> None:
    token = sign_compact(CLAIMS, OTHER, TYP)
    with pytest.raises(UnknownKey, match=OTHER.kid):
        verify_compact(token, KEYS, TYP)


@pytest.mark.parametrize("kid", [None, "", 7])
def test_missing_or_malformed_kid_is_refused(kid: object) -> None:
    header = header_of()
    if kid is None:
        del header["kid"]
    else:
        header["kid"] = kid
    with pytest.raises(InvalidInput, match="lacks a 'kid'"):
        verify_compact(forge(header, b"{}", KEY), KEYS, TYP)


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "Ed25519", "RS256", "ES256", "eddsa"])
def test_other_algorithms_are_refused(alg: str) -> None:
    token = forge(header_of(alg=alg), json.dumps(CLAIMS).encode(), KEY)
    with pytest.raises(BadSignature, match=f"alg '{alg}' is refused"):
        verify_compact(token, KEYS, TYP)


def test_missing_alg_is_refused() -> None:
    header = header_of()
    del header["alg"]
    refused = "header does not decode to a JOSE header: it has no 'alg'"
    with pytest.raises(BadSignature, match=refused):
        verify_compact(forge(header, b"{}", KEY), KEYS, TYP)


def test_unsigned_alg_none_token_is_refused() -> None:
    token = forge(header_of(alg="none"), json.dumps(CLAIMS).encode(), None)
    assert token.endswith(".")
    with pytest.raises(BadSignature, match="alg 'none' is refused"):
        verify_compact(token, KEYS, TYP)


def test_literal_xxx_yyy_unsigned_token_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not strict base64url"):
        verify_compact("xxx.yyy.", KEYS, TYP)


def test_hs256_with_the_public_key_as_hmac_secret_is_refused() -> None:
    signing_input = (
        f"{b64url_encode(json.dumps(header_of(alg='HS256')).encode())}."
        f"{b64url_encode(json.dumps(CLAIMS).encode())}"
    )
    mac = hmac.new(KEY.public.raw(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url_encode(mac)}"
    with pytest.raises(BadSignature, match="alg 'HS256' is refused"):
        verify_compact(token, KEYS, TYP)
    # The same forgery is refused by PyJWT when given a key object and an allow-list.
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, key=KEY.public.public_key, algorithms=["EdDSA"])


def test_embedded_attacker_jwk_is_never_trusted() -> None:
    header = header_of(kid=OTHER.kid, jwk=OTHER.public.to_jwk())
    token = forge(header, json.dumps(CLAIMS).encode(), OTHER)
    with pytest.raises(BadSignature, match="'jwk' is refused: keys are never taken"):
        verify_compact(token, KeySet([KEY.public, OTHER.public]), TYP)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB"]),
    ],
)
def test_key_pointing_headers_are_refused(name: str, value: object) -> None:
    token = forge({**header_of(), name: value}, b"{}", KEY)
    with pytest.raises(BadSignature, match=f"'{name}' is refused"):
        verify_compact(token, KEYS, TYP)


def test_crit_header_is_refused() -> None:
    token = forge(header_of(crit=["b64"], b64=False), b"{}", KEY)
    with pytest.raises(BadSignature, match="'crit' is refused"):
        verify_compact(token, KEYS, TYP)


def test_unknown_header_parameter_is_refused() -> None:
    token = forge(header_of(zip="DEF"), b"{}", KEY)
    with pytest.raises(BadSignature, match=r"\['zip'\] that are not accepted"):
        verify_compact(token, KEYS, TYP)


def test_oversized_token_is_refused_before_parsing() -> None:
    with pytest.raises(MessageTooLarge, match="16385 characters; the limit is 16384"):
        verify_compact("!" * 16385, KEYS, TYP)
    token = sign_compact({**CLAIMS, "pad": "x" * 200}, KEY, TYP)
    with pytest.raises(MessageTooLarge, match="the limit is 100"):
        verify_compact(token, KEYS, TYP, max_size=100)


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "", "a..b..c"])
def test_wrong_number_of_parts_is_refused(token: str) -> None:
    with pytest.raises(InvalidInput, match="3 dot-separated parts"):
        verify_compact(token, KEYS, TYP)


def test_padded_base64_is_refused() -> None:
    header, payload, signature = sign_compact(CLAIMS, KEY, TYP).split(".")
    with pytest.raises(InvalidInput, match="not strict base64url"):
        verify_compact(f"{header}.{payload}.{signature}==", KEYS, TYP)


@pytest.mark.parametrize("raw", [b"[]", b'"alg"', b"not json", b"\xff\xfe"])
def test_header_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="JWS header"):
        verify_compact(forge(raw, b"{}", KEY), KEYS, TYP)


def test_duplicate_header_members_are_refused() -> None:
    raw = f'{{"alg":"EdDSA","kid":"{KEY.kid}","typ":"x","typ":"{TYP}"}}'.encode()
    with pytest.raises(InvalidInput, match="'typ' twice"):
        verify_compact(forge(raw, b"{}", KEY), KEYS, TYP)


def test_duplicate_claims_are_refused() -> None:
    # Two parsers could read different subjects from this payload.
    payload = b'{"sub":"alice","exp":1900000000,"sub":"mallory"}'
    with pytest.raises(InvalidInput, match="'sub' twice"):
        verify_compact(forge(header_of(), payload, KEY), KEYS, TYP)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'{"exp": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b"\xff", "not UTF-8"),
        (b"{", "not valid JSON"),
    ],
)
def test_malformed_payload_is_refused(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        verify_compact(forge(header_of(), payload, KEY), KEYS, TYP)


def test_truncated_signature_is_refused() -> None:
    header, payload, signature = sign_compact(CLAIMS, KEY, TYP).split(".")
    short = b64url_encode(b64url_decode(signature)[:63])
    with pytest.raises(BadSignature, match="must be 64 bytes, got 63"):
        verify_compact(f"{header}.{payload}.{short}", KEYS, TYP)


# --- time, audience, issuer --------------------------------------------------


def epoch(when: datetime) -> int:
    return int(when.timestamp())


def test_time_claims_accept_a_valid_token() -> None:
    claims = {"exp": epoch(NOW) + 60, "nbf": epoch(NOW), "iat": epoch(NOW)}
    check_time_claims(claims, NOW)


def test_expired_names_both_times() -> None:
    claims = {"exp": epoch(NOW)}
    later = NOW + timedelta(minutes=5, seconds=12)
    with pytest.raises(
        Expired, match=r"^grant expired at 2026-11-28T10:00:00Z \(now 2026-11-28T10:05:12Z\)$"
    ):
        check_time_claims(claims, later, label="grant")


def test_expiry_allows_the_clock_skew_and_no_more() -> None:
    claims = {"exp": epoch(NOW)}
    check_time_claims(claims, NOW + timedelta(seconds=59))
    with pytest.raises(Expired):
        check_time_claims(claims, NOW + timedelta(seconds=60))
    with pytest.raises(Expired):
        check_time_claims(claims, NOW, skew=timedelta(0))


def test_not_before_in_the_future_is_refused() -> None:
    claims = {"exp": epoch(NOW) + 3600, "nbf": epoch(NOW) + 61}
    with pytest.raises(NotYetValid, match="not valid before 2026-11-28T10:01:01Z"):
        check_time_claims(claims, NOW)
    check_time_claims({**claims, "nbf": epoch(NOW) + 60}, NOW)


def test_issued_in_the_future_is_refused() -> None:
    claims = {"exp": epoch(NOW) + 3600, "iat": epoch(NOW) + 3000}
    with pytest.raises(NotYetValid, match="issued at 2026-11-28T10:50:00Z, in the future"):
        check_time_claims(claims, NOW)


def test_exp_is_required() -> None:
    with pytest.raises(InvalidInput, match="lacks the required claim 'exp'"):
        check_time_claims({"nbf": epoch(NOW)}, NOW)


@pytest.mark.parametrize("value", [True, 1.9e9, "1900000000", None, [1]])
@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_numeric_dates_must_be_integers(name: str, value: object) -> None:
    claims: dict[str, object] = {"exp": epoch(NOW) + 60, name: value}
    with pytest.raises(InvalidInput, match=f"claim '{name}' must be an integer NumericDate"):
        check_time_claims(claims, NOW)


def test_audience_string_and_list() -> None:
    check_audience({"aud": "acme"}, "acme")
    check_audience({"aud": ["other", "acme"]}, "acme")


@pytest.mark.parametrize(
    ("aud", "message"),
    [
        ("mallory", "is for 'mallory', not for 'acme'"),
        (["x", "y"], "not for 'acme'"),
        (None, "no usable 'aud'"),
        ([], "no usable 'aud'"),
        ([1], "no usable 'aud'"),
    ],
)
def test_wrong_audience_is_refused(aud: object, message: str) -> None:
    claims = {} if aud is None else {"aud": aud}
    with pytest.raises(WrongAudience, match=message):
        check_audience(claims, "acme")


def test_issuer_checks() -> None:
    check_issuer({"iss": "registry"}, "registry")
    check_issuer({"iss": "registry-2"}, ["registry", "registry-2"])
    with pytest.raises(WrongIssuer, match="issued by 'mallory'; accepted: \\['registry'\\]"):
        check_issuer({"iss": "mallory"}, "registry")
    with pytest.raises(WrongIssuer, match="issued by None"):
        check_issuer({}, "registry")


# --- interoperability with PyJWT ---------------------------------------------


def test_pyjwt_verifies_our_token() -> None:
    token = sign_compact(CLAIMS, KEY, TYP)
    decoded = jwt.decode(token, key=KEY.public.public_key, algorithms=["EdDSA"], audience="acme")
    assert decoded == CLAIMS
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": KEY.kid, "typ": TYP}


def test_we_verify_a_pyjwt_token() -> None:
    token = jwt.encode(
        CLAIMS, KEY.private_key, algorithm="EdDSA", headers={"kid": KEY.kid, "typ": TYP}
    )
    assert verify_compact(token, KEYS, TYP) == CLAIMS
