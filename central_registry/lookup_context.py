"""What every lookup path shares: keys, manifest, fan-out, clock, caches and its log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from central_registry.access import Allowed
from central_registry.config import RegistryConfig
from central_registry.fanout import FanOut
from central_registry.grants import GrantPolicy
from central_registry.keyring import RegistryKeys
from central_registry.lookup_log import LookupLog
from central_registry.manifest_cache import ManifestCache
from central_registry.targets import ManifestViews
from central_registry.verdict_records import VerdictRecords
from credence.clock import Clock
from credence.grants.cache import GrantCache

__all__ = ["LookupContext"]


@dataclass
class LookupContext:
    """The registry's state a lookup runs over; one per server."""

    config: RegistryConfig
    keys: RegistryKeys
    manifests: ManifestCache
    fanout: FanOut
    clock: Clock
    log: LookupLog
    #: The served verdicts' rows (what a subject's review and explanations read).
    records: VerdictRecords
    #: Where a person reads the scorecard (the HTTP side's /scorecard), once it serves.
    scorecard_url: str = ""
    grants: GrantCache = field(default_factory=GrantCache)
    views: ManifestViews = field(default_factory=ManifestViews)

    def policy(self) -> GrantPolicy:
        """The grant policy under the current manifest."""
        return GrantPolicy(self.manifests.current(), self.config)

    def verdict_life(self, allowed: Allowed) -> timedelta:
        """How long a verdict under ``allowed`` lives: a consent may name less."""
        if allowed.data_life is not None:
            return min(allowed.data_life, self.config.verdict_lifetime)
        return self.config.verdict_lifetime
