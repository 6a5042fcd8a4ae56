"""Tests for credence.envelope: DSSE signed envelopes."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credence.encoding import b64url_decode
from credence.envelope import (
    MAX_SIGNATURES,
    Envelope,
    Signature,
    VerifiedPayload,
    pae,
    sign,
    verify,
    verify_message,
)
from credence.errors import (
    BadSignature,
    InvalidInput,
    MessageTooLarge,
    UnknownKey,
    WrongPayloadType,
)
from credence.keys import KeySet, SigningKey
from credence.v1 import common_pb2

QUERY = "application/vnd.credence.query.v1+proto"
ANSWER = "application/vnd.credence.answer.v1+proto"


@pytest.fixture
def alice() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def bob() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def carol() -> SigningKey:
    return SigningKey.generate()


def trust(*keys: SigningKey) -> KeySet:
    return KeySet(key.public for key in keys)


def with_signatures(envelope: Envelope, *signatures: Signature) -> Envelope:
    return dataclasses.replace(envelope, signatures=signatures)


# --- PAE ----------------------------------------------------------------------


def test_pae_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_of_the_type() -> None:
    assert pae("\u00e9", b"") == b"DSSEv1 2 \xc3\xa9 0 "


def test_pae_keeps_type_and_payload_apart() -> None:
    # Without the lengths these two would encode to the same bytes.
    assert pae("a b", b"c") != pae("a", b"b c")


# --- sign and verify --------------------------------------------------------------


def test_sign_verify_round_trip(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [alice])
    assert envelope.payload_type == QUERY
    assert envelope.payload == b"payload"
    assert [s.keyid for s in envelope.signatures] == [alice.kid]
    alice.public.verify(envelope.signatures[0].sig, pae(QUERY, b"payload"))
    assert verify(envelope, QUERY, trust(alice)) == VerifiedPayload(
        payload_type=QUERY, payload=b"payload", kids=(alice.kid,)
    )


def test_empty_payload_is_signable(alice: SigningKey) -> None:
    assert verify(sign(QUERY, b"", [alice]), QUERY, trust(alice)).payload == b""


def test_multiple_signatures_meet_a_threshold(
    alice: SigningKey, bob: SigningKey, carol: SigningKey
) -> None:
    envelope = sign(QUERY, b"payload", [alice, bob])
    verified = verify(envelope, QUERY, trust(alice, bob, carol), threshold=2)
    assert verified.kids == (alice.kid, bob.kid)


def test_too_few_signers_for_the_threshold(
    alice: SigningKey, bob: SigningKey, carol: SigningKey
) -> None:
    envelope = sign(QUERY, b"payload", [alice, bob])
    with pytest.raises(BadSignature, match="has 2 of 3 required signatures from trusted keys"):
        verify(envelope, QUERY, trust(alice, bob, carol), threshold=3)


def test_untrusted_signer_does_not_count_towards_the_threshold(
    alice: SigningKey, bob: SigningKey
) -> None:
    envelope = sign(QUERY, b"payload", [alice, bob])
    assert verify(envelope, QUERY, trust(alice)).kids == (alice.kid,)
    with pytest.raises(BadSignature, match=f"1 of 2 .*untrusted: {bob.kid}"):
        verify(envelope, QUERY, trust(alice), threshold=2)


def test_threshold_below_one_is_a_programming_error(alice: SigningKey) -> None:
    with pytest.raises(ValueError, match="threshold must be at least 1, got 0"):
        verify(sign(QUERY, b"p", [alice]), QUERY, trust(alice), threshold=0)


def test_sign_needs_a_key() -> None:
    with pytest.raises(InvalidInput, match="at least one signing key"):
        sign(QUERY, b"payload", [])


def test_sign_refuses_the_same_key_twice(alice: SigningKey) -> None:
    with pytest.raises(InvalidInput, match=f"key {alice.kid} is given twice"):
        sign(QUERY, b"payload", [alice, alice])


def test_add_signature_returns_a_new_envelope(alice: SigningKey, bob: SigningKey) -> None:
    first = sign(QUERY, b"payload", [alice])
    second = first.add_signature(bob)
    assert [s.keyid for s in first.signatures] == [alice.kid]
    assert [s.keyid for s in second.signatures] == [alice.kid, bob.kid]
    assert verify(second, QUERY, trust(alice, bob), threshold=2).kids == (alice.kid, bob.kid)
    with pytest.raises(InvalidInput, match=f"already signed by key {bob.kid}"):
        second.add_signature(bob)


@pytest.mark.parametrize(
    ("payload_type", "message"),
    [
        ("", "payload_type is empty"),
        ("x" * 257, "payload_type is 257 characters long; the limit is 256"),
    ],
)
def test_bad_payload_types_are_refused(alice: SigningKey, payload_type: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        sign(payload_type, b"payload", [alice])
    with pytest.raises(InvalidInput, match=message):
        Envelope.from_proto(common_pb2.Envelope(payload_type=payload_type, payload=b"p"))


def test_longest_payload_type_is_accepted(alice: SigningKey) -> None:
    envelope = sign("x" * 256, b"payload", [alice])
    assert verify(envelope, "x" * 256, trust(alice)).payload_type == "x" * 256


# --- attacker cases ---------------------------------------------------------------


def test_tampered_payload_byte(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"subject=1234", [alice])
    forged = dataclasses.replace(envelope, payload=b"subject=1235")
    with pytest.raises(BadSignature, match=f"does not verify under key {alice.kid}"):
        verify(forged, QUERY, trust(alice))


def test_swapped_payload_type(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [alice])
    with pytest.raises(
        WrongPayloadType, match=re.escape(f"carries payload type '{QUERY}', expected '{ANSWER}'")
    ):
        verify(envelope, ANSWER, trust(alice))
    # Relabelling the envelope does not help: the signature covers the type.
    relabelled = dataclasses.replace(envelope, payload_type=ANSWER)
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(relabelled, ANSWER, trust(alice))


def test_wrong_key_claiming_a_trusted_kid(alice: SigningKey, bob: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [bob])
    forged = with_signatures(envelope, Signature(alice.kid, envelope.signatures[0].sig))
    with pytest.raises(BadSignature, match=f"does not verify under key {alice.kid}"):
        verify(forged, QUERY, trust(alice))


def test_unknown_kid(alice: SigningKey, bob: SigningKey, carol: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [bob, carol])
    with pytest.raises(UnknownKey, match=f"not trusted: {bob.kid}, {carol.kid}"):
        verify(envelope, QUERY, trust(alice))


def test_bad_trusted_signature_beside_an_unknown_one(alice: SigningKey, bob: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [bob])
    forged = with_signatures(
        envelope, envelope.signatures[0], Signature(alice.kid, envelope.signatures[0].sig)
    )
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(forged, QUERY, trust(alice))


def test_unsigned(alice: SigningKey) -> None:
    envelope = Envelope(QUERY, b"payload", ())
    with pytest.raises(BadSignature, match=r"^envelope is unsigned$"):
        verify(envelope, QUERY, trust(alice))


def test_signature_moved_to_another_envelope(alice: SigningKey) -> None:
    mine = sign(QUERY, b"subject=1234", [alice])
    theirs = Envelope(QUERY, b"subject=9999", mine.signatures)
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(theirs, QUERY, trust(alice))


def test_duplicated_signature_does_not_fake_a_threshold(alice: SigningKey, bob: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [alice])
    doubled = with_signatures(envelope, *envelope.signatures, *envelope.signatures)
    assert verify(doubled, QUERY, trust(alice, bob)).kids == (alice.kid,)
    with pytest.raises(BadSignature, match="has 1 of 2 required signatures"):
        verify(doubled, QUERY, trust(alice, bob), threshold=2)


@pytest.mark.parametrize("garbage_first", [True, False])
def test_duplicate_kid_with_a_bad_signature_is_refused_in_any_order(
    alice: SigningKey, garbage_first: bool
) -> None:
    good = sign(QUERY, b"payload", [alice]).signatures[0]
    bad = Signature(alice.kid, bytes(64))
    order = (bad, good) if garbage_first else (good, bad)
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(with_signatures(sign(QUERY, b"payload", [alice]), *order), QUERY, trust(alice))


def test_truncated_signature(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"payload", [alice])
    short = with_signatures(envelope, Signature(alice.kid, envelope.signatures[0].sig[:32]))
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(short, QUERY, trust(alice))


def test_oversized_bytes_are_refused_before_parsing(alice: SigningKey) -> None:
    data = sign(QUERY, b"x" * 100, [alice]).to_bytes()
    assert Envelope.from_bytes(data, max_size=len(data)).payload == b"x" * 100
    with pytest.raises(MessageTooLarge, match=f"envelope is {len(data)} bytes; the limit is 100"):
        Envelope.from_bytes(data, max_size=100)
    # Garbage that would fail to parse is still reported as too large: no parse happened.
    with pytest.raises(MessageTooLarge, match="envelope is 101 bytes; the limit is 100"):
        Envelope.from_bytes(b"\xff" * 101, max_size=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff", "not a credence.v1.Envelope protobuf"),
        (b"\x0a\x05ab", "not a credence.v1.Envelope protobuf"),
        (b"\x0a\x01\xff", "not a credence.v1.Envelope protobuf.*UTF-8"),
        (b"", "payload_type is empty"),
    ],
)
def test_garbage_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Envelope.from_bytes(data)


def test_too_many_signatures(alice: SigningKey) -> None:
    signature = common_pb2.Signature(keyid=alice.kid, sig=bytes(64))
    message = common_pb2.Envelope(
        payload_type=QUERY, payload=b"p", signatures=[signature] * (MAX_SIGNATURES + 1)
    )
    with pytest.raises(InvalidInput, match=f"{MAX_SIGNATURES + 1} signatures; the limit is"):
        Envelope.from_bytes(message.SerializeToString())


def test_signature_without_keyid_is_refused() -> None:
    message = common_pb2.Envelope(
        payload_type=QUERY, payload=b"p", signatures=[common_pb2.Signature(sig=bytes(64))]
    )
    with pytest.raises(InvalidInput, match="empty keyid"):
        Envelope.from_proto(message)


# --- the bytes as received ---------------------------------------------------------


def test_verification_is_over_the_bytes_as_received(alice: SigningKey) -> None:
    # keyid (1) and sig (2) written in reverse field order: valid protobuf,
    # but not what a re-serialization produces.
    received = b"\x12\x01\xaa" + b"\x0a\x01k"
    canonical = common_pb2.Signature(keyid="k", sig=b"\xaa").SerializeToString()
    assert received != canonical
    envelope = sign(QUERY, received, [alice])

    assert verify(envelope, QUERY, trust(alice)).payload == received
    parsed = verify_message(envelope, QUERY, trust(alice), common_pb2.Signature)
    assert (parsed.keyid, parsed.sig) == ("k", b"\xaa")
    # Same message, re-serialized: the signature no longer covers it.
    reserialized = dataclasses.replace(envelope, payload=canonical)
    with pytest.raises(BadSignature, match=f"under key {alice.kid}"):
        verify(reserialized, QUERY, trust(alice))


def test_unknown_field_in_payload_still_verifies(alice: SigningKey) -> None:
    # Field 15, varint 1: unknown to this reader, as a newer sender's field would be.
    received = common_pb2.Signature(keyid="k").SerializeToString() + b"\x78\x01"
    envelope = Envelope.from_bytes(sign(QUERY, received, [alice]).to_bytes())
    assert verify(envelope, QUERY, trust(alice)).payload == received
    assert verify_message(envelope, QUERY, trust(alice), common_pb2.Signature).keyid == "k"


def test_verify_message_refuses_a_payload_that_does_not_parse(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"\xff", [alice])
    with pytest.raises(
        InvalidInput,
        match=re.escape(f"signed {QUERY} payload is not a credence.v1.Signature protobuf:"),
    ):
        verify_message(envelope, QUERY, trust(alice), common_pb2.Signature)


def test_verify_message_verifies_first(alice: SigningKey, bob: SigningKey) -> None:
    payload = common_pb2.Signature(keyid="k").SerializeToString()
    envelope = sign(QUERY, payload, [alice])
    with pytest.raises(WrongPayloadType, match="expected"):
        verify_message(envelope, ANSWER, trust(alice), common_pb2.Signature)
    with pytest.raises(UnknownKey, match=alice.kid):
        verify_message(envelope, QUERY, trust(bob), common_pb2.Signature)
    with pytest.raises(BadSignature, match="1 of 2"):
        verify_message(envelope, QUERY, trust(alice), common_pb2.Signature, threshold=2)


# --- wire forms -------------------------------------------------------------------


def test_proto_round_trip(alice: SigningKey, bob: SigningKey) -> None:
    envelope = sign(QUERY, b"\x00payload\xff", [alice, bob])
    message = envelope.to_proto()
    assert message.payload_type == QUERY
    assert message.payload == b"\x00payload\xff"
    assert [(s.keyid, s.sig) for s in message.signatures] == [
        (s.keyid, s.sig) for s in envelope.signatures
    ]
    assert Envelope.from_proto(message) == envelope
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope
    assert envelope.to_bytes() == message.SerializeToString(deterministic=True)


def test_json_form_is_dsse(alice: SigningKey) -> None:
    payload = b"\xfb\xff payload"
    envelope = sign(QUERY, payload, [alice])
    document = json.loads(envelope.to_json())
    assert document == {
        "payloadType": QUERY,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": alice.kid, "sig": base64.b64encode(envelope.signatures[0].sig).decode()}
        ],
    }
    assert document["payload"].startswith("+/")
    assert Envelope.from_json(envelope.to_json()) == envelope
    assert Envelope.from_json(envelope.to_json().encode("utf-8")) == envelope


def test_json_form_is_checkable_without_credence(alice: SigningKey) -> None:
    # What a verifier in another language does: decode, build PAE by hand, verify.
    document = json.loads(sign(QUERY, b"hello", [alice]).to_json())
    payload = base64.b64decode(document["payload"])
    payload_type = document["payloadType"].encode()
    signed = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)
    jwk = alice.public.to_jwk()
    assert document["signatures"][0]["keyid"] == jwk["kid"]
    Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])).verify(
        base64.b64decode(document["signatures"][0]["sig"]), signed
    )


def test_json_accepts_url_safe_and_unpadded_base64(alice: SigningKey) -> None:
    envelope = sign(QUERY, b"\xfb\xff payload", [alice])
    document = json.loads(envelope.to_json())
    document["payload"] = base64.urlsafe_b64encode(envelope.payload).decode().rstrip("=")
    document["signatures"][0]["sig"] = base64.urlsafe_b64encode(envelope.signatures[0].sig).decode()
    assert Envelope.from_json(json.dumps(document)) == envelope


def _json_with(alice: SigningKey, **changes: Any) -> str:
    document = json.loads(sign(QUERY, b"payload", [alice]).to_json())
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"payloadType": 7}, "lacks the string member 'payloadType'"),
        ({"payload": None}, "lacks the string member 'payload'"),
        ({"payload": "cGF5bG9hZA=="[:-1]}, "impossible base64 length or padding"),
        ({"payload": "Zh=="}, "not canonical base64"),
        ({"payload": "+_8="}, "payload is not base64"),
        ({"payload": "cGF5 bG9hZA=="}, "payload is not base64"),
        ({"payload": "=="}, "impossible base64 length or padding"),
        ({"signatures": {}}, "lacks a 'signatures' list"),
        ({"signatures": ["sig"]}, "signature 0 is not an object"),
        ({"signatures": [{"keyid": "k"}]}, r"signatures\[0\] lacks the string member 'sig'"),
        ({"signatures": [{"keyid": "k", "sig": "!!"}]}, r"signatures\[0\]\.sig is not base64"),
    ],
)
def test_json_refusals(alice: SigningKey, change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Envelope.from_json(_json_with(alice, **change))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be an object"),
        (b"\xff", "not valid JSON"),
        ('{"payloadType":"a","payloadType":"b"}', "member 'payloadType' appears twice"),
    ],
)
def test_json_malformed(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Envelope.from_json(text)


def test_json_oversized(alice: SigningKey) -> None:
    text = sign(QUERY, b"payload", [alice]).to_json()
    with pytest.raises(MessageTooLarge, match="the limit is 10"):
        Envelope.from_json(text, max_size=10)
