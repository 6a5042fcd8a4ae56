"""Where a command finds its federation, and what it reads from it.

Every command that talks to a federation finds its file the same way:
``--federation FILE`` (or a directory holding ``federation.json``), else
``$CREDENCE_FEDERATION``, else ``./federation.json``. The file says where the
registry is, which credentials each role uses and where the pseudonymisation
key is. :meth:`Federation.manifest` gets the federation manifest from the
registry's HTTP side over TLS, verified against the pinned root keys
(:func:`credence.client.pinned.fetch_manifest`).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from credence.client.pinned import fetch_manifest
from credence.client.requester import MemberCredentials, Requester
from credence.dev.federation import FEDERATION_FILE
from credence.errors import InvalidInput
from credence.keys import KeySet
from credence.manifest import TrustedManifest
from credence.subjects import PseudonymisationKey

#: The environment variable naming the federation file.
ENVIRONMENT = "CREDENCE_FEDERATION"


def add_federation_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--federation FILE`` to ``parser``."""
    parser.add_argument(
        "--federation",
        type=Path,
        default=None,
        help=f"federation.json (default ${ENVIRONMENT}, then ./{FEDERATION_FILE})",
    )


def federation_path(given: Path | None) -> Path:
    """The federation file a command uses: ``given``, else the environment, else ``./``."""
    path = given or Path(os.environ.get(ENVIRONMENT) or FEDERATION_FILE)
    return path / FEDERATION_FILE if path.is_dir() else path


def load_federation(given: Path | None) -> dict[str, Any]:
    """Read the federation file :func:`federation_path` finds.

    Raises:
        InvalidInput: missing or not a federation file.
    """
    path = federation_path(given)
    if not path.is_file():
        raise InvalidInput(
            f"{path} not found: start a federation with `credence dev up --dir DIR` "
            "or pass --federation FILE"
        )
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
    if "registry" not in document or "company" not in document:
        raise InvalidInput(f"{path} is not a federation file (no registry or company)")
    return document


def read_root_keys(path: Path) -> KeySet:
    """The pinned root keys (a JWK Set file).

    Raises:
        InvalidInput: the file cannot be read or is not JSON.
    """
    try:
        return KeySet.from_jwks(json.loads(path.read_text()))
    except OSError as exc:
        raise InvalidInput(f"cannot read the root keys {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the root keys {path} are not JSON: {exc}") from exc


class Federation:
    """What a command needs from the federation file."""

    def __init__(self, given: Path | None) -> None:
        """Find and read the file (see :func:`federation_path`).

        Raises:
            InvalidInput: missing or not a federation file.
        """
        self.path = federation_path(given)
        self.document = load_federation(self.path)
        self.registry: dict[str, Any] = self.document["registry"]

    def member(self, role: str) -> dict[str, Any]:
        """The file's entry for ``role`` (``company``, ``authority``, ...).

        Raises:
            InvalidInput: the file has no such entry.
        """
        entry = self.document.get(role)
        if not isinstance(entry, dict) or "member_id" not in entry:
            raise InvalidInput(f"{self.path} has no {role!r} entry; pick another --as")
        return entry

    def root_keys(self) -> KeySet:
        """The registry's pinned root keys.

        Raises:
            InvalidInput: the key file cannot be read.
        """
        return read_root_keys(Path(self.registry["root_keys"]))

    def ca_cert(self) -> bytes:
        """The federation CA certificate (PEM)."""
        return Path(self.registry["ca_cert"]).read_bytes()

    def manifest(self, now: datetime) -> TrustedManifest:
        """The current manifest from the registry's HTTP side over TLS, verified.

        Raises:
            InvalidInput: the file's ``http_url`` is not https.
            Unavailable: the registry could not be reached over TLS.
            VerificationError: the manifest does not verify.
        """
        return fetch_manifest(
            self.registry["http_url"], ca_pem=self.ca_cert(), root_keys=self.root_keys(), now=now
        )

    def requester(self, role: str) -> Requester:
        """A requester client with ``role``'s credentials.

        Raises:
            InvalidInput: the file has no such role.
        """
        files = self.member(role)
        credentials = MemberCredentials.from_files(
            files["member_id"],
            key=Path(files["key"]),
            cert=Path(files["cert"]),
            ca=Path(self.registry["ca_cert"]),
        )
        return Requester(self.registry["address"], credentials, root_keys=self.root_keys())

    def pseudonymisation(self) -> PseudonymisationKey:
        """The key that maps identifiers to subject references.

        Raises:
            InvalidInput: the file names no key, or it cannot be read.
        """
        path = self.document.get("pseudonymisation_key")
        if not path:
            raise InvalidInput(f"{self.path} names no pseudonymisation_key")
        try:
            return PseudonymisationKey.from_bytes(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the pseudonymisation key {path}: {exc.strerror}"
            ) from exc
