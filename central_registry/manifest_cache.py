"""The registry's own view of the current manifest, kept in step with the database.

Membership changes (approve, suspend, reinstate) publish a new manifest
version in the database, possibly from another process (the CLI). Every
registry process checks the latest version at most once per ``interval``
seconds and re-verifies the new envelope against its root key, so a suspended
member is refused everywhere within that interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine, func, select

from central_registry import store
from central_registry.models import Manifest
from credence.envelope import Envelope
from credence.errors import FailedPrecondition
from credence.keys import KeySet
from credence.manifest import TrustedManifest, verify_manifest
from credence.storage import session_factory


class ManifestCache:
    """The latest published manifest, verified, refreshed on change."""

    def __init__(
        self,
        engine: Engine,
        root_keys: KeySet,
        clock: Callable[[], datetime],
        interval: float = 0.5,
    ) -> None:
        self._sessions = session_factory(engine)
        self._root = root_keys
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._held: TrustedManifest | None = None
        self._checked = 0.0

    def current(self) -> TrustedManifest:
        """The newest manifest (checking the database at most once per interval).

        Raises:
            FailedPrecondition: no manifest was ever published.
        """
        now = time.monotonic()
        held = self._held
        if held is not None and now - self._checked < self._interval:
            return held
        with self._lock:
            self._checked = now
            with self._sessions() as session:
                latest = session.scalar(select(func.max(Manifest.version)))
                if latest is None:
                    raise FailedPrecondition(
                        "no manifest has been published: run `credence registry init`"
                    )
                if self._held is None or latest != self._held.version:
                    row = store.get_manifest(session, latest)
                    self._held = verify_manifest(
                        Envelope.from_bytes(row.envelope),
                        trusted_root=self._root,
                        threshold=1,
                        now=self._clock(),
                        held=self._held,
                    )
            return self._held

    def refresh(self) -> TrustedManifest:
        """Check the database now (after this process published)."""
        self._checked = 0.0
        return self.current()
