"""Admin tokens: the operator's credential for the console.

``credence registry admin-token`` makes a random token, writes it to a file
only its owner can read (0600) and stores only its SHA-256 with a name and an
expiry. Logging in to the console means pasting the token; the registry hashes
it and looks the hash up. A token past its expiry, or one never issued, is
refused; nothing the registry holds can be turned back into a token.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from central_registry.models import AdminToken
from credence.encoding import format_time
from credence.errors import AlreadyExists, InvalidInput, Unauthenticated

#: Every token starts with this, so a leaked one is easy to recognise and search for.
TOKEN_PREFIX = "credence-admin-"  # noqa: S105 - a prefix, not a secret
DEFAULT_VALIDITY = timedelta(days=90)
#: Longer than any real token: a pasted novel is refused before it is hashed.
MAX_TOKEN_LENGTH = 128
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Admin:
    """An operator the console recognised: the token's name and when it expires."""

    name: str
    token_hash: str
    expires_at: datetime


def new_token() -> str:
    """A fresh token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The hex SHA-256 the registry stores instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """An admin token's name, checked.

    Raises:
        InvalidInput: not 1..64 lower-case letters, digits, '.', '_' or '-'.
    """
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"admin name {name[:80]!r}: use 1..64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def add_token(
    session: Session, token: str, *, name: str, now: datetime, validity: timedelta
) -> AdminToken:
    """Store the hash of ``token`` under ``name``, valid from ``now`` for ``validity``.

    Raises:
        InvalidInput: a bad name or a validity that is not positive.
        AlreadyExists: a token with this name is still valid.
    """
    check_name(name)
    if validity <= timedelta(0):
        raise InvalidInput("an admin token's validity must be positive, e.g. --days 90")
    live = select(AdminToken).where(AdminToken.name == name, AdminToken.expires_at > now)
    if session.scalars(live).first() is not None:
        raise AlreadyExists(
            f"admin {name!r} already holds a valid token; choose another name "
            "or revoke it with --revoke"
        )
    row = AdminToken(
        token_hash=token_hash(token), name=name, created_at=now, expires_at=now + validity
    )
    session.add(row)
    return row


def revoke_tokens(session: Session, name: str, now: datetime) -> int:
    """Expire every token of ``name`` at ``now``; how many there were.

    Raises:
        InvalidInput: a bad name.
    """
    check_name(name)
    rows = select(AdminToken).where(AdminToken.name == name, AdminToken.expires_at > now)
    count = 0
    for row in session.scalars(rows):
        row.expires_at = now
        count += 1
    return count


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to a new file only its owner can read or write.

    Raises:
        InvalidInput: the file already exists (it is never overwritten) or cannot be made.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InvalidInput(f"{path} exists; choose another --out or delete it first") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(token + "\n")


def admin_for_hash(session: Session, hashed: str, now: datetime) -> Admin:
    """The admin whose stored token hash is ``hashed``, if still valid at ``now``.

    Raises:
        Unauthenticated: no such token, or it expired.
    """
    row = session.get(AdminToken, hashed)
    if row is None:
        raise Unauthenticated("this admin token is not known here: paste the whole token file")
    if row.expires_at <= now:
        raise Unauthenticated(
            f"admin token {row.name!r} expired at {format_time(row.expires_at)}: make a new "
            "one with `credence registry admin-token`"
        )
    return Admin(row.name, row.token_hash, row.expires_at)


def admin_for_token(session: Session, token: str, now: datetime) -> Admin:
    """The admin holding ``token`` (as pasted: surrounding whitespace ignored).

    Raises:
        Unauthenticated: malformed, unknown or expired.
    """
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated(
            f"an admin token starts with {TOKEN_PREFIX!r}: paste the content of the file "
            "`credence registry admin-token` wrote"
        )
    return admin_for_hash(session, token_hash(token), now)
