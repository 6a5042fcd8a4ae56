"""The node's current federation manifest, replaced when the registry publishes a newer one.

A node verifies every new manifest against the one it holds (root keys,
rollback, expiry), saves it atomically so a restart starts from it, and only
then makes it current. Readers call :meth:`ManifestHolder.current` once per
call: a call never sees half of an update.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path

from agency_node.config import MANIFEST_FILE, ROOT_KEYS_FILE, NodeConfig
from credence.envelope import Envelope
from credence.errors import FailedPrecondition
from credence.keys import KeySet, write_private_file
from credence.manifest import TrustedManifest, verify_manifest

_log = logging.getLogger(__name__)


class ManifestHolder:
    """Holds the newest verified manifest and its file."""

    def __init__(self, manifest: TrustedManifest, path: Path) -> None:
        self._current = manifest
        self._path = path
        self._lock = threading.Lock()

    def current(self) -> TrustedManifest:
        """The manifest in force now (a read of what the last :meth:`offer` adopted)."""
        return self._current

    def offer(self, envelope: Envelope, now: datetime) -> bool:
        """Adopt ``envelope`` if it is a valid successor; returns whether it changed.

        Raises:
            VerificationError: it does not verify against the held manifest
                (unsigned, wrong root, rolled back, expired).
        """
        with self._lock:
            held = self._current
            manifest = verify_manifest(
                envelope,
                trusted_root=held.root_keys,
                threshold=held.root_threshold,
                now=now,
                held=held,
            )
            if manifest is held:
                return False
            # Not secret, but written the same atomic way as keys: never half a file.
            write_private_file(self._path, manifest.envelope_bytes)
            self._current = manifest
            _log.info("adopted federation manifest version %d", manifest.version)
            return True


def load_manifest(config: NodeConfig, now: datetime) -> TrustedManifest:
    """The node's manifest file, verified against its pinned root keys.

    Raises:
        FailedPrecondition: the root keys or the manifest are missing.
        VerificationError: the manifest does not verify.
    """
    paths = [config.path(ROOT_KEYS_FILE), config.path(MANIFEST_FILE)]
    for path in paths:
        if not path.is_file():
            raise FailedPrecondition(
                f"{path} is missing: enrol the node (`credence node enrol`) or install "
                "the enrolment files (`credence node install`)"
            )
    root = KeySet.from_jwks(json.loads(paths[0].read_text()))
    envelope = Envelope.from_bytes(paths[1].read_bytes())
    return verify_manifest(envelope, trusted_root=root, threshold=config.root_threshold, now=now)
