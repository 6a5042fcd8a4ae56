from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
import pytest

from credence import payloads
from credence.encoding import b64url_decode, b64url_encode
from credence.envelope import Envelope, sign
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
from credence.jws import sign_compact
from credence.keys import KeySet, SigningKey
from credence.v1 import common_pb2, registry_pb2
from credence.verdicts import (
    VERDICT_FILE_TYPE,
    VERDICT_TYP,
    read_verdict_file,
    sign_verdict,
    verdict_claims,
    verdict_file,
    verdict_jws,
    verify_verdict,
    verify_verdict_file,
    verify_verdict_jws,
)

REGISTRY = SigningKey.from_seed(hashlib.sha256(b"verdict test registry").digest())
OTHER = SigningKey.from_seed(hashlib.sha256(b"verdict test other").digest())
KEYS = KeySet([REGISTRY.public])
ISSUER = "credence-registry"
REQUESTER = "acme"
ISSUED = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(hours=24)
NOW = ISSUED + timedelta(minutes=5)
PROMISE = common_pb2.Envelope(
    payload_type=payloads.LOG_PROMISE,
    payload=b"a log promise",
    signatures=[common_pb2.Signature(keyid="log-key", sig=b"s" * 64)],
)
HASH_A = hashlib.sha256(b"answer a").digest()
HASH_C = hashlib.sha256(b"answer c").digest()


Clearable = Literal["issued_at", "expires_at", "log_promise", "credit"]


def make_verdict(*clear: Clearable) -> registry_pb2.Verdict:
    verdict = registry_pb2.Verdict(
        verdict_id="v-123",
        query_id="q-456",
        subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes(range(32))),
        requester=REQUESTER,
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        kinds=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
        blacklist=registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED,
            categories=["dishonest_debtor"],
            disputed=True,
            listing_agencies=1,
        ),
        credit=registry_pb2.CreditVerdict(
            score=560, band="poor", reason_codes=["J01"], provisional=True, disputed=False
        ),
        coverage=common_pb2.Coverage(
            agencies=[
                common_pb2.AgencyCoverage(
                    member_id="a", state=common_pb2.COVERAGE_STATE_ANSWERED, answer_hash=HASH_A
                ),
                common_pb2.AgencyCoverage(
                    member_id="b",
                    state=common_pb2.COVERAGE_STATE_TIMEOUT,
                    reason="no answer within 250 ms",
                ),
                common_pb2.AgencyCoverage(
                    member_id="c", state=common_pb2.COVERAGE_STATE_ANSWERED, answer_hash=HASH_C
                ),
            ],
            answered=2,
            expected=3,
        ),
        scorecard_version="credence-scorecard-v1",
        log_promise=PROMISE,
        answer_hashes=[HASH_A, HASH_C],
        grant_id="g-789",
    )
    verdict.issued_at.FromDatetime(ISSUED)
    verdict.expires_at.FromDatetime(EXPIRES)
    for name in clear:
        verdict.ClearField(name)
    return verdict


def check(
    envelope: Envelope,
    *,
    keys: KeySet = KEYS,
    now: datetime = NOW,
    requester: str | None = REQUESTER,
) -> registry_pb2.Verdict:
    return verify_verdict(envelope, registry_keys=keys, now=now, requester=requester)


def check_jws(
    token: str,
    *,
    now: datetime = NOW,
    requester: str | None = REQUESTER,
    issuer: str = ISSUER,
) -> dict[str, Any]:
    return verify_verdict_jws(
        token, registry_keys=KEYS, now=now, requester=requester, issuer=issuer
    )


# ---------------------------------------------------------------- envelope


def test_sign_and_verify_round_trip_through_the_wire() -> None:
    verdict = make_verdict()
    envelope = sign_verdict(verdict, REGISTRY)
    assert envelope.payload_type == payloads.VERDICT
    assert check(Envelope.from_bytes(envelope.to_bytes())) == verdict


def test_requester_none_skips_the_audience_check() -> None:
    assert check(sign_verdict(make_verdict(), REGISTRY), requester=None).requester == REQUESTER


@pytest.mark.parametrize("position", [0, 10, 40, -1])
def test_a_flipped_payload_byte_fails(position: int) -> None:
    envelope = sign_verdict(make_verdict(), REGISTRY)
    payload = bytearray(envelope.payload)
    payload[position] ^= 0x01
    tampered = Envelope(envelope.payload_type, bytes(payload), envelope.signatures)
    with pytest.raises(BadSignature, match="does not verify"):
        check(tampered)


def test_a_verdict_signed_by_another_key_is_refused() -> None:
    with pytest.raises(UnknownKey, match="not trusted"):
        check(sign_verdict(make_verdict(), OTHER))


def test_another_keys_signature_under_the_registry_kid_is_refused() -> None:
    genuine = sign_verdict(make_verdict(), REGISTRY)
    forged_sig = OTHER.sign(genuine.pae())
    forged = Envelope(
        genuine.payload_type,
        genuine.payload,
        (type(genuine.signatures[0])(keyid=REGISTRY.kid, sig=forged_sig),),
    )
    with pytest.raises(BadSignature, match=f"under key {REGISTRY.kid}"):
        check(forged)


def test_another_payload_type_is_refused() -> None:
    payload = make_verdict().SerializeToString()
    envelope = sign(payloads.ANSWER, payload, [REGISTRY])
    with pytest.raises(WrongPayloadType, match=r"expected 'application/vnd\.credence\.verdict"):
        check(envelope)


def test_a_signed_payload_that_is_not_a_verdict_is_refused() -> None:
    envelope = sign(payloads.VERDICT, b"\xff\xff\xff", [REGISTRY])
    with pytest.raises(InvalidInput, match=r"is not a credence\.v1\.Verdict protobuf"):
        check(envelope)


@pytest.mark.parametrize("missing", ["issued_at", "expires_at"])
def test_a_verdict_without_its_times_is_refused(missing: Clearable) -> None:
    with pytest.raises(InvalidInput, match="lacks issued_at or expires_at"):
        check(sign_verdict(make_verdict(missing), REGISTRY))


def test_an_expired_verdict_is_refused_with_both_times() -> None:
    envelope = sign_verdict(make_verdict(), REGISTRY)
    assert check(envelope, now=EXPIRES - timedelta(seconds=1)).verdict_id == "v-123"
    with pytest.raises(
        Expired, match=r"verdict expired at 2026-11-29T10:00:00Z \(now 2026-11-29T10:00:00Z\)"
    ):
        check(envelope, now=EXPIRES)


def test_a_verdict_issued_in_the_future_beyond_the_skew_is_refused() -> None:
    envelope = sign_verdict(make_verdict(), REGISTRY)
    assert check(envelope, now=ISSUED - timedelta(seconds=60)).verdict_id == "v-123"
    with pytest.raises(NotYetValid, match=r"issued at 2026-11-28T10:00:00Z, in the future"):
        check(envelope, now=ISSUED - timedelta(seconds=61))


def test_a_verdict_for_another_requester_is_refused() -> None:
    with pytest.raises(WrongAudience, match="verdict was issued to 'acme', not 'globex'"):
        check(sign_verdict(make_verdict(), REGISTRY), requester="globex")


# --------------------------------------------------------------------- JWS


def test_jws_claims_restate_the_verdict() -> None:
    promise_hash = hashlib.sha256(b"a log promise").digest()
    assert verdict_claims(make_verdict(), ISSUER) == {
        "iss": ISSUER,
        "sub": bytes(range(32)).hex(),
        "sub_type": "person",
        "aud": REQUESTER,
        "iat": 1_795_860_000,
        "exp": 1_795_946_400,
        "jti": "v-123",
        "query_id": "q-456",
        "purpose": "credit_assessment",
        "kinds": ["blacklist", "credit"],
        "blacklist": {
            "status": "listed",
            "categories": ["dishonest_debtor"],
            "disputed": True,
            "listing_agencies": 1,
        },
        "credit": {
            "score": 560,
            "band": "poor",
            "reason_codes": ["J01"],
            "provisional": True,
            "disputed": False,
        },
        "coverage": {
            "answered": 2,
            "expected": 3,
            "agencies": [
                {"member_id": "a", "state": "answered", "reason": ""},
                {"member_id": "b", "state": "timeout", "reason": "no answer within 250 ms"},
                {"member_id": "c", "state": "answered", "reason": ""},
            ],
        },
        "scorecard_version": "credence-scorecard-v1",
        "grant_id": "g-789",
        "answers": [b64url_encode(HASH_A), b64url_encode(HASH_C)],
        "log_promise": b64url_encode(promise_hash),
    }


def test_jws_claims_hold_only_the_asked_kinds() -> None:
    verdict = make_verdict("log_promise", "credit")
    del verdict.kinds[1]
    claims = verdict_claims(verdict, ISSUER)
    assert claims["kinds"] == ["blacklist"]
    assert "credit" not in claims
    assert "log_promise" not in claims


def test_jws_is_compact_eddsa_with_the_verdict_typ() -> None:
    token = verdict_jws(make_verdict(), REGISTRY, ISSUER)
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": REGISTRY.kid, "typ": VERDICT_TYP}


def test_jws_verifies_with_pyjwt() -> None:
    token = verdict_jws(make_verdict(), REGISTRY, ISSUER)
    claims = jwt.decode(
        token,
        key=REGISTRY.public.public_key,
        algorithms=["EdDSA"],
        audience=REQUESTER,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == verdict_claims(make_verdict(), ISSUER)
    assert check_jws(token) == claims


def test_a_tampered_jws_fails_with_pyjwt_and_here() -> None:
    header, payload, signature = verdict_jws(make_verdict(), REGISTRY, ISSUER).split(".")
    claims = json.loads(b64url_decode(payload))
    claims["credit"]["score"] = 900
    forged_payload = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    tampered = f"{header}.{forged_payload}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            tampered,
            key=REGISTRY.public.public_key,
            algorithms=["EdDSA"],
            audience=REQUESTER,
            issuer=ISSUER,
            options={"verify_exp": False},
        )
    with pytest.raises(BadSignature, match="does not verify"):
        check_jws(tampered)


def test_jws_refusals() -> None:
    token = verdict_jws(make_verdict(), REGISTRY, ISSUER)
    with pytest.raises(Expired, match=r"verdict expired at 2026-11-29T10:00:00Z"):
        check_jws(token, now=EXPIRES + timedelta(minutes=2))
    with pytest.raises(WrongAudience, match="verdict is for 'acme', not for 'globex'"):
        check_jws(token, requester="globex")
    with pytest.raises(WrongIssuer, match="verdict is issued by 'credence-registry'"):
        check_jws(token, issuer="someone-else")
    with pytest.raises(NotYetValid, match="in the future"):
        check_jws(token, now=ISSUED - timedelta(minutes=5))
    assert check_jws(token, requester=None)["aud"] == REQUESTER


def test_a_registry_token_of_another_typ_is_refused() -> None:
    token = sign_compact(verdict_claims(make_verdict(), ISSUER), REGISTRY, "consent+jwt")
    with pytest.raises(WrongPayloadType, match=r"'consent\+jwt', expected 'verdict\+jwt'"):
        check_jws(token)


def test_a_jws_by_another_key_is_refused() -> None:
    token = verdict_jws(make_verdict(), OTHER, ISSUER)
    with pytest.raises(UnknownKey):
        check_jws(token)


def test_an_oversized_jws_is_not_issued() -> None:
    verdict = make_verdict()
    for number in range(800):
        verdict.coverage.agencies.add(
            member_id=f"agency-{number}",
            state=common_pb2.COVERAGE_STATE_REFUSED,
            reason="PERMISSION_DENIED: " + "x" * 60,
        )
    with pytest.raises(MessageTooLarge, match="the limit is 65536"):
        verdict_jws(verdict, REGISTRY, ISSUER)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"subject": common_pb2.SubjectRef(ref=b"x" * 32)},
            "unspecified or unknown subject type",
        ),
        ({"purpose": 0}, "purpose 0 is unspecified or unknown"),
        ({"blacklist": registry_pb2.BlacklistVerdict()}, "unspecified or unknown blacklist status"),
    ],
)
def test_unspecified_enums_cannot_be_stated(changes: dict[str, Any], message: str) -> None:
    verdict = make_verdict()
    for name, value in changes.items():
        if isinstance(value, int):
            setattr(verdict, name, value)
        else:
            getattr(verdict, name).CopyFrom(value)
    with pytest.raises(InvalidInput, match=message):
        verdict_claims(verdict, ISSUER)


# -------------------------------------------------------------------- file


def make_file(verdict: registry_pb2.Verdict | None = None) -> str:
    verdict = verdict or make_verdict()
    return verdict_file(sign_verdict(verdict, REGISTRY), verdict_jws(verdict, REGISTRY, ISSUER))


def test_verdict_file_round_trip() -> None:
    envelope = sign_verdict(make_verdict(), REGISTRY)
    token = verdict_jws(make_verdict(), REGISTRY, ISSUER)
    text = verdict_file(envelope, token)
    assert json.loads(text)["type"] == VERDICT_FILE_TYPE
    assert read_verdict_file(text) == (envelope, token)


def test_verify_verdict_file_checks_both_forms() -> None:
    verdict, claims = verify_verdict_file(
        make_file(), registry_keys=KEYS, now=NOW, requester=REQUESTER, issuer=ISSUER
    )
    assert verdict == make_verdict()
    assert claims["jti"] == "v-123"


def test_a_file_whose_forms_disagree_is_refused() -> None:
    document = json.loads(make_file())
    other = make_verdict()
    other.credit.score = 900
    document["jws"] = verdict_jws(other, REGISTRY, ISSUER)
    with pytest.raises(ClaimMismatch, match="disagree on credit"):
        verify_verdict_file(
            json.dumps(document), registry_keys=KEYS, now=NOW, requester=REQUESTER, issuer=ISSUER
        )


def test_a_file_with_a_flipped_envelope_byte_is_refused() -> None:
    envelope = sign_verdict(make_verdict(), REGISTRY)
    payload = bytearray(envelope.payload)
    payload[5] ^= 0x80
    tampered = Envelope(envelope.payload_type, bytes(payload), envelope.signatures)
    text = verdict_file(tampered, verdict_jws(make_verdict(), REGISTRY, ISSUER))
    with pytest.raises(BadSignature):
        verify_verdict_file(text, registry_keys=KEYS, now=NOW, requester=REQUESTER, issuer=ISSUER)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: d.update(type="other"), InvalidInput, "verdict file type is 'other'"),
        (lambda d: d.update(extra=1), InvalidInput, r"unexpected members \['extra'\]"),
        (lambda d: d.pop("jws"), InvalidInput, "lacks the 'jws' string"),
        (lambda d: d.update(envelope="x"), InvalidInput, "lacks the 'envelope' object"),
        (
            lambda d: d["envelope"].update(payload="!!"),
            InvalidInput,
            "verdict file envelope: DSSE JSON payload is not base64",
        ),
    ],
)
def test_malformed_files_are_refused(mutate: Any, error: type[Exception], message: str) -> None:
    document = json.loads(make_file())
    mutate(document)
    with pytest.raises(error, match=message):
        read_verdict_file(json.dumps(document))


def test_a_file_with_a_duplicate_member_is_refused() -> None:
    text = make_file().replace('"jws":', '"jws": "x", "jws":', 1)
    with pytest.raises(InvalidInput, match="member 'jws' twice"):
        read_verdict_file(text)


def test_an_oversized_file_is_refused_before_parsing() -> None:
    with pytest.raises(MessageTooLarge, match="verdict file is"):
        read_verdict_file(" " * (300 * 1024))
