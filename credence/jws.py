"""Compact JWS (RFC 7515) with EdDSA only (RFC 8037), verified the RFC 8725 way.

This is a deliberately small implementation over :mod:`credence.keys`: one
algorithm (``EdDSA`` over Ed25519), keys found only by ``kid`` in a trusted
:class:`~credence.keys.KeySet`, ``typ`` always checked, and no header that could
smuggle in a key or change how the token is processed. Claims such as ``exp``,
``aud`` and ``iss`` are checked by separate pure functions, so a caller states
each rule it relies on.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from credence.encoding import b64url_decode, b64url_encode, format_time, from_epoch, to_epoch
from credence.errors import (
    BadSignature,
    Expired,
    InvalidInput,
    MessageTooLarge,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    WrongPayloadType,
)
from credence.keys import KeySet, SigningKey, VerifyKey

ALGORITHM = "EdDSA"
DEFAULT_MAX_SIZE = 16384
DEFAULT_SKEW = timedelta(seconds=60)

# RFC 8725 section 3.10 and RFC 7515 section 4.1: these would let the token
# name its own key or demand processing we do not do; keys come from kid only.
_KEY_BEARING_HEADERS = ("jku", "jwk", "x5u", "x5c")
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
_ED25519_SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class ParsedJws:
    """A compact JWS split and decoded, with its signature not yet checked."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


def _json_bytes(value: Mapping[str, Any]) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise InvalidInput(f"JSON object has the member {name!r} twice")
        out[name] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise InvalidInput(f"JSON holds the non-standard constant {name}")


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse strict UTF-8 JSON that must be an object with unique member names.

    Raises:
        InvalidInput: not UTF-8, not JSON, not an object, a duplicate member,
            or NaN/Infinity.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8: {exc}") from exc
    try:
        value = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def sign_raw(header: Mapping[str, Any], payload: bytes, key: SigningKey) -> str:
    """Sign arbitrary payload bytes under a protected header (low level).

    :func:`sign_compact` is the function to use for tokens; this one exists so
    the RFC 8037 test vector, whose header has no ``kid`` or ``typ``, can be
    reproduced byte for byte.

    Raises:
        InvalidInput: the header does not name ``alg`` ``EdDSA``.
    """
    if header.get("alg") != ALGORITHM:
        raise InvalidInput(f"JWS header must name alg {ALGORITHM!r}, got {header.get('alg')!r}")
    signing_input = f"{b64url_encode(_json_bytes(header))}.{b64url_encode(payload)}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def sign_compact(claims: Mapping[str, Any], key: SigningKey, typ: str) -> str:
    """Sign claims as a compact JWS with header ``{"alg":"EdDSA","kid":…,"typ":…}``.

    Raises:
        InvalidInput: the claims cannot be serialised as JSON.
    """
    try:
        payload = _json_bytes(claims)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"claims cannot be serialised as JSON: {exc}") from exc
    return sign_raw({"alg": ALGORITHM, "kid": key.kid, "typ": typ}, payload, key)


def parse_compact(token: str, *, max_size: int = DEFAULT_MAX_SIZE) -> ParsedJws:
    """Split and decode a compact JWS and apply the header rules; no signature check.

    Raises:
        MessageTooLarge: the token is longer than ``max_size`` characters.
        InvalidInput: not three strict base64url parts, or the header is not a
            JSON object.
        BadSignature: the header names an algorithm other than ``EdDSA``,
            embeds or points at a key, or uses a header this verifier refuses.
    """
    # Size first: nothing else should spend work on an oversized input.
    if len(token) > max_size:
        raise MessageTooLarge(f"token is {len(token)} characters; the limit is {max_size}")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidInput(f"compact JWS must have 3 dot-separated parts, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header_bytes = b64url_decode(header_b64)
        payload = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except InvalidInput as exc:
        raise InvalidInput(f"compact JWS part is not strict base64url: {exc}") from exc
    header = parse_json_object(header_bytes, "JWS header")
    if "alg" not in header:
        # What a flipped bit in the header's base64url usually leaves behind:
        # valid JSON whose member names no longer read "alg".
        members = ", ".join(repr(name) for name in sorted(header)) or "none"
        raise BadSignature(
            f"JWS header does not decode to a JOSE header: it has no 'alg' member "
            f"(members: {members}); the token was damaged or altered, ask for it again"
        )
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise BadSignature(f"JWS alg {alg!r} is refused; only {ALGORITHM!r} is accepted")
    for name in _KEY_BEARING_HEADERS:
        if name in header:
            raise BadSignature(
                f"JWS header {name!r} is refused: keys are never taken from a token, "
                "only resolved by kid among trusted keys"
            )
    if "crit" in header:
        raise BadSignature("JWS header 'crit' is refused: no critical extensions are supported")
    extra = sorted(set(header) - _ALLOWED_HEADERS)
    if extra:
        raise BadSignature(
            f"JWS header has parameters {extra} that are not accepted "
            f"(allowed: {', '.join(sorted(_ALLOWED_HEADERS))})"
        )
    if len(signature) != _ED25519_SIGNATURE_SIZE:
        raise BadSignature(
            f"EdDSA signature must be {_ED25519_SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return ParsedJws(
        header=header,
        payload=payload,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )


def verify_raw(token: str, key: VerifyKey, *, max_size: int = DEFAULT_MAX_SIZE) -> ParsedJws:
    """Check a compact JWS under one given key, without ``kid`` or ``typ`` rules (low level).

    Used for the RFC 8037 vector; tokens go through :func:`verify_compact`.

    Raises:
        MessageTooLarge: see :func:`parse_compact`.
        InvalidInput: see :func:`parse_compact`.
        BadSignature: a refused header, or the signature does not verify.
    """
    parsed = parse_compact(token, max_size=max_size)
    key.verify(parsed.signature, parsed.signing_input)
    return parsed


def peek_header(token: str, *, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, Any]:
    """The decoded protected header, signature NOT checked: for diagnostics only.

    Raises:
        MessageTooLarge: see :func:`parse_compact`.
        InvalidInput: see :func:`parse_compact`.
        BadSignature: see :func:`parse_compact`.
    """
    return parse_compact(token, max_size=max_size).header


def verify_compact(
    token: str, keys: KeySet, expected_typ: str, *, max_size: int = DEFAULT_MAX_SIZE
) -> dict[str, Any]:
    """Verify a compact JWS and return its claims (time claims NOT checked).

    Raises:
        MessageTooLarge: the token is longer than ``max_size``.
        InvalidInput: malformed token, header or payload (including duplicate
            JSON members), or a missing ``kid``.
        BadSignature: a refused ``alg`` or header, or the signature does not verify.
        WrongPayloadType: ``typ`` is not ``expected_typ``.
        UnknownKey: ``kid`` is not in ``keys``.
    """
    parsed = parse_compact(token, max_size=max_size)
    kid = parsed.header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidInput("JWS header lacks a 'kid' naming the signing key")
    typ = parsed.header.get("typ")
    if typ != expected_typ:
        raise WrongPayloadType(f"token typ is {typ!r}, expected {expected_typ!r}")
    keys.resolve(kid).verify(parsed.signature, parsed.signing_input)
    return parse_json_object(parsed.payload, "JWS payload")


def numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    """The NumericDate claim ``name`` as whole seconds, or None when absent.

    Raises:
        InvalidInput: the claim is present but not an integer (bools, floats
            and strings are refused).
    """
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int subclass; true must not pass as 1970-01-01T00:00:01Z.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"claim {name!r} must be an integer NumericDate, got {value!r}")
    return value


def require_numeric_date(claims: Mapping[str, Any], name: str) -> int:
    """The NumericDate claim ``name``, which must be present.

    Raises:
        InvalidInput: the claim is missing or not an integer.
    """
    value = numeric_date(claims, name)
    if value is None:
        raise InvalidInput(f"token lacks the required claim {name!r}")
    return value


def check_time_claims(
    claims: Mapping[str, Any],
    now: datetime,
    skew: timedelta = DEFAULT_SKEW,
    *,
    label: str = "token",
) -> None:
    """Check ``exp`` (required), ``nbf`` and ``iat`` against ``now`` with a clock skew.

    Raises:
        InvalidInput: ``exp`` is missing, or a time claim is not an integer.
        Expired: ``now`` is at or past ``exp`` plus ``skew``.
        NotYetValid: ``nbf`` or ``iat`` lies more than ``skew`` after ``now``.
    """
    now_s = to_epoch(now)
    leeway = int(skew.total_seconds())
    exp = require_numeric_date(claims, "exp")
    if now_s >= exp + leeway:
        raise Expired(f"{label} expired at {format_time(from_epoch(exp))} (now {format_time(now)})")
    nbf = numeric_date(claims, "nbf")
    if nbf is not None and nbf > now_s + leeway:
        raise NotYetValid(
            f"{label} is not valid before {format_time(from_epoch(nbf))} (now {format_time(now)})"
        )
    iat = numeric_date(claims, "iat")
    if iat is not None and iat > now_s + leeway:
        raise NotYetValid(
            f"{label} claims to be issued at {format_time(from_epoch(iat))}, "
            f"in the future (now {format_time(now)})"
        )


def check_audience(claims: Mapping[str, Any], expected_aud: str, *, label: str = "token") -> None:
    """Check that ``aud`` (a string or a list of strings) names ``expected_aud``.

    Raises:
        WrongAudience: ``aud`` is missing, malformed or names someone else.
    """
    aud = claims.get("aud")
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        audiences = aud
    else:
        raise WrongAudience(f"{label} has no usable 'aud' claim (got {aud!r})")
    if expected_aud not in audiences:
        raise WrongAudience(f"{label} is for {aud!r}, not for {expected_aud!r}")


def check_issuer(
    claims: Mapping[str, Any], accepted: str | Collection[str], *, label: str = "token"
) -> None:
    """Check that ``iss`` is the accepted issuer (or one of them).

    Raises:
        WrongIssuer: ``iss`` is missing, not a string, or not accepted.
    """
    allowed = {accepted} if isinstance(accepted, str) else set(accepted)
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss not in allowed:
        raise WrongIssuer(f"{label} is issued by {iss!r}; accepted: {sorted(allowed)}")
