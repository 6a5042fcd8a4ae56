"""The registry's signed revocation list, in the shape of the IETF Token Status List.

draft-ietf-oauth-status-list: one bit per grant (``bits: 1``; 1 = revoked),
the byte array compressed with DEFLATE in the ZLIB format and base64url
encoded as ``lst``, bit ``i`` in byte ``i // 8`` at position ``i % 8`` (least
significant first). The list travels as a compact JWS of type
``statuslist+jwt``, signed by the registry's Ed25519 signing key (the key
that signs grants), with the claims::

    {"iss": "<registry id>", "sub": "credence://<registry id>/status-list",
     "iat": 1764633600, "exp": 1764637200, "ttl": 10, "version": 42,
     "status_list": {"bits": 1, "lst": "eNrbuRgAAhcBXQ"}}

``version`` is Credence's own claim: it only grows, so a node refuses an
older list than the one it holds (a rollback would hide revocations). A grant
whose index lies beyond the list was issued after it was signed; the list
says nothing about it, exactly as it says nothing about revocations made
since, so the expiry bounds both. Each consent names its index in its
``status`` claim (:mod:`credence.grants.consent`).

Every function is pure: the clock arrives as ``now``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from credence.encoding import b64url_decode, b64url_encode, format_time, to_epoch
from credence.errors import (
    InvalidInput,
    MessageTooLarge,
    PermissionDenied,
    Revoked,
    RolledBack,
    Unavailable,
    WrongIssuer,
)
from credence.grants._claims import check_positive_int, claim_str, claim_time
from credence.grants.consent import status_list_uri
from credence.jws import DEFAULT_SKEW, check_time_claims, sign_compact, verify_compact
from credence.keys import KeySet, SigningKey

STATUS_LIST_TYP = "statuslist+jwt"
#: Room for 16M grants (2 MiB of bits); a list that inflates beyond is refused.
MAX_BITS = 1 << 24
#: A list of random revocations over 16M grants compresses to under 2 MiB; base64 adds 1/3.
MAX_TOKEN_SIZE = 3 << 20


@dataclass(frozen=True)
class StatusList:
    """A verified revocation list: who signed it, its version, its life, its bits."""

    issuer: str
    version: int
    issued_at: datetime
    expires_at: datetime
    bits: bytes

    @property
    def size(self) -> int:
        """How many grant indexes the list covers."""
        return len(self.bits) * 8

    def is_revoked(self, index: int) -> bool:
        """Whether grant ``index`` is revoked; False beyond the list (issued after it)."""
        if index < 0:
            raise InvalidInput(f"a status index is never negative, got {index}")
        if index >= self.size:
            return False
        return bool(self.bits[index // 8] >> (index % 8) & 1)


def pack_bits(revoked: Iterable[int], size: int) -> bytes:
    """The uncompressed byte array with a 1 bit at every revoked index.

    Raises:
        InvalidInput: an index is negative or not below ``size``, or ``size``
            exceeds :data:`MAX_BITS`.
    """
    if not 0 <= size <= MAX_BITS:
        raise InvalidInput(f"a status list holds 0 to {MAX_BITS} indexes, not {size}")
    bits = bytearray((size + 7) // 8)
    for index in revoked:
        if not 0 <= index < size:
            raise InvalidInput(f"status index {index} is outside the list of {size}")
        bits[index // 8] |= 1 << (index % 8)
    return bytes(bits)


def compress_bits(bits: bytes) -> str:
    """``lst``: the byte array, ZLIB-compressed and base64url-encoded."""
    return b64url_encode(zlib.compress(bits, 9))


def decompress_bits(lst: str) -> bytes:
    """The byte array of ``lst``, refusing one that inflates past :data:`MAX_BITS`.

    Raises:
        InvalidInput: not base64url or not ZLIB data.
        MessageTooLarge: it inflates beyond :data:`MAX_BITS` bits.
    """
    inflater = zlib.decompressobj()
    try:
        bits = inflater.decompress(b64url_decode(lst), MAX_BITS // 8)
    except zlib.error as exc:
        raise InvalidInput(f"status list 'lst' is not ZLIB data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise MessageTooLarge(f"status list inflates beyond {MAX_BITS} indexes")
    if not inflater.eof:
        raise InvalidInput("status list 'lst' is truncated ZLIB data")
    return bits


def sign_status_list(
    *,
    revoked: Iterable[int],
    size: int,
    version: int,
    registry_id: str,
    key: SigningKey,
    now: datetime,
    lifetime: timedelta,
    refresh: timedelta,
) -> str:
    """Sign the revocation list as a ``statuslist+jwt``.

    Args:
        revoked: indexes of the revoked grants.
        size: how many indexes the list covers (every grant issued so far).
        version: grows whenever the list changes.
        registry_id: the registry's member id (``iss``).
        key: the registry's signing key.
        now: the signing time (``iat``).
        lifetime: how long the list is valid (``exp = now + lifetime``).
        refresh: how often holders should fetch a newer one (``ttl``).

    Raises:
        InvalidInput: a bad index, size, version or lifetime.
    """
    check_positive_int(version, "status list version", 0)
    if lifetime <= timedelta(0):
        raise InvalidInput(f"a status list must live a positive time, not {lifetime}")
    claims = {
        "iss": registry_id,
        "sub": status_list_uri(registry_id),
        "iat": to_epoch(now),
        "exp": to_epoch(now + lifetime),
        "ttl": max(1, int(refresh.total_seconds())),
        "version": version,
        "status_list": {"bits": 1, "lst": compress_bits(pack_bits(revoked, size))},
    }
    return sign_compact(claims, key, STATUS_LIST_TYP)


def verify_status_list(
    token: str,
    *,
    registry_keys: KeySet,
    registry_id: str,
    now: datetime,
    held: StatusList | None = None,
    skew: timedelta = DEFAULT_SKEW,
) -> StatusList:
    """Verify a ``statuslist+jwt`` and check it does not roll back the one held.

    Raises:
        MessageTooLarge: the token or its inflated list is too large.
        InvalidInput: malformed token or claims.
        BadSignature, UnknownKey: not signed by a registry key.
        WrongPayloadType: a token of another type.
        WrongIssuer: issued by, or about, another registry.
        Expired: past its ``exp``.
        RolledBack: older than ``held``.
    """
    claims = verify_compact(token, registry_keys, STATUS_LIST_TYP, max_size=MAX_TOKEN_SIZE)
    issuer = claim_str(claims, "iss", "status list")
    if issuer != registry_id or claims.get("sub") != status_list_uri(registry_id):
        raise WrongIssuer(
            f"status list is issued by {issuer!r} for {claims.get('sub')!r}, "
            f"not by registry {registry_id!r}"
        )
    check_time_claims(claims, now, skew, label="status list")
    version = check_positive_int(claims.get("version"), "status list claim 'version'", 0)
    issued_at = claim_time(claims, "iat")
    if held is not None and (version, issued_at) < (held.version, held.issued_at):
        raise RolledBack(
            f"status list version {version} issued {format_time(issued_at)} is older than the "
            f"held version {held.version} issued {format_time(held.issued_at)}"
        )
    body = claims.get("status_list")
    if not isinstance(body, dict) or body.get("bits") != 1 or not isinstance(body.get("lst"), str):
        raise InvalidInput(
            "status list claim 'status_list' must be {'bits': 1, 'lst': <base64url>}"
        )
    return StatusList(
        issuer=issuer,
        version=version,
        issued_at=issued_at,
        expires_at=claim_time(claims, "exp"),
        bits=decompress_bits(body["lst"]),
    )


def check_grant_status(
    status_list: StatusList | None, index: int | None, grant_id: str, now: datetime
) -> None:
    """Refuse a grant the list marks revoked, or any grant when the list cannot say.

    Raises:
        Unavailable: no list is held, or the held one has expired: the node
            refuses rather than guess.
        PermissionDenied: the consent names no status index.
        Revoked: the grant's bit is set.
    """
    if status_list is None:
        raise Unavailable(
            "no revocation list from the registry yet; refusing consent lookups until it arrives"
        )
    if now >= status_list.expires_at:
        raise Unavailable(
            f"revocation list expired at {format_time(status_list.expires_at)} "
            f"(now {format_time(now)}); refusing consent lookups until it refreshes"
        )
    if index is None:
        raise PermissionDenied(
            f"consent {grant_id} names no status index, so its revocation cannot be checked: "
            "have the registry countersign the subject's request"
        )
    if status_list.is_revoked(index):
        raise Revoked(
            f"grant {grant_id} is revoked (revocation list version {status_list.version}): "
            "ask the subject for a new grant"
        )
