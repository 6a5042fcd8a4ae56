"""Verified grants remembered by token hash, so a repeated grant costs no Ed25519 work.

A consent costs three signature verifications (~0.5 ms). A node or registry
that sees the same token again within its validity reuses the result; the
grant's binding to each query (subject, requester, purpose, kinds) is still
checked every time by the caller, and revocation stays the registry's.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import datetime

from credence import payloads
from credence.grants import tokens


class GrantCache:
    """Remembers verified grants by token hash so a repeated grant costs no Ed25519 work.

    A cached grant is only reused while it is still within its validity, and the
    binding to the query is re-checked every time.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, tokens.Grant] = OrderedDict()

    def get(self, token: str, now: datetime) -> tokens.Grant | None:
        """The verified grant for ``token`` if cached and still valid."""
        key = hashlib.sha256(token.encode()).digest()
        grant = self._entries.get(key)
        if grant is None:
            return None
        if not grant.not_before - payloads.CLOCK_SKEW <= now < grant.expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return grant

    def put(self, token: str, grant: tokens.Grant) -> None:
        """Remember a grant that just verified."""
        self._entries[hashlib.sha256(token.encode()).digest()] = grant
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
