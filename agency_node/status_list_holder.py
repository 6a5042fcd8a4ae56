"""The node's copy of the registry's revocation list, and the check it makes per consent.

The node fetches the signed list (:mod:`credence.grants.status_list`) with the
manifest, every refresh interval, and keeps the newest one that verifies
under the registry keys of the manifest it holds. A consent whose bit is set
is refused; with no list yet, or a list past its expiry, every consent lookup
is refused with the reason rather than answered on a guess. Mandates carry no
index in the registry's list (the authority signs them), so they are left to
the registry's own revocation check.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Protocol

from agency_node.manifest_holder import ManifestHolder
from credence.errors import RolledBack
from credence.grants import tokens
from credence.grants.status_list import StatusList, check_grant_status, verify_status_list
from credence.v1 import registry_pb2

_log = logging.getLogger(__name__)

#: Seconds a fetch may take.
FETCH_TIMEOUT = 5.0


class StatusListSource(Protocol):
    """What the holder calls to fetch a list: the registry's gRPC stub."""

    def GetStatusList(  # noqa: N802 - gRPC method name
        self, request: registry_pb2.GetStatusListRequest, *, timeout: float
    ) -> registry_pb2.GetStatusListResponse:
        """The registry's current signed list."""
        ...


class StatusListHolder:
    """Holds the newest verified revocation list; readers never wait on a fetch."""

    def __init__(self, manifests: ManifestHolder) -> None:
        self._manifests = manifests
        self._current: StatusList | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> StatusList | None:
        """The list in force, or None before the first one arrived."""
        return self._current

    def offer(self, token: str, now: datetime) -> bool:
        """Adopt ``token`` if it verifies and is not older; returns whether it was adopted.

        Raises:
            VerificationError: not signed by the registry, for another registry,
                expired, or malformed.
        """
        with self._lock:
            manifest = self._manifests.current()
            try:
                adopted = verify_status_list(
                    token,
                    registry_keys=manifest.registry_keys,
                    registry_id=manifest.registry.member_id,
                    now=now,
                    held=self._current,
                )
            except RolledBack as exc:
                # Another registry process may hand out a list signed a moment earlier.
                _log.info("revocation list not adopted: %s", exc)
                return False
            self._current = adopted
            return True

    def fetch(self, source: StatusListSource, now: datetime) -> bool:
        """Fetch the registry's list and offer it; returns whether it was adopted.

        Raises:
            grpc.RpcError: the registry did not answer.
            VerificationError: the list does not verify.
        """
        response = source.GetStatusList(registry_pb2.GetStatusListRequest(), timeout=FETCH_TIMEOUT)
        return self.offer(response.status_list_token, now)

    def check(self, grant: tokens.Grant, now: datetime) -> None:
        """Refuse a revoked consent, or every consent while the list cannot tell.

        Raises:
            Revoked: the subject revoked the consent.
            Unavailable: no list yet, or the held list has expired.
            PermissionDenied: the consent names no index in the list.
        """
        if isinstance(grant, tokens.VerifiedConsent):
            check_grant_status(self._current, grant.status_index, grant.grant_id, now)
