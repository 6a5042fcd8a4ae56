"""The answer vector of a scorecard version: which integer means what.

Every agency node fills the same fixed layout of integers from its evaluation,
so the registry can add answers without reading them (DESIGN.md, "Blind
aggregation"; docs/protocol.md). Slot order:

========================  ========================================  ==============
slot                      value of one agency's answer              per-agency bound
========================  ========================================  ==============
``listed``                1 when the agency lists the subject       0..1
``category:<name>``       1 when listed in that category; one slot  0..1
                          per listing category, sorted by name
``listed_and_disputed``   1 when listed and a listing is contested  0..1
``credit_points``         the agency's partial points               scorecard min..max
``reason:<code>``         the points that code cost (its cost in    0 or the cost
                          the scorecard) when the agency reports
                          it; one slot per reason code, sorted
``has_history``           1 when a record counts for credit         0..1
``credit_disputed``       1 when a counted record is contested      0..1
========================  ========================================  ==============

A node fills only the parts that were asked and that it contributes to (its
manifest entry's ``contributes``): every other part is all zeros, so the sums
count each kind's contributors only, as today's aggregation does. The layout is named by its id,
``<scorecard version>/<first 16 hex digits of the layout hash>``, where the
layout hash is SHA-256 over the slot names joined by newlines. The scorecard
file publishes the slots and the hash (``vector_layout``); :func:`for_scorecard`
checks them against the computed layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from credence.errors import InvalidInput
from credence.record_kinds import KINDS
from credence.scorecard import best_points, reason_costs, validate_scorecard
from credence.v1 import manifest_pb2

__all__ = [
    "BlacklistPart",
    "CreditPart",
    "VectorLayout",
    "for_scorecard",
    "layout_message",
    "listing_categories",
]

LISTED = "listed"
LISTED_AND_DISPUTED = "listed_and_disputed"
CREDIT_POINTS = "credit_points"
HAS_HISTORY = "has_history"
CREDIT_DISPUTED = "credit_disputed"
CATEGORY_PREFIX = "category:"
REASON_PREFIX = "reason:"


class BlacklistPart(Protocol):
    """What a blacklist answer says; ``agency_node.evaluation`` results and protos fit."""

    @property
    def listed(self) -> bool: ...  # noqa: D102

    @property
    def categories(self) -> Collection[str]: ...  # noqa: D102

    @property
    def disputed(self) -> bool: ...  # noqa: D102


class CreditPart(Protocol):
    """What a credit answer says; ``agency_node.evaluation`` results and protos fit."""

    @property
    def partial_points(self) -> int: ...  # noqa: D102

    @property
    def reason_codes(self) -> Collection[str]: ...  # noqa: D102

    @property
    def has_history(self) -> bool: ...  # noqa: D102

    @property
    def disputed(self) -> bool: ...  # noqa: D102


def listing_categories() -> tuple[str, ...]:
    """Every category a listing record kind may carry, sorted by name."""
    return tuple(
        sorted({category for rule in KINDS.values() if rule.lists for category in rule.categories})
    )


@dataclass(frozen=True, slots=True)
class VectorLayout:
    """The slots of one scorecard version's answer vector; build with :func:`for_scorecard`.

    Attributes:
        scorecard_version: the scorecard it was computed from.
        categories: the listing categories, in slot order.
        reason_codes: the reason codes, in slot order (sorted by name).
        reason_cost: each reason code's cost in points (the scorecard's).
        points_min: the fewest credit points one agency can give.
        points_max: the most credit points one agency can give.
        slots: slot names in vector order.
        length: how many integers a vector holds.
        layout_hash: hex SHA-256 of the slot names joined by newlines.
        layout_id: ``<scorecard version>/<first 16 hex digits of the layout hash>``.
        listed_index: index of ``listed``; the categories follow it.
        listed_and_disputed_index: index of ``listed_and_disputed``.
        points_index: index of ``credit_points``; the reason codes follow it.
        has_history_index: index of ``has_history``.
        credit_disputed_index: index of ``credit_disputed``.
    """

    scorecard_version: str
    categories: tuple[str, ...]
    reason_codes: tuple[str, ...]
    reason_cost: Mapping[str, int]
    points_min: int
    points_max: int
    slots: tuple[str, ...] = field(init=False)
    length: int = field(init=False)
    layout_hash: str = field(init=False)
    layout_id: str = field(init=False)
    listed_index: int = field(init=False)
    listed_and_disputed_index: int = field(init=False)
    points_index: int = field(init=False)
    has_history_index: int = field(init=False)
    credit_disputed_index: int = field(init=False)
    _bounds: tuple[tuple[int, int], ...] = field(init=False, repr=False)
    _category_slot: Mapping[str, int] = field(init=False, repr=False)
    _reason_slot: Mapping[str, tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Work out the slots, indices and bounds once."""
        slots = (
            LISTED,
            *(CATEGORY_PREFIX + name for name in self.categories),
            LISTED_AND_DISPUTED,
            CREDIT_POINTS,
            *(REASON_PREFIX + code for code in self.reason_codes),
            HAS_HISTORY,
            CREDIT_DISPUTED,
        )
        layout_hash = hashlib.sha256("\n".join(slots).encode()).hexdigest()
        points = 2 + len(self.categories)
        derived = {
            "slots": slots,
            "length": len(slots),
            "layout_hash": layout_hash,
            "layout_id": f"{self.scorecard_version}/{layout_hash[:16]}",
            "listed_index": 0,
            "listed_and_disputed_index": 1 + len(self.categories),
            "points_index": points,
            "has_history_index": len(slots) - 2,
            "credit_disputed_index": len(slots) - 1,
            "_bounds": (
                (0, 1),
                *((0, 1) for _ in self.categories),
                (0, 1),
                (self.points_min, self.points_max),
                *((0, self.reason_cost[code]) for code in self.reason_codes),
                (0, 1),
                (0, 1),
            ),
            "_category_slot": MappingProxyType(
                {name: 1 + offset for offset, name in enumerate(self.categories)}
            ),
            "_reason_slot": MappingProxyType(
                {
                    code: (points + 1 + offset, self.reason_cost[code])
                    for offset, code in enumerate(self.reason_codes)
                }
            ),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def fill(self, blacklist: BlacklistPart | None, credit: CreditPart | None) -> list[int]:
        """One agency's vector from its evaluation; a part not asked is ``None`` (zeros).

        Values are plain signed integers (points may be negative); masking
        reduces them mod 2^64.

        Raises:
            InvalidInput: a listing category or a reason code the layout has no
                slot for (the node evaluated under another scorecard or kinds).
        """
        vector = [0] * self.length
        if blacklist is not None and blacklist.listed:
            vector[0] = 1
            for category in blacklist.categories:
                index = self._category_slot.get(category)
                if index is None:
                    raise InvalidInput(
                        f"listing category {category!r} has no slot in layout {self.layout_id}"
                    )
                vector[index] = 1
            if blacklist.disputed:
                vector[self.listed_and_disputed_index] = 1
        if credit is not None:
            vector[self.points_index] = credit.partial_points
            for code in credit.reason_codes:
                slot = self._reason_slot.get(code)
                if slot is None:
                    raise InvalidInput(
                        f"reason code {code!r} is not in scorecard {self.scorecard_version!r}"
                    )
                vector[slot[0]] = slot[1]
            if credit.has_history:
                vector[-2] = 1
            if credit.disputed:
                vector[-1] = 1
        return vector

    def bounds(self) -> tuple[tuple[int, int], ...]:
        """Each slot's (lowest, highest) value in one honest agency's vector."""
        return self._bounds


def for_scorecard(scorecard: manifest_pb2.Scorecard) -> VectorLayout:
    """The layout of ``scorecard``, checked against the one it publishes, if any.

    Raises:
        InvalidInput: the scorecard is invalid, or its ``vector_layout`` is not
            the computed layout (names the first differing slot).
    """
    validate_scorecard(scorecard)
    costs = reason_costs(scorecard)
    layout = VectorLayout(
        scorecard_version=scorecard.version,
        categories=listing_categories(),
        reason_codes=tuple(sorted(costs)),
        reason_cost=MappingProxyType(costs),
        points_min=sum(min(b.points for b in c.bins) for c in scorecard.characteristics),
        points_max=sum(best_points(c) for c in scorecard.characteristics),
    )
    if scorecard.HasField("vector_layout"):
        _check_published(layout, scorecard.vector_layout)
    return layout


def layout_message(layout: VectorLayout) -> manifest_pb2.VectorLayout:
    """The ``vector_layout`` section a scorecard file publishes for ``layout``."""
    return manifest_pb2.VectorLayout(slots=layout.slots, layout_hash=layout.layout_hash)


def _check_published(layout: VectorLayout, published: manifest_pb2.VectorLayout) -> None:
    slots: Sequence[str] = layout.slots
    listed = list(published.slots)
    for index, (have, want) in enumerate(zip(listed, slots, strict=False)):
        if have != want:
            raise InvalidInput(
                f"scorecard {layout.scorecard_version!r} vector_layout slot {index} is "
                f"{have!r}; the layout computed from the scorecard has {want!r}"
            )
    if len(listed) != len(slots):
        raise InvalidInput(
            f"scorecard {layout.scorecard_version!r} vector_layout has {len(listed)} slots; "
            f"the layout computed from the scorecard has {len(slots)}"
        )
    if published.layout_hash != layout.layout_hash:
        raise InvalidInput(
            f"scorecard {layout.scorecard_version!r} vector_layout layout_hash "
            f"{published.layout_hash!r} is not {layout.layout_hash!r}"
        )
