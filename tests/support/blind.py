"""Reading masked answers in tests: the test knows every agency's agreement key.

A node's answer leaves it masked (credence.blind); a test that plays the
registry of an offline federation holds every agency's X25519 key, so it can
derive the node's masks and read what the node answered, slot by slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from credence.blind.layout import VectorLayout, for_scorecard
from credence.blind.masks import pair_key, public_bytes, signed_masks
from credence.blind.sums import to_signed
from credence.dev.offline_federation import Federation
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2

FEDERATION_ID = "test-federation"


@dataclass(frozen=True)
class Unmasked:
    """One agency's answer vector, read by slot."""

    layout: VectorLayout
    vector: tuple[int, ...]

    @property
    def listed(self) -> bool:
        return self.vector[self.layout.listed_index] == 1

    @property
    def categories(self) -> list[str]:
        return [name for i, name in enumerate(self.layout.categories) if self.vector[1 + i]]

    @property
    def disputed(self) -> bool:
        return self.vector[self.layout.listed_and_disputed_index] == 1

    @property
    def partial_points(self) -> int:
        return self.vector[self.layout.points_index]

    @property
    def reason_codes(self) -> list[str]:
        start = self.layout.points_index + 1
        return [code for i, code in enumerate(self.layout.reason_codes) if self.vector[start + i]]

    @property
    def has_history(self) -> bool:
        return self.vector[self.layout.has_history_index] == 1


def masks_of(
    federation: Federation, agency: str, audience: Sequence[str], label: str, words: int
) -> list[int]:
    """The masks ``agency`` adds for ``label`` (a query or batch id), from the test's keys."""
    own = federation.members[agency].agreement_key
    keys = {
        peer: pair_key(
            own,
            public_bytes(federation.members[peer].agreement_key),
            federation_id=FEDERATION_ID,
            own_id=agency,
            peer_id=peer,
        )
        for peer in audience
        if peer != agency
    }
    return signed_masks(own_id=agency, audience=audience, pair_keys=keys, label=label, words=words)


def unmask(
    answer: agency_pb2.Answer,
    federation: Federation,
    *,
    agency: str,
    label: str,
    index: int = 0,
    items: int = 1,
) -> Unmasked:
    """Item ``index`` of ``items`` masked under ``label``, as ``agency`` answered it.

    The audience is every agency of ``federation`` (the offline federation's default).
    """
    layout = for_scorecard(default_scorecard())
    assert answer.layout_id == layout.layout_id
    length = layout.length
    masks = masks_of(federation, agency, sorted(federation.agencies), label, length * items)
    part = masks[index * length : (index + 1) * length]
    vector = tuple(to_signed(w - m) for w, m in zip(answer.masked, part, strict=True))
    return Unmasked(layout, vector)
