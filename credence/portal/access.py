"""Who may drive the portal: the holder of its one-time login link, and only them.

The portal listens on loopback, where every local user and every web page a
browser opens can reach it. So: the link printed at start carries a random
token that works once and becomes a session cookie (HttpOnly, SameSite=Strict,
so another site's page cannot send it); every form carries a CSRF token bound
to that session; and a request naming another host (a DNS-rebinding page) is
refused before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from credence.errors import PermissionDenied, Unauthenticated

__all__ = ["COOKIE_NAME", "PortalAccess"]

COOKIE_NAME = "credence_portal"
#: Sessions one login link may open: the link works once.
_TOKEN_BYTES = 32


class PortalAccess:
    """The login link's token, the sessions it opened, and their CSRF tokens.

    Args:
        hosts: the ``Host`` values a request may name (``127.0.0.1:PORT``).
    """

    def __init__(self, hosts: frozenset[str]) -> None:
        self.hosts = hosts
        self.login_token = secrets.token_urlsafe(_TOKEN_BYTES)
        self._login_used = False
        self._sessions: set[str] = set()
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def check_host(self, host: str | None) -> None:
        """Refuse a request for any host but the portal's own address.

        Raises:
            PermissionDenied: the ``Host`` header names another host.
        """
        if host is None or host.lower() not in self.hosts:
            raise PermissionDenied("error.host")

    def log_in(self, token: str) -> str:
        """Exchange the login link's token, once, for a new session id.

        Raises:
            Unauthenticated: the token is wrong, or was already used.
        """
        with self._lock:
            if not hmac.compare_digest(token.encode(), self.login_token.encode()):
                raise Unauthenticated("error.login")
            if self._login_used:
                raise Unauthenticated("error.login_used")
            self._login_used = True
            session = secrets.token_urlsafe(_TOKEN_BYTES)
            self._sessions.add(session)
            return session

    def check_session(self, session: str | None) -> str:
        """The session id of a request, checked.

        Raises:
            Unauthenticated: no session cookie, or not one this portal opened.
        """
        with self._lock:
            known = session is not None and any(
                hmac.compare_digest(session.encode(), opened.encode()) for opened in self._sessions
            )
        if not known or session is None:
            raise Unauthenticated("error.login")
        return session

    def csrf_token(self, session: str) -> str:
        """The CSRF token every form of ``session`` carries."""
        return hmac.new(self._key, b"csrf\x00" + session.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: str, sent: str | None) -> None:
        """Refuse a form whose CSRF token is not this session's.

        Raises:
            PermissionDenied: the token is missing or wrong.
        """
        if sent is None or not hmac.compare_digest(
            sent.encode(), self.csrf_token(session).encode()
        ):
            raise PermissionDenied("error.csrf")
