"""The node's X25519 key agreement key and the pair keys it shares with other agencies.

Blind aggregation (:mod:`credence.blind`) masks every answer with one mask per
other agency of the query's audience; both ends of a pair derive the same pair
key from their own private key and the other's public key, which the
manifest publishes. An X25519 agreement and an HKDF cost about 100 us: the
node derives each pair key once, when an audience first names the agency,
and keeps it until the manifest publishes another key for either side
(rotation: a re-enrolled agency's new key is a new cache entry).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from credence.blind.masks import pair_key, public_bytes
from credence.errors import FailedPrecondition
from credence.manifest import TrustedManifest

__all__ = ["PairKeys"]


class PairKeys:
    """This agency's pair keys with the other agencies, derived once each and kept.

    Thread-safe: the answer pool's threads share one instance.
    """

    def __init__(self, member_id: str, key: X25519PrivateKey) -> None:
        self._member_id = member_id
        self._key = key
        self._public = public_bytes(key)
        self._lock = threading.Lock()
        # (federation, peer, peer's public key) -> pair key: a rotated key is a new entry.
        self._cache: dict[tuple[str, str, bytes], bytes] = {}

    @property
    def public(self) -> bytes:
        """This node's raw public key agreement key."""
        return self._public

    def for_audience(self, manifest: TrustedManifest, audience: Sequence[str]) -> dict[str, bytes]:
        """The pair key with every other member of ``audience``.

        Raises:
            FailedPrecondition: the manifest publishes another key for this
                agency than the one it holds, or none for an audience member
                (its masks could not be agreed: the answer would be useless).
        """
        own = manifest.members.get(self._member_id)
        if own is None or own.agreement_key != self._public:
            raise FailedPrecondition(
                f"the manifest (version {manifest.version}) does not publish this node's key "
                f"agreement key for {self._member_id!r}: enrol the key in {self._member_id}'s "
                "agreement.key, or wait for a manifest that lists it"
            )
        keys: dict[str, bytes] = {}
        for peer in audience:
            if peer != self._member_id:
                keys[peer] = self._pair(manifest, peer)
        return keys

    def _pair(self, manifest: TrustedManifest, peer: str) -> bytes:
        member = manifest.members.get(peer)
        public = None if member is None else member.agreement_key
        if public is None:
            raise FailedPrecondition(
                f"the audience names {peer!r}, whose key agreement key the manifest (version "
                f"{manifest.version}) does not publish; no mask can be agreed with it"
            )
        entry = (manifest.federation_id, peer, public)
        with self._lock:
            cached = self._cache.get(entry)
        if cached is not None:
            return cached
        derived = pair_key(
            self._key,
            public,
            federation_id=manifest.federation_id,
            own_id=self._member_id,
            peer_id=peer,
        )
        with self._lock:
            self._cache[entry] = derived
        return derived

    def cached(self) -> Mapping[tuple[str, str, bytes], bytes]:
        """The pair keys derived so far (tests and the benchmark read it)."""
        with self._lock:
            return dict(self._cache)
