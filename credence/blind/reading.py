"""Reading a verdict from the answers' sum: the one rule the registry and every verifier share.

The registry (``central_registry.aggregation``) and a verifier re-adding a
verdict (:func:`credence.verdicts.readd_verdict`) must derive the same
fields from the same sum, so both call these pure functions:

* :func:`kind_counts`: per asked kind, how many of its contributors answered
  and were expected (a node fills only the parts it contributes to);
* :func:`impossible_reason`: why a sum cannot come from honest answers
  (:func:`credence.blind.sums.check_sum`, or a slot of a kind that was not
  asked summing to anything but 0), or "";
* :func:`verdict_parts`: the blacklist and credit parts, or, when the sum
  cannot be read, blacklist INCOMPLETE and the base points, provisional.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence, Set

from credence.blind.layout import VectorLayout
from credence.blind.sums import check_sum, to_signed, verdict_from_sum
from credence.scorecard import Aggregator
from credence.v1 import common_pb2, registry_pb2

__all__ = ["impossible_reason", "kind_counts", "verdict_parts"]

_BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
_CREDIT = common_pb2.VERDICT_KIND_CREDIT


def kind_counts(
    members: Sequence[str],
    answering: Collection[str],
    kinds: Collection[int],
    contributors: Mapping[int, Set[str]] | None,
) -> dict[int, tuple[int, int]]:
    """Per kind: (answering, expected) among its contributors; (0, 0) for a kind not asked.

    Args:
        members: every agency asked (the coverage's members).
        answering: those whose answers are in the sum.
        kinds: the asked kinds.
        contributors: kind -> its contributing member ids; None counts every
            member for every kind.
    """
    counts: dict[int, tuple[int, int]] = {}
    for kind in (_BLACKLIST, _CREDIT):
        if kind not in kinds:
            counts[kind] = (0, 0)
            continue
        chosen = contributors.get(kind) if contributors is not None else None
        counted = [m for m in members if chosen is None or m in chosen]
        counts[kind] = (sum(1 for m in counted if m in answering), len(counted))
    return counts


def impossible_reason(
    layout: VectorLayout, summed: Sequence[int], answering: int, kinds: Collection[int]
) -> str:
    """Why ``summed`` cannot be ``answering`` honest answers to ``kinds``, or ""."""
    reason = check_sum(layout, summed, answering)
    if reason:
        return f"the answers' sum is impossible: {reason}"
    parts = []
    if _BLACKLIST not in kinds:
        parts.append(("blacklist", range(layout.points_index)))
    if _CREDIT not in kinds:
        parts.append(("credit", range(layout.points_index, layout.length)))
    slots = layout.slots
    for part, indices in parts:
        for index in indices:
            if summed[index] % (1 << 64):
                return (
                    f"the answers' sum is impossible: the {slots[index]} sum "
                    f"{to_signed(summed[index])} is not 0, and {part} was not asked"
                )
    return ""


def verdict_parts(
    layout: VectorLayout,
    summed: Sequence[int] | None,
    *,
    aggregator: Aggregator,
    counts: Mapping[int, tuple[int, int]],
) -> tuple[registry_pb2.BlacklistVerdict, registry_pb2.CreditVerdict]:
    """Both verdict parts from ``summed``; ``None`` (unreadable): INCOMPLETE and the base score.

    Args:
        layout: the layout of the answers.
        summed: the answering agencies' plain sum, or None when it cannot be read.
        aggregator: built from the layout's scorecard.
        counts: from :func:`kind_counts`.

    Raises:
        ValueError: as :func:`credence.blind.sums.verdict_from_sum`.
    """
    if summed is None:
        _, credit = verdict_from_sum(
            layout, [0] * layout.length, answering=0, expected=0, aggregator=aggregator,
            credit_answering=0, credit_expected=counts[_CREDIT][1],
        )  # fmt: skip
        credit.provisional = True
        incomplete = registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_INCOMPLETE)
        return incomplete, credit
    return verdict_from_sum(
        layout,
        summed,
        answering=counts[_BLACKLIST][0],
        expected=counts[_BLACKLIST][1],
        aggregator=aggregator,
        credit_answering=counts[_CREDIT][0],
        credit_expected=counts[_CREDIT][1],
    )
