"""The registry's signed revocation list, rebuilt only when a grant is issued or revoked.

Every registry process serves the list beside the manifest (gRPC
``GetStatusList`` on the members' port, ``GET /status-list`` on the HTTP
side). A request costs one cheap aggregate query at most once per
``check_interval``; the list is rebuilt and re-signed only when that state
changed (a grant revoked or issued) or half its lifetime has passed. The
format is :mod:`credence.grants.status_list`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from central_registry.store import grant_rows
from credence.clock import Clock
from credence.grants.status_list import sign_status_list
from credence.keys import SigningKey
from credence.storage import reader, session_factory

#: How long a signed list is valid; nodes refuse consent lookups past it.
DEFAULT_LIFETIME = timedelta(minutes=5)
#: The ``ttl`` a list advertises: how often nodes fetch (their manifest refresh).
DEFAULT_REFRESH = timedelta(seconds=10)


@dataclass(frozen=True)
class _Signed:
    state: tuple[int, int]
    token: str
    signed_at: datetime


class StatusListPublisher:
    """Signs the current revocation list and keeps it while nothing changed."""

    def __init__(
        self,
        engine: Engine,
        *,
        key: SigningKey,
        registry_id: str,
        clock: Clock,
        lifetime: timedelta = DEFAULT_LIFETIME,
        refresh: timedelta = DEFAULT_REFRESH,
        check_interval: timedelta = timedelta(seconds=1),
    ) -> None:
        self._sessions = session_factory(engine)
        self._key = key
        self._registry_id = registry_id
        self._clock = clock
        self._lifetime = lifetime
        self._refresh = refresh
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._signed: _Signed | None = None
        self._checked_at: datetime | None = None
        #: How many times the list was built and signed (for tests and metrics).
        self.builds = 0

    def current(self) -> str:
        """The signed ``statuslist+jwt`` in force now (blocking: call off the event loop)."""
        with self._lock:
            now = self._clock()
            signed = self._signed
            fresh = signed is not None and now - signed.signed_at < self._lifetime / 2
            if fresh and self._checked_at and now - self._checked_at < self._check_interval:
                assert signed is not None
                return signed.token
            with reader(self._sessions()) as session:
                state = grant_rows.status_list_state(session)
                if fresh and signed is not None and signed.state == state:
                    self._checked_at = now
                    return signed.token
                revoked = grant_rows.revoked_status_indexes(session)
            revoked_count, size = state
            token = sign_status_list(
                revoked=revoked,
                size=size,
                # Revocations and grants only ever grow: their sum grows with every change.
                version=revoked_count + size,
                registry_id=self._registry_id,
                key=self._key,
                now=now,
                lifetime=self._lifetime,
                refresh=self._refresh,
            )
            self._signed = _Signed(state, token, now)
            self._checked_at = now
            self.builds += 1
            return token
