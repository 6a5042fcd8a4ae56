"""Signed verdicts: the registry signs, requesters verify offline.

A verdict travels in two forms signed by the same registry key:

* a DSSE envelope (payload type :data:`credence.payloads.VERDICT`) over the
  serialized ``credence.v1.Verdict``: the authoritative form;
* a compact JWS credential (``typ`` ``verdict+jwt``, EdDSA) whose claims restate
  the verdict in JSON, so that any JOSE library can check it against the
  registry's JWKS (``/.well-known/jwks.json``).

The JWS binds what the verdict binds: subject, requester (``aud``), purpose,
kinds, times, outcome, coverage, scorecard version, grant, the hashes of the
answers it was built from and the SHA-256 of the log promise envelope's
payload: the signed ``LogPromise`` bytes exactly as the log produced them,
never a re-serialization (``docs/protocol.md`` gives every claim).

Time rules: the envelope expires exactly at ``expires_at`` (the registry chose
that instant; a requester relying on a verdict gains nothing from leeway), and
an issue time more than the clock skew ahead of ``now`` is refused. The JWS
follows the JOSE habit of :func:`credence.jws.check_time_claims`: the skew is
allowed on ``exp`` too.

A verdict file (``credence verdict check FILE``) is JSON holding both forms:
``{"type": "credence-verdict/v1", "envelope": <DSSE JSON envelope>, "jws": "..."}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from credence import payloads
from credence.encoding import b64url_encode, format_time, require_utc
from credence.envelope import Envelope, sign, verify_message
from credence.errors import (
    ClaimMismatch,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotYetValid,
    WrongAudience,
)
from credence.jws import (
    check_audience,
    check_issuer,
    check_time_claims,
    parse_json_object,
    sign_compact,
    verify_compact,
)
from credence.keys import KeySet, SigningKey
from credence.names import kind_name, purpose_name
from credence.v1 import common_pb2, registry_pb2

__all__ = [
    "VERDICT_FILE_TYPE",
    "VERDICT_JWS_MAX_SIZE",
    "VERDICT_TYP",
    "read_verdict_file",
    "sign_verdict",
    "verdict_claims",
    "verdict_file",
    "verdict_jws",
    "verify_verdict",
    "verify_verdict_file",
    "verify_verdict_jws",
]

VERDICT_TYP = "verdict+jwt"
#: A verdict names a few dozen agencies at most; 64 KiB leaves ample room.
VERDICT_JWS_MAX_SIZE = 64 * 1024
VERDICT_FILE_TYPE = "credence-verdict/v1"
# The envelope plus the JWS, each bounded, with room for JSON and base64.
_MAX_FILE_CHARS = 4 * VERDICT_JWS_MAX_SIZE

_SUBJECT_TYPES: dict[int, str] = {
    common_pb2.SUBJECT_TYPE_PERSON: "person",
    common_pb2.SUBJECT_TYPE_ORGANISATION: "organisation",
}
_BLACKLIST_STATUSES: dict[int, str] = {
    common_pb2.BLACKLIST_STATUS_CLEAR: "clear",
    common_pb2.BLACKLIST_STATUS_LISTED: "listed",
    common_pb2.BLACKLIST_STATUS_INCOMPLETE: "incomplete",
}
_COVERAGE_STATES: dict[int, str] = {
    value: name.removeprefix("COVERAGE_STATE_").lower()
    for name, value in common_pb2.CoverageState.items()
    if not name.endswith("_UNSPECIFIED")
}


def sign_verdict(verdict: registry_pb2.Verdict, key: SigningKey) -> Envelope:
    """Sign ``verdict`` as a DSSE envelope under the registry's key.

    The payload is the deterministic serialization; verifiers parse the bytes
    as received, so nothing depends on re-serializing it the same way.
    """
    return sign(payloads.VERDICT, verdict.SerializeToString(deterministic=True), [key])


def verify_verdict(
    envelope: Envelope,
    *,
    registry_keys: KeySet,
    now: datetime,
    requester: str | None,
    skew: timedelta = payloads.CLOCK_SKEW,
) -> registry_pb2.Verdict:
    """Verify a verdict envelope offline and return the verdict it carries.

    Args:
        envelope: the envelope as received.
        registry_keys: the registry's keys (manifest or JWKS).
        now: the verifier's clock (tz-aware).
        requester: the member relying on the verdict; None skips the audience
            check (an auditor re-checking someone else's verdict).
        skew: how far ahead of ``now`` the issue time may lie.

    Returns:
        The verdict parsed from the payload bytes exactly as signed.

    Raises:
        WrongPayloadType: the envelope is not a verdict.
        UnknownKey: signed only by keys that are not the registry's.
        BadSignature: a registry signature does not verify (e.g. a flipped byte).
        InvalidInput: the payload is not a Verdict, or lacks its times.
        Expired: ``now`` is at or past ``expires_at``.
        NotYetValid: ``issued_at`` is more than ``skew`` after ``now``.
        WrongAudience: the verdict was issued to another member.
    """
    now = require_utc(now, "now")
    verdict = verify_message(envelope, payloads.VERDICT, registry_keys, registry_pb2.Verdict)
    if not verdict.HasField("issued_at") or not verdict.HasField("expires_at"):
        raise InvalidInput(f"verdict {verdict.verdict_id!r} lacks issued_at or expires_at")
    issued_at = verdict.issued_at.ToDatetime(tzinfo=UTC)
    expires_at = verdict.expires_at.ToDatetime(tzinfo=UTC)
    if now >= expires_at:
        raise Expired(f"verdict expired at {format_time(expires_at)} (now {format_time(now)})")
    if issued_at > now + skew:
        raise NotYetValid(
            f"verdict claims to be issued at {format_time(issued_at)}, "
            f"in the future (now {format_time(now)})"
        )
    if requester is not None and verdict.requester != requester:
        raise WrongAudience(f"verdict was issued to {verdict.requester!r}, not {requester!r}")
    return verdict


def verdict_claims(verdict: registry_pb2.Verdict, issuer: str) -> dict[str, Any]:
    """The JWS claims restating ``verdict`` (see the module docstring).

    Raises:
        InvalidInput: the verdict has an unspecified or unknown enum value
            (subject type, purpose, kind, blacklist status, coverage state).
    """
    kinds = list(verdict.kinds)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": verdict.subject.ref.hex(),
        "sub_type": _name(_SUBJECT_TYPES, verdict.subject.type, "subject type"),
        "aud": verdict.requester,
        "iat": verdict.issued_at.seconds,
        "exp": verdict.expires_at.seconds,
        "jti": verdict.verdict_id,
        "query_id": verdict.query_id,
        "purpose": purpose_name(verdict.purpose),
        "kinds": [kind_name(kind) for kind in kinds],
    }
    if common_pb2.VERDICT_KIND_BLACKLIST in kinds:
        blacklist = verdict.blacklist
        claims["blacklist"] = {
            "status": _name(_BLACKLIST_STATUSES, blacklist.status, "blacklist status"),
            "categories": list(blacklist.categories),
            "disputed": blacklist.disputed,
            "listing_agencies": blacklist.listing_agencies,
        }
    if common_pb2.VERDICT_KIND_CREDIT in kinds:
        credit = verdict.credit
        claims["credit"] = {
            "score": credit.score,
            "band": credit.band,
            "reason_codes": list(credit.reason_codes),
            "provisional": credit.provisional,
            "disputed": credit.disputed,
        }
    coverage = verdict.coverage
    claims["coverage"] = {
        "answered": coverage.answered,
        "expected": coverage.expected,
        "agencies": [
            {
                "member_id": agency.member_id,
                "state": _name(_COVERAGE_STATES, agency.state, "coverage state"),
                "reason": agency.reason,
            }
            for agency in coverage.agencies
        ],
    }
    claims["scorecard_version"] = verdict.scorecard_version
    claims["grant_id"] = verdict.grant_id
    claims["answers"] = [b64url_encode(digest) for digest in verdict.answer_hashes]
    if verdict.HasField("log_promise"):
        # The signed LogPromise bytes as the log produced them (like an answer
        # hash); re-serializing the envelope would make the hash depend on a
        # serializer.
        claims["log_promise"] = b64url_encode(hashlib.sha256(verdict.log_promise.payload).digest())
    return claims


def verdict_jws(verdict: registry_pb2.Verdict, key: SigningKey, issuer: str) -> str:
    """The verdict as a compact JWS credential (``typ`` ``verdict+jwt``, EdDSA).

    Raises:
        InvalidInput: as :func:`verdict_claims`.
        MessageTooLarge: the token would exceed :data:`VERDICT_JWS_MAX_SIZE`,
            which verifiers refuse.
    """
    token = sign_compact(verdict_claims(verdict, issuer), key, VERDICT_TYP)
    if len(token) > VERDICT_JWS_MAX_SIZE:
        raise MessageTooLarge(
            f"verdict JWS would be {len(token)} characters; the limit is {VERDICT_JWS_MAX_SIZE}"
        )
    return token


def verify_verdict_jws(
    token: str,
    *,
    registry_keys: KeySet,
    now: datetime,
    requester: str | None,
    issuer: str,
) -> dict[str, Any]:
    """Verify a verdict JWS credential and return its claims.

    Raises:
        MessageTooLarge: the token exceeds :data:`VERDICT_JWS_MAX_SIZE`.
        InvalidInput: a malformed token or claims (e.g. no ``exp``).
        BadSignature: the signature does not verify or a header is refused.
        WrongPayloadType: the token is not a ``verdict+jwt``.
        UnknownKey: the ``kid`` is not a registry key.
        Expired: the credential has expired.
        NotYetValid: issued in the future.
        WrongAudience: issued to another member (checked when ``requester`` is given).
        WrongIssuer: not issued by ``issuer``.
    """
    claims = verify_compact(token, registry_keys, VERDICT_TYP, max_size=VERDICT_JWS_MAX_SIZE)
    check_time_claims(claims, now, label="verdict")
    if requester is not None:
        check_audience(claims, requester, label="verdict")
    check_issuer(claims, issuer, label="verdict")
    return claims


def verdict_file(envelope: Envelope, jws: str) -> str:
    """The JSON file holding a verdict in both forms."""
    document = {
        "type": VERDICT_FILE_TYPE,
        "envelope": json.loads(envelope.to_json()),
        "jws": jws,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def read_verdict_file(text: str) -> tuple[Envelope, str]:
    """Parse a verdict file; nothing is verified yet.

    Raises:
        MessageTooLarge: the file is larger than any valid verdict file.
        InvalidInput: not JSON, a wrong ``type``, or a missing or malformed
            envelope or JWS.
    """
    if len(text) > _MAX_FILE_CHARS:
        raise MessageTooLarge(
            f"verdict file is {len(text)} characters; the limit is {_MAX_FILE_CHARS}"
        )
    document = parse_json_object(text.encode("utf-8"), "verdict file")
    if document.get("type") != VERDICT_FILE_TYPE:
        raise InvalidInput(
            f"verdict file type is {document.get('type')!r}, expected {VERDICT_FILE_TYPE!r}"
        )
    extra = sorted(set(document) - {"type", "envelope", "jws"})
    if extra:
        raise InvalidInput(f"verdict file has unexpected members {extra}")
    envelope_json = document.get("envelope")
    jws = document.get("jws")
    if not isinstance(envelope_json, dict):
        raise InvalidInput("verdict file lacks the 'envelope' object (a DSSE JSON envelope)")
    if not isinstance(jws, str) or not jws:
        raise InvalidInput("verdict file lacks the 'jws' string (the compact JWS credential)")
    try:
        envelope = Envelope.from_json(json.dumps(envelope_json))
    except InvalidInput as exc:
        raise InvalidInput(f"verdict file envelope: {exc}") from exc
    return envelope, jws


def verify_verdict_file(
    text: str,
    *,
    registry_keys: KeySet,
    now: datetime,
    requester: str | None,
    issuer: str,
) -> tuple[registry_pb2.Verdict, dict[str, Any]]:
    """Verify both forms in a verdict file and that they state the same verdict.

    Raises:
        MessageTooLarge: as :func:`read_verdict_file`.
        InvalidInput: as :func:`read_verdict_file`, :func:`verify_verdict` or
            :func:`verify_verdict_jws`.
        VerificationError: any refusal of :func:`verify_verdict` or
            :func:`verify_verdict_jws` (a subclass of it).
        ClaimMismatch: the JWS claims are not those of the envelope's verdict.
    """
    envelope, jws = read_verdict_file(text)
    verdict = verify_verdict(envelope, registry_keys=registry_keys, now=now, requester=requester)
    claims = verify_verdict_jws(
        jws, registry_keys=registry_keys, now=now, requester=requester, issuer=issuer
    )
    expected = verdict_claims(verdict, issuer)
    differing = sorted(
        name for name in expected.keys() | claims.keys() if expected.get(name) != claims.get(name)
    )
    if differing:
        raise ClaimMismatch(
            f"verdict file's JWS and envelope disagree on {', '.join(differing)} "
            f"(verdict {verdict.verdict_id!r})"
        )
    return verdict, claims


def _name(table: Mapping[int, str], value: int, what: str) -> str:
    try:
        return table[value]
    except KeyError:
        raise InvalidInput(f"verdict has an unspecified or unknown {what} ({value})") from None
