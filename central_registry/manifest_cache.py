"""The registry's own view of the current manifest, kept in step with the database.

Membership changes (approve, suspend, reinstate) publish a new manifest
version in the database, possibly from another process (the CLI). Every
registry process checks the latest version at most once per ``interval``
seconds and re-verifies the new envelope against its root key, so a suspended
member is refused everywhere within that interval.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, func, select

from central_registry.models import Manifest
from central_registry.store import manifest_rows
from credence.clock import Clock
from credence.envelope import Envelope
from credence.errors import FailedPrecondition
from credence.keys import KeySet
from credence.manifest import TrustedManifest, verify_manifest
from credence.storage import session_factory

_log = logging.getLogger(__name__)


class ManifestCache:
    """The latest published manifest, verified; a background thread keeps it current.

    :meth:`current` never touches the database, so the event loop never waits
    on it; the thread checks for a newer version every ``interval`` seconds.
    """

    def __init__(
        self,
        engine: Engine,
        root_keys: KeySet,
        clock: Clock,
        interval: float = 0.5,
    ) -> None:
        self._sessions = session_factory(engine)
        self._root = root_keys
        self._clock = clock
        self._interval = interval
        self._lock = threading.Lock()
        self._held: TrustedManifest | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="manifest-cache", daemon=True)

    def start(self) -> TrustedManifest:
        """Load the newest manifest now and keep watching for newer ones.

        Raises:
            FailedPrecondition: no manifest was ever published.
        """
        manifest = self.refresh()
        self._thread.start()
        return manifest

    def close(self) -> None:
        """Stop watching."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # the held manifest stays in force; say why
                _log.exception("could not refresh the manifest")

    def current(self) -> TrustedManifest:
        """The newest manifest this process has seen (no database access).

        Raises:
            FailedPrecondition: :meth:`start` was not called.
        """
        held = self._held
        if held is None:
            raise FailedPrecondition("the manifest cache was not started")
        return held

    def refresh(self) -> TrustedManifest:
        """Check the database now and adopt a newer manifest (blocking).

        Raises:
            FailedPrecondition: no manifest was ever published.
        """
        with self._lock, self._sessions() as session:
            latest = session.scalar(select(func.max(Manifest.version)))
            if latest is None:
                raise FailedPrecondition(
                    "no manifest has been published: run `credence registry init`"
                )
            if self._held is None or latest != self._held.version:
                row = manifest_rows.get_manifest(session, latest)
                self._held = verify_manifest(
                    Envelope.from_bytes(row.envelope),
                    trusted_root=self._root,
                    threshold=1,
                    now=self._clock(),
                    held=self._held,
                )
            return self._held
