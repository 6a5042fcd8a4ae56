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

A single lookup's verdict carries the node-signed masked answers and recovery
shares it was built from: :func:`readd_verdict` checks every signature, adds
them again and checks every field against the sum (docs/protocol.md section
10), so nobody has to trust the registry's addition.

A verdict file (``credence verdict check FILE``) is JSON holding both forms:
``{"type": "credence-verdict/v1", "envelope": <DSSE JSON envelope>, "jws": "..."}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from credence import payloads
from credence.blind.layout import VectorLayout, for_scorecard
from credence.blind.reading import impossible_reason, kind_counts, verdict_parts
from credence.blind.recovery import remove_recovery
from credence.blind.sums import add
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
from credence.scorecard import Aggregator
from credence.v1 import agency_pb2, common_pb2, registry_pb2

if TYPE_CHECKING:
    from credence.manifest import TrustedManifest

__all__ = [
    "VERDICT_FILE_TYPE",
    "VERDICT_JWS_MAX_SIZE",
    "VERDICT_TYP",
    "read_verdict_file",
    "readd_verdict",
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


_ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED


def readd_verdict(verdict: registry_pb2.Verdict, manifest: TrustedManifest) -> None:
    """Re-add the answers a verdict carries and check that every field follows from the sum.

    Checks each answer's and recovery share's signature under its agency's
    keys in ``manifest``; that the answers are the query's, one per agency
    the coverage lists ANSWERED, with the coverage's answer hashes; that the
    shares cover exactly the members that did not answer; then adds the
    masked vectors, removes the shares and checks the blacklist and credit
    parts and ``incomplete_reason`` against what the sum gives
    (:mod:`credence.blind.reading`). Contributors per kind are the
    manifest's, so use the manifest version the verdict was made under.

    Raises:
        InvalidInput: the verdict carries no answers though agencies answered
            (a screening verdict references its batch's answers by hash), or
            an answer or share is malformed.
        UnknownKey: an answer or share is signed by no key of its agency.
        BadSignature: an answer's or share's signature does not verify.
        ClaimMismatch: an answer, share or verdict field does not follow
            (names the first that differs).
    """
    what = f"verdict {verdict.verdict_id!r}"
    layout = for_scorecard(manifest.scorecard)
    if verdict.scorecard_version != layout.scorecard_version:
        raise ClaimMismatch(
            f"{what} is under scorecard {verdict.scorecard_version!r}; the manifest's is "
            f"{layout.scorecard_version!r}: check it against the manifest it was made under"
        )
    members = [agency.member_id for agency in verdict.coverage.agencies]
    masked = _answers(verdict, manifest, what, layout)
    missing = sorted(set(members) - set(masked))
    shares = _shares(verdict, manifest, what, missing=missing, words=layout.length)
    summed: list[int] | None = add(masked.values()) if masked else [0] * layout.length
    why = ""
    if masked and missing and set(shares) != set(masked):
        if not verdict.incomplete_reason:
            raise ClaimMismatch(
                f"{what}: the shares of {', '.join(sorted(set(masked) - set(shares)))} are "
                "missing, but the verdict does not say its sum could not be read"
            )
        summed, why = None, verdict.incomplete_reason
    elif masked and missing:
        summed = remove_recovery(summed or [], shares.values())
    if summed is not None:
        why = impossible_reason(layout, summed, len(masked), verdict.kinds)
        summed = None if why else summed
    if verdict.incomplete_reason != why:
        raise ClaimMismatch(
            f"{what}: incomplete_reason is {verdict.incomplete_reason!r}; the sum gives {why!r}"
        )
    contributors: dict[int, set[str]] = {
        kind: {member.member_id for member in manifest.contributors(kind)} for kind in verdict.kinds
    }
    counts = kind_counts(members, masked, verdict.kinds, contributors)
    blacklist, credit = verdict_parts(
        layout, summed, aggregator=Aggregator(manifest.scorecard), counts=counts
    )
    _same_part(verdict, what, "blacklist", blacklist, common_pb2.VERDICT_KIND_BLACKLIST)
    _same_part(verdict, what, "credit", credit, common_pb2.VERDICT_KIND_CREDIT)


def _same_part(
    verdict: registry_pb2.Verdict,
    what: str,
    name: Literal["blacklist", "credit"],
    part: registry_pb2.BlacklistVerdict | registry_pb2.CreditVerdict,
    kind: int,
) -> None:
    asked = kind in verdict.kinds
    if verdict.HasField(name) != asked or (asked and getattr(verdict, name) != part):
        raise ClaimMismatch(
            f"{what}: its {name} part does not follow from the re-added sum "
            f"(the sum gives {' '.join(str(part).split()) if asked else 'none'})"
        )


def _answers(
    verdict: registry_pb2.Verdict, manifest: TrustedManifest, what: str, layout: VectorLayout
) -> dict[str, list[int]]:
    """The verified masked vectors by agency: one per agency the coverage lists answered."""
    coverage = verdict.coverage
    hashes = {a.member_id: a.answer_hash for a in coverage.agencies if a.state == _ANSWERED}
    if hashes and not verdict.answers:
        raise InvalidInput(
            f"{what} carries no answers to re-add: a screening verdict references its batch's "
            "answers by their hashes (answer_hashes)"
        )
    if list(verdict.answer_hashes) != list(hashes.values()):
        raise ClaimMismatch(f"{what}: answer_hashes are not the coverage's answered hashes")
    if (coverage.answered, coverage.expected) != (len(hashes), len(coverage.agencies)):
        raise ClaimMismatch(
            f"{what}: coverage counts {coverage.answered} of {coverage.expected}; it lists "
            f"{len(hashes)} answered of {len(coverage.agencies)}"
        )
    masked: dict[str, list[int]] = {}
    for proto in verdict.answers:
        envelope = Envelope.from_proto(proto)
        agency = _signer(envelope, agency_pb2.Answer, what).agency
        answer = verify_message(
            envelope, payloads.ANSWER, manifest.member_keys(agency, allow_suspended=True),
            agency_pb2.Answer,
        )  # fmt: skip
        digest = hashlib.sha256(envelope.payload).digest()
        if answer.query_id != verdict.query_id or hashes.get(agency) != digest:
            raise ClaimMismatch(
                f"{what}: the answer signed by {agency!r} is not one its coverage lists "
                "answered to this query (query id or answer hash differs)"
            )
        if agency in masked:
            raise ClaimMismatch(f"{what} carries two answers by {agency!r}")
        if answer.layout_id != layout.layout_id or len(answer.masked) != layout.length:
            raise ClaimMismatch(f"{what}: {agency!r}'s answer is not a vector of the layout")
        masked[agency] = list(answer.masked)
    if set(masked) != set(hashes):
        raise ClaimMismatch(
            f"{what} lacks the answers of {', '.join(sorted(set(hashes) - set(masked)))}"
        )
    return masked


def _signer(envelope: Envelope, message_cls: Any, what: str) -> Any:
    """The unverified message, read only to find whose keys verify it."""
    try:
        return message_cls.FromString(envelope.payload)
    except Exception as exc:
        raise InvalidInput(f"{what} carries a malformed {message_cls.__name__}: {exc}") from exc


def _shares(
    verdict: registry_pb2.Verdict,
    manifest: TrustedManifest,
    what: str,
    *,
    missing: list[str],
    words: int,
) -> dict[str, list[int]]:
    """The verdict's recovery shares by agency, each verified and for the missing set."""
    shares: dict[str, list[int]] = {}
    for proto in verdict.recoveries:
        envelope = Envelope.from_proto(proto)
        agency = _signer(envelope, agency_pb2.RecoveryShare, what).agency
        share = verify_message(
            envelope, payloads.RECOVERY_SHARE,
            manifest.member_keys(agency, allow_suspended=True), agency_pb2.RecoveryShare,
        )  # fmt: skip
        if share.query_id != verdict.query_id or list(share.missing) != missing:
            raise ClaimMismatch(
                f"{what}: {agency!r}'s recovery share is not for this query and its missing "
                f"agencies ({', '.join(missing) or 'none'})"
            )
        if agency in shares or len(share.share) != words:
            raise ClaimMismatch(f"{what}: {agency!r}'s recovery share is repeated or misshaped")
        shares[agency] = list(share.share)
    return shares
