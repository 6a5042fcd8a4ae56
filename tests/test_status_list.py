"""The registry's signed revocation list: bits, compression, signature, life, rollback."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from credence.encoding import b64url_decode, b64url_encode
from credence.errors import (
    BadSignature,
    Expired,
    InvalidInput,
    MessageTooLarge,
    PermissionDenied,
    Revoked,
    RolledBack,
    Unavailable,
    UnknownKey,
    WrongIssuer,
    WrongPayloadType,
)
from credence.grants import status_list
from credence.jws import sign_compact
from credence.keys import KeySet, SigningKey

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REGISTRY = "registry"
KEY = SigningKey.generate()
KEYS = KeySet([KEY.public])


def _sign(
    revoked: tuple[int, ...] = (3, 9),
    *,
    size: int = 20,
    version: int = 5,
    now: datetime = NOW,
    key: SigningKey = KEY,
    registry_id: str = REGISTRY,
) -> str:
    return status_list.sign_status_list(
        revoked=revoked, size=size, version=version, registry_id=registry_id, key=key,
        now=now, lifetime=timedelta(minutes=5), refresh=timedelta(seconds=10),
    )  # fmt: skip


def _verify(token: str, **kwargs: object) -> status_list.StatusList:
    options: dict[str, object] = {"registry_keys": KEYS, "registry_id": REGISTRY, "now": NOW}
    options.update(kwargs)
    return status_list.verify_status_list(token, **options)  # type: ignore[arg-type]


def test_bits_follow_the_draft_layout() -> None:
    # draft-ietf-oauth-status-list, 1-bit example: indexes 0, 3, 4, 5, 7, 8, 9, 13, 15 set
    # give the bytes b9 a3 and the lst "eNrbuRgAAhcBXQ".
    bits = status_list.pack_bits([0, 3, 4, 5, 7, 8, 9, 13, 15], 16)
    assert bits == bytes([0xB9, 0xA3])
    assert status_list.decompress_bits("eNrbuRgAAhcBXQ") == bits


def test_round_trip_marks_exactly_the_revoked_grants() -> None:
    held = _verify(_sign())
    assert (held.issuer, held.version, held.size) == (REGISTRY, 5, 24)
    assert [index for index in range(30) if held.is_revoked(index)] == [3, 9]
    assert held.expires_at == NOW + timedelta(minutes=5)
    claims = json.loads(b64url_decode(_sign().split(".")[1]))
    assert claims["status_list"]["bits"] == 1
    assert claims["sub"] == "credence://registry/status-list"


def test_an_index_beyond_the_list_is_a_grant_issued_after_it() -> None:
    held = _verify(_sign((3,), size=8))
    assert not held.is_revoked(1000)
    with pytest.raises(InvalidInput):
        held.is_revoked(-1)


def test_tampered_list_is_refused() -> None:
    header, payload, signature = _sign().split(".")
    claims = json.loads(b64url_decode(payload))
    claims["status_list"]["lst"] = status_list.compress_bits(bytes(3))  # un-revoke everything
    forged = ".".join([header, b64url_encode(json.dumps(claims).encode()), signature])
    with pytest.raises(BadSignature):
        _verify(forged)


def test_wrong_signer_and_wrong_type_are_refused() -> None:
    with pytest.raises(UnknownKey):
        _verify(_sign(key=SigningKey.generate()))
    claims = json.loads(b64url_decode(_sign().split(".")[1]))
    with pytest.raises(WrongPayloadType):
        _verify(sign_compact(claims, KEY, "consent+jwt"))
    with pytest.raises(WrongIssuer):
        _verify(_sign(registry_id="another-registry"))


def test_expired_list_is_refused() -> None:
    token = _sign()
    with pytest.raises(Expired):
        _verify(token, now=NOW + timedelta(minutes=5, seconds=61))


def test_rolled_back_version_is_refused_and_a_re_signed_same_version_kept() -> None:
    held = _verify(_sign(version=5))
    with pytest.raises(RolledBack):
        _verify(_sign(version=4, now=NOW + timedelta(seconds=30)), held=held)
    later = _verify(_sign(version=5, now=NOW + timedelta(seconds=30)), held=held)
    assert later.issued_at > held.issued_at
    with pytest.raises(RolledBack):
        _verify(_sign(version=5, now=NOW - timedelta(seconds=30)), held=held)


def test_a_list_that_inflates_too_far_is_refused() -> None:
    bomb = b64url_encode(zlib.compress(bytes(status_list.MAX_BITS // 8 + 1)))
    with pytest.raises(MessageTooLarge):
        status_list.decompress_bits(bomb)
    with pytest.raises(InvalidInput):
        status_list.decompress_bits(b64url_encode(b"not zlib"))
    with pytest.raises(InvalidInput):
        status_list.decompress_bits(b64url_encode(zlib.compress(bytes(100))[:-6]))


def test_grant_status_refuses_revoked_stale_missing_and_unindexed() -> None:
    held = _verify(_sign())
    status_list.check_grant_status(held, 4, "g-4", NOW)
    with pytest.raises(Revoked, match="grant g-3 is revoked"):
        status_list.check_grant_status(held, 3, "g-3", NOW)
    with pytest.raises(Unavailable, match=r"revocation list expired at .*refusing consent lookups"):
        status_list.check_grant_status(held, 4, "g-4", held.expires_at)
    with pytest.raises(Unavailable, match="no revocation list"):
        status_list.check_grant_status(None, 4, "g-4", NOW)
    with pytest.raises(PermissionDenied, match="names no status index"):
        status_list.check_grant_status(held, None, "g-x", NOW)
