"""Claim readers and checks shared by the consent and mandate grant modules."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from credence.encoding import from_epoch, require_utc
from credence.errors import InvalidInput, MessageTooLarge
from credence.jws import require_numeric_date, sign_compact
from credence.keys import SigningKey

KINDS = frozenset({"blacklist", "credit"})
# A subject reference is an HMAC-SHA256 output written as lowercase hex.
_SUBJECT_REF = re.compile(r"^[0-9a-f]{64}$")
_MAX_TEXT = 256


def short_ref(subject_ref_hex: str) -> str:
    """The last 8 hex characters of a subject reference, for messages."""
    return f"…{subject_ref_hex[-8:]}"


def new_jti() -> str:
    """A fresh random token id (128 bits)."""
    return secrets.token_urlsafe(16)


def check_subject_ref(value: object, what: str = "subject reference") -> str:
    """Return ``value`` if it is a 64-character lowercase hex subject reference.

    Raises:
        InvalidInput: it is not.
    """
    if not isinstance(value, str) or not _SUBJECT_REF.match(value):
        raise InvalidInput(f"{what} must be 64 lowercase hex characters, got {value!r}")
    return value


def check_text(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string of at most 256 characters.

    Raises:
        InvalidInput: it is not.
    """
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise InvalidInput(f"{what} must be a non-empty string of at most {_MAX_TEXT} characters")
    return value


def check_scope(value: object, what: str = "scope") -> tuple[str, ...]:
    """Return a scope as a sorted tuple of distinct verdict kinds.

    Raises:
        InvalidInput: not a non-empty list of known, distinct kinds.
    """
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"{what} must be a list of verdict kinds, got {value!r}")
    kinds = list(value)
    if not kinds:
        raise InvalidInput(f"{what} must name at least one verdict kind")
    for kind in kinds:
        if kind not in KINDS:
            raise InvalidInput(f"{what} names {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    if len(set(kinds)) != len(kinds):
        raise InvalidInput(f"{what} names a verdict kind twice: {kinds}")
    return tuple(sorted(kinds))


def check_positive_int(value: object, what: str, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``.

    Raises:
        InvalidInput: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_window(not_before: datetime, expires_at: datetime, what: str) -> None:
    """Check that both times are aware and the window is not empty.

    Raises:
        InvalidInput: the window is empty or inverted.
        ValueError: a time is naive (a programming error).
    """
    if require_utc(expires_at, "expires_at") <= require_utc(not_before, "not_before"):
        raise InvalidInput(f"{what} must expire after it becomes valid")


class _Terms(Protocol):
    """The fields a consent's and a mandate's terms share."""

    @property
    def subject_ref(self) -> str: ...
    @property
    def requester(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def scope(self) -> tuple[str, ...]: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...


def check_terms(terms: _Terms, what: str) -> None:
    """The checks every grant's terms share; stores the scope in its sorted form.

    For a frozen dataclass's ``__post_init__``: the subject reference, the
    requester and purpose, the scope (sorted and deduplicated in place) and
    the validity window.

    Raises:
        InvalidInput: a shared field is malformed or the window is empty.
        ValueError: a time is naive (a programming error).
    """
    check_subject_ref(terms.subject_ref)
    check_text(terms.requester, "requester")
    check_text(terms.purpose, "purpose")
    object.__setattr__(terms, "scope", check_scope(terms.scope))
    check_window(terms.not_before, terms.expires_at, what)


def whole_seconds(value: timedelta, what: str) -> int:
    """A non-negative duration as whole seconds.

    Raises:
        InvalidInput: the duration is negative or has a fractional second.
    """
    seconds = value.total_seconds()
    if seconds < 0 or seconds != int(seconds):
        raise InvalidInput(f"{what} must be a non-negative whole number of seconds, got {value}")
    return int(seconds)


def claim_str(claims: Mapping[str, Any], name: str, label: str) -> str:
    """A required string claim.

    Raises:
        InvalidInput: missing or not a non-empty string.
    """
    return check_text(claims.get(name), f"{label} claim {name!r}")


def claim_time(claims: Mapping[str, Any], name: str) -> datetime:
    """A required NumericDate claim as a UTC datetime.

    Raises:
        InvalidInput: missing or not an integer.
    """
    return from_epoch(require_numeric_date(claims, name))


def sign_limited(claims: Mapping[str, Any], key: SigningKey, typ: str, max_size: int) -> str:
    """Sign claims and refuse to hand out a token its verifier would refuse as too large.

    Raises:
        MessageTooLarge: the token exceeds ``max_size``.
    """
    token = sign_compact(claims, key, typ)
    if len(token) > max_size:
        raise MessageTooLarge(f"{typ} token would be {len(token)} characters; limit {max_size}")
    return token
