"""Byte and time encodings shared by the protocol modules.

Base64url is the unpadded alphabet of RFC 7515 section 2; decoding is strict
(no padding, no stray characters) so that two different strings never decode to
the same bytes. Times are timezone-aware UTC ``datetime`` values; JOSE claims
use whole seconds since the epoch.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from credence.errors import InvalidInput

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64url_encode(data: bytes) -> str:
    """Encode bytes as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded base64url strictly.

    Raises:
        InvalidInput: the text has padding, a character outside the alphabet,
            an impossible length, or non-zero trailing bits.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise InvalidInput("base64url text must be ASCII") from exc
    if not _B64URL.fullmatch(text):
        raise InvalidInput("base64url text has a character outside A-Z a-z 0-9 - _ (or padding)")
    if len(text) % 4 == 1:
        raise InvalidInput(f"base64url text has an impossible length {len(text)}")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"base64url text does not decode: {exc}") from exc
    if b64url_encode(data) != text:
        raise InvalidInput("base64url text is not in canonical form (non-zero trailing bits)")
    return data


def require_utc(when: datetime, name: str = "time") -> datetime:
    """Return ``when`` if it is timezone-aware, converted to UTC.

    Raises:
        ValueError: ``when`` is naive; a naive time is a programming error.
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {when!r})")
    return when.astimezone(UTC)


def format_time(when: datetime) -> str:
    """Format a time the way error messages show it: ``2026-11-28T10:00:00Z``."""
    return require_utc(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_epoch(when: datetime) -> int:
    """Whole seconds since the epoch (a JOSE NumericDate), rounded down."""
    return int(require_utc(when).timestamp())


def from_epoch(seconds: int | float) -> datetime:
    """The UTC time of a JOSE NumericDate."""
    return datetime.fromtimestamp(seconds, tz=UTC)
