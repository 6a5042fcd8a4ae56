"""Tests for credence.keys (and the strict base64url of credence.encoding it relies on)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from credence.encoding import b64url_decode, b64url_encode
from credence.errors import BadSignature, InvalidInput, UnknownKey
from credence.keys import (
    KeySet,
    SigningKey,
    VerifyKey,
    jwk_thumbprint,
    load_signing_key,
    private_key_pem,
    save_signing_key,
    write_private_file,
)

# RFC 8032 section 7.1: (name, secret key, public key, message, signature), hex.
RFC8032_ED25519 = [
    (
        "TEST 1",
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "TEST 2",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "TEST 3",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "TEST SHA(abc)",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]

# RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_RSA_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 8037 appendix A: the key is RFC 8032 TEST 1.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_SIGNING_INPUT = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIGNATURE = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


# --- RFC 8032 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "public", "message", "signature"),
    [vector[1:] for vector in RFC8032_ED25519],
    ids=[vector[0] for vector in RFC8032_ED25519],
)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = SigningKey.from_seed(bytes.fromhex(secret))
    assert key.public.raw() == bytes.fromhex(public)
    assert key.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    VerifyKey.from_raw(bytes.fromhex(public)).verify(
        bytes.fromhex(signature), bytes.fromhex(message)
    )


def test_rfc8032_sha_abc_message_is_sha512_of_abc() -> None:
    assert RFC8032_ED25519[3][3] == hashlib.sha512(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [vector[2:] for vector in RFC8032_ED25519],
    ids=[vector[0] for vector in RFC8032_ED25519],
)
def test_rfc8032_vector_with_one_bit_flipped_is_refused(
    public: str, message: str, signature: str
) -> None:
    key = VerifyKey.from_raw(bytes.fromhex(public))
    forged = bytearray(bytes.fromhex(signature))
    forged[0] ^= 0x01
    with pytest.raises(BadSignature, match=f"under key {key.kid}"):
        key.verify(bytes(forged), bytes.fromhex(message))
    with pytest.raises(BadSignature, match="does not verify"):
        key.verify(bytes.fromhex(signature), bytes.fromhex(message) + b"\x00")


def test_truncated_signature_is_refused(key: SigningKey) -> None:
    with pytest.raises(BadSignature, match="does not verify"):
        key.public.verify(key.sign(b"data")[:63], b"data")


def test_signature_under_another_key_is_refused(key: SigningKey) -> None:
    other = SigningKey.generate()
    with pytest.raises(BadSignature, match=other.kid):
        other.public.verify(key.sign(b"data"), b"data")


def test_seed_and_raw_key_lengths_are_checked() -> None:
    with pytest.raises(InvalidInput, match="seed is 32 bytes, got 31"):
        SigningKey.from_seed(b"\x00" * 31)
    with pytest.raises(InvalidInput, match="public key is 32 bytes, got 33"):
        VerifyKey.from_raw(b"\x00" * 33)


def test_repr_does_not_show_the_private_key() -> None:
    secret = RFC8032_ED25519[0][1]
    key = SigningKey.from_seed(bytes.fromhex(secret))
    assert repr(key) == f"SigningKey(kid={RFC8037_KID!r})"


# --- RFC 7638 and RFC 8037 -------------------------------------------------------


def test_rfc7638_rsa_example_thumbprint() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_RSA_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == RFC7638_THUMBPRINT


def test_rfc8037_ed25519_thumbprint() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    assert jwk_thumbprint(jwk) == RFC8037_KID
    assert VerifyKey.from_jwk(jwk).kid == RFC8037_KID


def test_rfc8037_key_is_rfc8032_test1() -> None:
    key = SigningKey.from_seed(b64url_decode(RFC8037_D))
    assert key.public.raw() == b64url_decode(RFC8037_X)
    assert key.kid == RFC8037_KID


def test_rfc8037_jws_signature() -> None:
    key = SigningKey.from_seed(b64url_decode(RFC8037_D))
    assert b64url_encode(key.sign(RFC8037_SIGNING_INPUT)) == RFC8037_SIGNATURE
    key.public.verify(b64url_decode(RFC8037_SIGNATURE), RFC8037_SIGNING_INPUT)


def test_thumbprint_ignores_optional_members() -> None:
    bare = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    assert jwk_thumbprint({**bare, "use": "sig", "kid": "anything"}) == jwk_thumbprint(bare)


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "DSA", "x": "AA"}, "unsupported kty 'DSA'"),
        ({"crv": "Ed25519", "x": "AA"}, "unsupported kty None"),
        ({"kty": "OKP", "crv": "Ed25519"}, "lacks the required member 'x'"),
        ({"kty": "RSA", "n": RFC7638_RSA_N}, "lacks the required member 'e'"),
    ],
)
def test_thumbprint_refuses_incomplete_keys(jwk: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        jwk_thumbprint(jwk)


# --- JWK and JWKS ----------------------------------------------------------------


def test_jwk_round_trip(key: SigningKey) -> None:
    jwk = key.public.to_jwk()
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(key.public.raw()),
        "kid": key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    again = VerifyKey.from_jwk(jwk)
    assert again.raw() == key.public.raw()
    assert again.kid == key.kid
    again.verify(key.sign(b"data"), b"data")


def test_jwk_is_read_by_an_independent_implementation(key: SigningKey) -> None:
    token = jwt.encode({"sub": "x"}, key.private_key, algorithm="EdDSA")
    foreign = jwt.PyJWK(key.public.to_jwk())
    assert foreign.key_id == key.kid
    assert jwt.decode(token, foreign, algorithms=["EdDSA"]) == {"sub": "x"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": RFC8037_D}, "holds a private key"),
        ({"crv": "X25519"}, r"not an Ed25519 key \(kty OKP, crv Ed25519\)"),
        ({"crv": "Ed448"}, "not an Ed25519 key"),
        ({"kty": "EC"}, "not an Ed25519 key"),
        ({"alg": "RS256"}, "names alg 'RS256'; only EdDSA is accepted"),
        ({"alg": "none"}, "names alg 'none'"),
        ({"kid": RFC7638_THUMBPRINT}, f"is not its RFC 7638 thumbprint {RFC8037_KID}"),
        ({"x": 12}, "lacks the public key member 'x'"),
        ({"x": "AAAA"}, "public key is 32 bytes, got 3"),
        ({"x": RFC8037_X + "="}, "outside A-Z a-z 0-9"),
    ],
)
def test_from_jwk_refusals(change: dict[str, Any], message: str) -> None:
    jwk = {**SigningKey.from_seed(b64url_decode(RFC8037_D)).public.to_jwk(), **change}
    with pytest.raises(InvalidInput, match=message):
        VerifyKey.from_jwk(jwk)


def test_jwks_round_trip() -> None:
    keys = [SigningKey.generate().public for _ in range(3)]
    document = KeySet(keys).to_jwks()
    assert [jwk["kid"] for jwk in document["keys"]] == sorted(key.kid for key in keys)
    again = KeySet.from_jwks(document)
    assert sorted(again) == sorted(key.kid for key in keys)
    for key in keys:
        assert again.resolve(key.kid).raw() == key.raw()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "lacks a 'keys' list"),
        ({"keys": {"kty": "OKP"}}, "lacks a 'keys' list"),
        ({"keys": ["not a key"]}, "entry 0 is not an object"),
        (
            {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "d": RFC8037_D}]},
            "entry 0: JWK holds a private key",
        ),
    ],
)
def test_from_jwks_refusals(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        KeySet.from_jwks(document)


def test_keyset_resolve(key: SigningKey) -> None:
    keys = KeySet([key.public])
    assert keys.resolve(key.kid) is key.public
    assert len(keys) == 1
    assert key.kid in repr(keys)
    with pytest.raises(UnknownKey, match=f"key '{RFC8037_KID}' is not among the trusted keys"):
        keys.resolve(RFC8037_KID)


# --- key files -----------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_and_load_without_passphrase(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "keys" / "signing.pem"
    save_signing_key(path, key)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_signing_key(path).kid == key.kid


def test_save_and_load_with_passphrase(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "signing.pem"
    save_signing_key(path, key, passphrase=b"correct horse")
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_signing_key(path, passphrase=b"correct horse").kid == key.kid


def test_wrong_passphrase_is_refused(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "signing.pem"
    save_signing_key(path, key, passphrase=b"correct horse")
    with pytest.raises(InvalidInput, match="wrong passphrase"):
        load_signing_key(path, passphrase=b"battery staple")


def test_missing_passphrase_is_refused(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "signing.pem"
    save_signing_key(path, key, passphrase=b"correct horse")
    with pytest.raises(InvalidInput, match="key passphrase"):
        load_signing_key(path)


def test_overwrite_keeps_mode_0600(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "signing.pem"
    path.write_bytes(b"old")
    path.chmod(0o644)
    save_signing_key(path, key)
    assert _mode(path) == 0o600
    assert load_signing_key(path).kid == key.kid
    assert [p.name for p in tmp_path.iterdir()] == ["signing.pem"]


def test_loading_a_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    write_private_file(path, private_key_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(InvalidInput, match=r"ec\.pem holds a \w+, not an Ed25519 signing key"):
        load_signing_key(path)


def test_loading_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    write_private_file(path, b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidInput, match="not a readable PEM private key"):
        load_signing_key(path)


# --- strict base64url (credence.encoding) -----------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        # RFC 4648 section 10, in the URL-safe alphabet without padding.
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
        (b"\xfb\xff", "-_8"),
    ],
)
def test_b64url_round_trip(data: bytes, text: str) -> None:
    assert b64url_encode(data) == text
    assert b64url_decode(text) == data
    assert b64url_decode(text.encode("ascii")) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Zg==", "outside A-Z a-z 0-9 - _ \\(or padding\\)"),
        ("Zm9v=", "outside"),
        ("+/8", "outside"),
        ("Zm 9v", "outside"),
        ("Zm9vY", "impossible length 5"),
        ("Zh", "not in canonical form \\(non-zero trailing bits\\)"),
        ("Zm9", "not in canonical form"),
        (b"Zm\xff9", "must be ASCII"),
    ],
)
def test_b64url_decode_refusals(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        b64url_decode(text)


@pytest.mark.parametrize("text", ["Zm9v\n", "Zm9vYg\n", "Zm9vYmFy\n", "\nZm9v"])
def test_b64url_decode_refuses_a_newline(text: str) -> None:
    # Refused at every length, though the reason varies: the alphabet check
    # alone lets a final newline through (its "$" matches before one).
    with pytest.raises(InvalidInput, match="base64url text"):
        b64url_decode(text)
