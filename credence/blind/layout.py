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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
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
    """

    scorecard_version: str
    categories: tuple[str, ...]
    reason_codes: tuple[str, ...]
    reason_cost: dict[str, int]
    points_min: int
    points_max: int

    @property
    def slots(self) -> tuple[str, ...]:
        """Slot names in vector order."""
        return (
            LISTED,
            *(CATEGORY_PREFIX + name for name in self.categories),
            LISTED_AND_DISPUTED,
            CREDIT_POINTS,
            *(REASON_PREFIX + code for code in self.reason_codes),
            HAS_HISTORY,
            CREDIT_DISPUTED,
        )

    @property
    def length(self) -> int:
        """How many integers a vector holds."""
        return 5 + len(self.categories) + len(self.reason_codes)

    @property
    def layout_hash(self) -> str:
        """Hex SHA-256 of the slot names joined by newlines."""
        return hashlib.sha256("\n".join(self.slots).encode()).hexdigest()

    @property
    def layout_id(self) -> str:
        """``<scorecard version>/<first 16 hex digits of the layout hash>``."""
        return f"{self.scorecard_version}/{self.layout_hash[:16]}"

    # Slot indices, in the order of the module docstring.
    @property
    def listed_index(self) -> int:
        """Index of ``listed``."""
        return 0

    @property
    def listed_and_disputed_index(self) -> int:
        """Index of ``listed_and_disputed``."""
        return 1 + len(self.categories)

    @property
    def points_index(self) -> int:
        """Index of ``credit_points``."""
        return 2 + len(self.categories)

    @property
    def has_history_index(self) -> int:
        """Index of ``has_history``."""
        return self.length - 2

    @property
    def credit_disputed_index(self) -> int:
        """Index of ``credit_disputed``."""
        return self.length - 1

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
                try:
                    vector[1 + self.categories.index(category)] = 1
                except ValueError:
                    raise InvalidInput(
                        f"listing category {category!r} has no slot in layout {self.layout_id}"
                    ) from None
            if blacklist.disputed:
                vector[self.listed_and_disputed_index] = 1
        if credit is not None:
            points = self.points_index
            vector[points] = credit.partial_points
            for code in credit.reason_codes:
                cost = self.reason_cost.get(code)
                if cost is None:
                    raise InvalidInput(
                        f"reason code {code!r} is not in scorecard {self.scorecard_version!r}"
                    )
                vector[points + 1 + self.reason_codes.index(code)] = cost
            vector[self.has_history_index] = int(credit.has_history)
            vector[self.credit_disputed_index] = int(credit.disputed)
        return vector

    def bounds(self) -> list[tuple[int, int]]:
        """Each slot's (lowest, highest) value in one honest agency's vector."""
        return [
            (0, 1),
            *((0, 1) for _ in self.categories),
            (0, 1),
            (self.points_min, self.points_max),
            *((0, self.reason_cost[code]) for code in self.reason_codes),
            (0, 1),
            (0, 1),
        ]


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
        reason_cost=costs,
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
