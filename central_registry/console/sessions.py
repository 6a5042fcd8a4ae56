"""Console sessions: a signed cookie naming the admin token, and a CSRF token per session.

The cookie holds the admin token's hash (never the token), when the session
ends and a random nonce, signed with HMAC-SHA256 under a key the console
process draws at start (so every session ends with the process). Each request
re-reads the token's row, so a token revoked or expired ends its sessions at
once. Every form carries the session's CSRF token (an HMAC of its nonce); a
POST without the right one changes nothing. Before login a session with an
empty token hash carries the login form's CSRF token. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from credence.errors import Unauthenticated

#: ``__Host-``: the browser keeps it only if Secure, for this host, for path /.
COOKIE_NAME = "__Host-credence-console"
LIFETIME = timedelta(hours=8)
#: A login form may be filled in for this long.
LOGIN_LIFETIME = timedelta(minutes=30)
_MAX_COOKIE = 512


@dataclass(frozen=True)
class ConsoleSession:
    """What a valid cookie says: whose token (hex hash; empty before login), until when."""

    token_hash: str
    expires_at: datetime
    nonce: str

    @property
    def logged_in(self) -> bool:
        """Whether this session belongs to an admin (not just a login form)."""
        return bool(self.token_hash)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, label: bytes, body: bytes) -> bytes:
    return hmac.new(key, label + b"\x00" + body, hashlib.sha256).digest()


def new_session(token_hash: str, now: datetime, lifetime: timedelta) -> ConsoleSession:
    """A session for ``token_hash`` ('' for a login form) ending ``lifetime`` after ``now``."""
    return ConsoleSession(token_hash, now + lifetime, secrets.token_urlsafe(16))


def seal(key: bytes, session: ConsoleSession) -> str:
    """The cookie value of ``session``, signed under ``key``."""
    body = json.dumps(
        {"t": session.token_hash, "e": int(session.expires_at.timestamp()), "n": session.nonce},
        separators=(",", ":"),
    ).encode()
    return f"{_b64(body)}.{_b64(_mac(key, b'session', body))}"


def open_session(key: bytes, cookie: str | None, now: datetime) -> ConsoleSession:
    """The session a cookie holds, if signed under ``key`` and not yet ended at ``now``.

    Raises:
        Unauthenticated: no cookie, a cookie not signed here (forged, or from
            before a restart), malformed, or ended.
    """
    if not cookie:
        raise Unauthenticated("not logged in: paste your admin token on the login page")
    session = _unseal(key, cookie)
    if session is None:
        raise Unauthenticated(
            "this console session is not valid here (the console restarted, or the cookie "
            "was altered): log in again"
        )
    if session.expires_at <= now:
        raise Unauthenticated("your console session ended: log in again")
    return session


def _unseal(key: bytes, cookie: str) -> ConsoleSession | None:
    """The session in a cookie signed under ``key``; None if forged or malformed."""
    body_text, _, mac_text = cookie.partition(".")
    if len(cookie) > _MAX_COOKIE:
        return None
    try:
        body, mac = _unb64(body_text), _unb64(mac_text)
        if not hmac.compare_digest(mac, _mac(key, b"session", body)):
            return None
        fields = json.loads(body)
        return ConsoleSession(
            str(fields["t"]), datetime.fromtimestamp(int(fields["e"]), UTC), str(fields["n"])
        )
    except (ValueError, KeyError, TypeError):
        return None


def csrf_token(key: bytes, session: ConsoleSession) -> str:
    """The token every form of ``session`` carries."""
    return _b64(_mac(key, b"csrf", session.nonce.encode()))


def check_csrf(key: bytes, session: ConsoleSession, submitted: str | None) -> None:
    """Check a form's CSRF token against its session.

    Raises:
        Unauthenticated: missing or not this session's (a form from elsewhere).
    """
    if not submitted or not hmac.compare_digest(
        submitted.encode(), csrf_token(key, session).encode()
    ):
        raise Unauthenticated(
            "this form did not come from your console session: reload the page and try again"
        )
