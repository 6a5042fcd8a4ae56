"""What a lookup derives from the manifest, cached per manifest version.

The agencies to ask for a set of kinds (and which of them contribute each
kind), and the scorecard's aggregator: both change only with the manifest, so
each is worked out once per version instead of once per lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from central_registry.fanout import AgencyTarget
from central_registry.grants import GrantPolicy
from credence.scorecard import Aggregator

__all__ = ["ManifestViews", "Targets"]

#: The agencies to ask, and for each kind the ids of those contributing it.
Targets = tuple[list[AgencyTarget], dict[int, set[str]]]


@dataclass
class _ByKinds:
    version: int = -1
    by_kinds: dict[tuple[int, ...], Targets] = field(default_factory=dict)


class ManifestViews:
    """The targets per set of kinds and the scorecard, for the current manifest version."""

    def __init__(self) -> None:
        self._targets = _ByKinds()
        self._aggregator: tuple[int, Aggregator, str] | None = None

    def scorecard(self, policy: GrantPolicy) -> tuple[Aggregator, str]:
        """The aggregator of the manifest's scorecard, and the scorecard's version."""
        version = policy.manifest.version
        if self._aggregator is None or self._aggregator[0] != version:
            scorecard = policy.manifest.scorecard
            self._aggregator = (version, Aggregator(scorecard), scorecard.version)
        return self._aggregator[1], self._aggregator[2]

    def targets_for(self, policy: GrantPolicy, kinds: tuple[int, ...]) -> Targets:
        """The agencies contributing any of ``kinds``, by member id, and who contributes which."""
        manifest = policy.manifest
        if self._targets.version != manifest.version:
            self._targets = _ByKinds(manifest.version)
        cached = self._targets.by_kinds.get(kinds)
        if cached is None:
            contributors = {
                kind: {member.member_id for member in manifest.contributors(kind)}  # type: ignore[arg-type]
                for kind in kinds
            }
            ids = sorted(set().union(*contributors.values()))
            targets = [
                AgencyTarget(
                    member_id=member_id,
                    endpoint=manifest.member(member_id).endpoint,
                    keys=manifest.member_keys(member_id),
                )
                for member_id in ids
            ]
            cached = self._targets.by_kinds[kinds] = (targets, contributors)
        return cached
