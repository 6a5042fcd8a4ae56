"""Sums of answer vectors, and the verdict that follows from a sum (pure).

Vectors are integers mod 2^64 (:data:`MOD`); a slot that may be negative
(``credit_points``) is read back in two's complement by :func:`to_signed`.

:func:`verdict_from_sum` gives the same blacklist and credit verdicts as
``central_registry/aggregation.py`` gives from the same answers in the clear:

* blacklist: LISTED when the ``listed`` sum is above 0, with the categories
  whose sum is above 0, ``listing_agencies`` = the ``listed`` sum and
  ``disputed`` when ``listed_and_disputed`` is above 0; otherwise CLEAR when
  every expected agency answered (and at least one was expected), else
  INCOMPLETE;
* credit: score = clamp(base + ``credit_points`` sum), its band, the reason
  codes whose sum is above 0 ranked by that sum (what the code cost over
  every agency that reported it; ties in scorecard order), at most four;
  provisional when fewer credit agencies answered than the scorecard
  requires or than were expected; disputed when ``credit_disputed`` is
  above 0.

A reason slot holds the code's cost per reporting agency, so its sum is above
0 exactly when some agency reported the code, and is the code's cost times
how many did: the ranking the cleartext
:meth:`credence.scorecard.Aggregator.aggregate` gives too.

:func:`check_sum` says when a sum is impossible for the number of agencies
that answered honestly; the caller then makes the verdict INCOMPLETE with
that reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from credence.blind.layout import VectorLayout
from credence.scorecard import MAX_REASON_CODES, Aggregator
from credence.v1 import common_pb2, registry_pb2

__all__ = ["MOD", "add", "check_sum", "to_signed", "verdict_from_sum"]

#: Vectors are integers modulo 2^64.
MOD = 1 << 64
_HALF = 1 << 63


def add(vectors: Iterable[Sequence[int]]) -> list[int]:
    """The slot-wise sum of ``vectors`` mod 2^64 (an empty input sums to nothing: ``[]``).

    Raises:
        ValueError: the vectors differ in length.
    """
    vectors = list(vectors)
    if not vectors:
        return []
    length = len(vectors[0])
    if any(len(vector) != length for vector in vectors):
        lengths = sorted({len(vector) for vector in vectors})
        raise ValueError(f"vectors of lengths {lengths} cannot be added")
    return [sum(column) % MOD for column in zip(*vectors, strict=True)]


def to_signed(value: int) -> int:
    """Read a value mod 2^64 as a signed 64-bit integer (two's complement)."""
    value %= MOD
    return value - MOD if value >= _HALF else value


def check_sum(layout: VectorLayout, summed: Sequence[int], answering: int) -> str | None:
    """Why ``summed`` cannot be the sum of ``answering`` honest answers, or ``None``.

    Checks every slot against ``answering`` times its per-agency bound, and
    what holds between slots of honest answers: no more categories or
    disputed listings than listings, each reason slot a whole number of its
    code's cost, and no more reported codes than four per agency.

    Raises:
        ValueError: ``summed`` is not of the layout's length.
    """
    if len(summed) != layout.length:
        raise ValueError(f"a sum of {len(summed)} values does not fit layout {layout.layout_id}")
    values = [to_signed(value) for value in summed]
    slots = layout.slots
    for index, (low, high) in enumerate(layout.bounds()):
        if not low * answering <= values[index] <= high * answering:
            return (
                f"the {slots[index]} sum {values[index]} is outside "
                f"{low * answering}..{high * answering} for {answering} answering agencies"
            )
    listed = values[layout.listed_index]
    for index in range(1, 1 + len(layout.categories)):
        if values[index] > listed:
            return f"the {slots[index]} sum {values[index]} is above the listed sum {listed}"
    if values[layout.listed_and_disputed_index] > listed:
        return (
            f"the listed_and_disputed sum {values[layout.listed_and_disputed_index]} "
            f"is above the listed sum {listed}"
        )
    reported = 0
    first_reason = layout.points_index + 1
    for offset, code in enumerate(layout.reason_codes):
        value = values[first_reason + offset]
        count, rest = divmod(value, layout.reason_cost[code])
        if rest:
            return (
                f"the {slots[first_reason + offset]} sum {value} is not a whole number "
                f"of its cost {layout.reason_cost[code]}"
            )
        reported += count
    if reported > MAX_REASON_CODES * answering:
        return (
            f"{reported} reason codes reported in all, above {MAX_REASON_CODES} for each "
            f"of {answering} answering agencies"
        )
    return None


def verdict_from_sum(
    layout: VectorLayout,
    summed: Sequence[int],
    *,
    answering: int,
    expected: int,
    aggregator: Aggregator,
    credit_answering: int | None = None,
    credit_expected: int | None = None,
) -> tuple[registry_pb2.BlacklistVerdict, registry_pb2.CreditVerdict]:
    """The blacklist and credit verdicts that follow from the sum of the answers.

    Args:
        layout: the layout the answers follow.
        summed: the unmasked sum of the answering agencies' vectors.
        answering: how many blacklist agencies' answers are in the sum.
        expected: how many blacklist agencies were asked.
        aggregator: built once from the layout's scorecard.
        credit_answering: how many credit agencies' answers are in the sum;
            ``answering`` when not given.
        credit_expected: how many credit agencies were asked; ``expected``
            when not given.

    Returns:
        Both parts; the caller keeps the ones that were asked. Call
        :func:`check_sum` first: this function reads any sum.

    Raises:
        ValueError: ``summed`` is not of the layout's length, or the aggregator
            is for another scorecard version.
    """
    if len(summed) != layout.length:
        raise ValueError(f"a sum of {len(summed)} values does not fit layout {layout.layout_id}")
    if aggregator.version != layout.scorecard_version:
        raise ValueError(
            f"aggregator is for scorecard {aggregator.version!r}, "
            f"the layout for {layout.scorecard_version!r}"
        )
    listed = to_signed(summed[layout.listed_index])
    if listed > 0:
        blacklist = registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED,
            categories=[
                name
                for offset, name in enumerate(layout.categories)
                if to_signed(summed[1 + offset]) > 0
            ],
            disputed=to_signed(summed[layout.listed_and_disputed_index]) > 0,
            listing_agencies=listed,
        )
    elif expected and answering == expected:
        blacklist = registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_CLEAR)
    else:
        blacklist = registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_INCOMPLETE)

    credit_answering = answering if credit_answering is None else credit_answering
    credit_expected = expected if credit_expected is None else credit_expected
    first_reason = layout.points_index + 1
    costs = {code: to_signed(summed[first_reason + offset])
             for offset, code in enumerate(layout.reason_codes)}  # fmt: skip
    outcome = aggregator.outcome(
        to_signed(summed[layout.points_index]),
        {code: cost for code, cost in costs.items() if cost > 0},
        credit_answering,
    )
    credit = registry_pb2.CreditVerdict(
        score=outcome.score,
        band=outcome.band,
        reason_codes=outcome.reason_codes,
        provisional=outcome.provisional or credit_answering < credit_expected,
        disputed=to_signed(summed[layout.credit_disputed_index]) > 0,
    )
    return blacklist, credit
