"""The published additive credit scorecard: loading, validation and the registry's maths.

A scorecard is a versioned data file (``credence/data/scorecard-v1.json`` is the
default) carried in the signed federation manifest. Each agency node evaluates
the characteristics of the record kinds it holds and answers with partial
points and adverse reason codes; the registry adds them up::

    score = clamp(base_points + sum(partial points), min_score, max_score)

The file is the proto3 JSON form of :class:`credence.v1.manifest_pb2.Scorecard`
with the ``.proto`` field names (``base_points``, ``record_kinds``...).

Measures, each a non-negative whole number over the records that count for the
characteristic (record kinds it reads, within ``lookback_days`` of now by
``occurred_at``; 0 means no limit):

======================  =======================================================
measure                 value
======================  =======================================================
``count``               how many such records there are
``max_days_overdue``    the most ``days_overdue`` among them; 0 if none
``months_of_history``   whole calendar months since the earliest of them; 0 if
                        none (positive history: longer is better)
======================  =======================================================

A bin ``[lower, upper)`` maps a measure to points. A bin whose points are below
the characteristic's best bin is *adverse*: it carries a reason code, and the
code's *cost* is how many points the bin loses against the best bin. A
verdict's reason codes are ranked by what each cost in all, summed over the
agencies that reported it (its cost times how many reported it), highest
first, ties in scorecard order; a verdict carries at most
:data:`MAX_REASON_CODES`, so "most costly first" holds of the summed figures
an explanation shows (:mod:`credence.explanations`). Record kinds are free-form here; the
agency node checks them against its own list of kinds.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf import json_format

from credence.errors import InvalidInput
from credence.v1 import manifest_pb2

__all__ = [
    "MAX_REASON_CODES",
    "MAX_SCORE",
    "MEASURES",
    "MIN_SCORE",
    "Aggregator",
    "CreditOutcome",
    "aggregate_credit",
    "band_for",
    "best_points",
    "bin_for",
    "default_scorecard",
    "load_scorecard",
    "reason_costs",
    "validate_scorecard",
]

#: Lowest and highest possible scores (DESIGN.md, "Verdicts").
MIN_SCORE = 350
MAX_SCORE = 950
#: A verdict and an agency's answer carry at most this many reason codes.
MAX_REASON_CODES = 4

#: The measures a characteristic may use, with what each one means.
MEASURES: Mapping[str, str] = MappingProxyType(
    {
        "count": "number of counting records",
        "max_days_overdue": "most days overdue among counting records, 0 if none",
        "months_of_history": "whole months since the earliest counting record, 0 if none",
    }
)

_DEFAULT_FILE = "scorecard-v1.json"
_REASON_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")


def load_scorecard(data: bytes | str) -> manifest_pb2.Scorecard:
    """Parse and validate a scorecard from its JSON data file.

    Raises:
        InvalidInput: the text is not JSON of a ``Scorecard`` (unknown field,
            wrong type) or the scorecard breaks a rule of :func:`validate_scorecard`.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"scorecard file is not UTF-8: {exc}") from exc
    scorecard = manifest_pb2.Scorecard()
    try:
        json_format.Parse(data, scorecard)
    except json_format.ParseError as exc:
        raise InvalidInput(f"scorecard file is not a valid Scorecard: {exc}") from exc
    validate_scorecard(scorecard)
    return scorecard


@functools.cache
def _default_bytes() -> bytes:
    return importlib.resources.files("credence").joinpath("data", _DEFAULT_FILE).read_bytes()


def default_scorecard() -> manifest_pb2.Scorecard:
    """The default published scorecard, a fresh copy on every call.

    Raises:
        InvalidInput: the packaged data file is broken (a packaging error).
    """
    return load_scorecard(_default_bytes())


def best_points(characteristic: manifest_pb2.ScoreCharacteristic) -> int:
    """The most points any bin of ``characteristic`` awards.

    Raises:
        InvalidInput: the characteristic has no bins.
    """
    if not characteristic.bins:
        raise InvalidInput(f"scorecard characteristic {characteristic.name!r} has no bins")
    return max(b.points for b in characteristic.bins)


def validate_scorecard(scorecard: manifest_pb2.Scorecard) -> None:
    """Check that ``scorecard`` can be evaluated and aggregated without surprises.

    Rules: a version; score range 350..950 with the base inside it; at least
    one required agency; characteristics with unique names, a known measure
    and at least one record kind; bins ascending and contiguous from 0 to
    unbounded; every adverse bin has a reason code and no best bin has one;
    every reason code is used by one bin only and has a text, and every text
    belongs to a code; bands contiguous, covering min..max exactly.

    Raises:
        InvalidInput: the first broken rule, naming the characteristic, bin or band.
    """
    if not scorecard.version:
        raise InvalidInput("scorecard has no version")
    if (scorecard.min_score, scorecard.max_score) != (MIN_SCORE, MAX_SCORE):
        raise InvalidInput(
            f"scorecard range must be {MIN_SCORE}..{MAX_SCORE}, "
            f"got {scorecard.min_score}..{scorecard.max_score}"
        )
    if not MIN_SCORE <= scorecard.base_points <= MAX_SCORE:
        raise InvalidInput(
            f"scorecard base_points {scorecard.base_points} is outside {MIN_SCORE}..{MAX_SCORE}"
        )
    if scorecard.required_agencies < 1:
        raise InvalidInput("scorecard required_agencies must be at least 1")
    if not scorecard.characteristics:
        raise InvalidInput("scorecard has no characteristics")
    names: set[str] = set()
    for characteristic in scorecard.characteristics:
        name = characteristic.name
        if not name:
            raise InvalidInput("scorecard has a characteristic without a name")
        if name in names:
            raise InvalidInput(f"scorecard characteristic name {name!r} appears twice")
        names.add(name)
        _validate_characteristic(characteristic)
    _validate_reason_codes(scorecard)
    _validate_bands(scorecard)


def _validate_reason_codes(scorecard: manifest_pb2.Scorecard) -> None:
    codes: dict[str, str] = {}
    for characteristic in scorecard.characteristics:
        name = characteristic.name
        for number, score_bin in enumerate(characteristic.bins, 1):
            code = score_bin.reason_code
            if not code:
                continue
            if code in codes:
                raise InvalidInput(
                    f"scorecard reason code {code!r} is used by both {codes[code]!r} and "
                    f"{name!r} bin {number}; each code must name one bin"
                )
            codes[code] = name
            if not scorecard.reason_texts.get(code):
                raise InvalidInput(
                    f"scorecard reason code {code!r} ({name!r} bin {number}) has no reason text"
                )
    unused = sorted(set(scorecard.reason_texts) - set(codes))
    if unused:
        raise InvalidInput(f"scorecard reason_texts name codes no bin uses: {', '.join(unused)}")


def _validate_characteristic(characteristic: manifest_pb2.ScoreCharacteristic) -> None:
    name = characteristic.name
    if characteristic.measure not in MEASURES:
        raise InvalidInput(
            f"scorecard characteristic {name!r} has unknown measure {characteristic.measure!r}; "
            f"known: {', '.join(sorted(MEASURES))}"
        )
    kinds = list(characteristic.record_kinds)
    if not kinds or not all(kinds):
        raise InvalidInput(f"scorecard characteristic {name!r} needs non-empty record_kinds")
    if len(set(kinds)) != len(kinds):
        raise InvalidInput(f"scorecard characteristic {name!r} lists a record kind twice")
    best = best_points(characteristic)
    expected_lower = 0
    last = len(characteristic.bins)
    for number, score_bin in enumerate(characteristic.bins, 1):
        where = f"scorecard characteristic {name!r} bin {number}"
        if score_bin.lower > expected_lower:
            raise InvalidInput(
                f"{where}: lower {score_bin.lower} leaves a gap after {expected_lower}; "
                "bins must be contiguous and the first must start at 0"
            )
        if score_bin.lower < expected_lower:
            raise InvalidInput(
                f"{where}: lower {score_bin.lower} overlaps the previous bin, which ends at "
                f"{expected_lower}; bins must be ascending and contiguous"
                if number > 1
                else f"{where}: lower {score_bin.lower} is negative; measures start at 0"
            )
        if score_bin.HasField("upper"):
            if number == last:
                raise InvalidInput(
                    f"{where}: the last bin must be unbounded (no upper) so every value has a bin"
                )
            if score_bin.upper <= score_bin.lower:
                raise InvalidInput(
                    f"{where}: upper {score_bin.upper} must be above lower {score_bin.lower}"
                )
            expected_lower = score_bin.upper
        elif number != last:
            raise InvalidInput(f"{where}: only the last bin may be unbounded (no upper)")
        _validate_bin_code(where, score_bin, best)


def _validate_bin_code(where: str, score_bin: manifest_pb2.ScoreBin, best: int) -> None:
    code = score_bin.reason_code
    if score_bin.points < best and not code:
        raise InvalidInput(
            f"{where}: adverse bin ({score_bin.points} points, best is {best}) needs a reason_code"
        )
    if score_bin.points == best and code:
        raise InvalidInput(
            f"{where}: a best bin ({best} points) must not carry reason code {code!r}"
        )
    if code and not _REASON_CODE.fullmatch(code):
        raise InvalidInput(
            f"{where}: reason code {code!r} must be 2-8 of A-Z 0-9, starting with a letter"
        )


def _validate_bands(scorecard: manifest_pb2.Scorecard) -> None:
    if not scorecard.bands:
        raise InvalidInput("scorecard has no bands")
    expected_lower = scorecard.min_score
    for number, band in enumerate(scorecard.bands, 1):
        where = f"scorecard band {number} ({band.name!r})"
        if not band.name:
            raise InvalidInput(f"scorecard band {number} has no name")
        if band.lower != expected_lower:
            problem = "leaves a gap" if band.lower > expected_lower else "overlaps"
            raise InvalidInput(
                f"{where}: lower {band.lower} {problem}; expected {expected_lower} "
                f"(bands must be contiguous from {scorecard.min_score})"
            )
        if band.upper < band.lower:
            raise InvalidInput(f"{where}: upper {band.upper} is below lower {band.lower}")
        expected_lower = band.upper + 1
    if expected_lower - 1 != scorecard.max_score:
        raise InvalidInput(
            f"scorecard bands end at {expected_lower - 1}; they must end at {scorecard.max_score}"
        )


def bin_for(characteristic: manifest_pb2.ScoreCharacteristic, value: int) -> manifest_pb2.ScoreBin:
    """The bin of a validated ``characteristic`` that ``value`` falls in.

    Raises:
        InvalidInput: ``value`` is below the first bin (measures are never negative).
    """
    for score_bin in characteristic.bins:
        if value >= score_bin.lower and (
            not score_bin.HasField("upper") or value < score_bin.upper
        ):
            return score_bin
    raise InvalidInput(
        f"value {value} has no bin in scorecard characteristic {characteristic.name!r}"
    )


def reason_costs(scorecard: manifest_pb2.Scorecard) -> dict[str, int]:
    """Each reason code's cost in points against its characteristic's best bin.

    The dict is in scorecard order, which breaks ties between equal costs.
    """
    costs: dict[str, int] = {}
    for characteristic in scorecard.characteristics:
        if not characteristic.bins:
            continue
        best = best_points(characteristic)
        for score_bin in characteristic.bins:
            if score_bin.reason_code:
                costs[score_bin.reason_code] = best - score_bin.points
    return costs


def band_for(scorecard: manifest_pb2.Scorecard, score: int) -> str:
    """The name of the band holding ``score``.

    Raises:
        InvalidInput: no band holds ``score`` (outside min..max).
    """
    for band in scorecard.bands:
        if band.lower <= score <= band.upper:
            return band.name
    raise InvalidInput(f"score {score} is in no band of scorecard {scorecard.version!r}")


@dataclass(frozen=True, slots=True)
class CreditOutcome:
    """The registry's credit result for one subject."""

    score: int
    band: str
    reason_codes: tuple[str, ...]
    provisional: bool


class Aggregator:
    """Adds agencies' credit contributions under one scorecard; build once, reuse."""

    __slots__ = ("_bands", "_base", "_costs", "_max", "_min", "_order", "_required", "version")

    def __init__(self, scorecard: manifest_pb2.Scorecard) -> None:
        """Validate ``scorecard`` and precompute what aggregation needs.

        Raises:
            InvalidInput: the scorecard breaks a rule of :func:`validate_scorecard`.
        """
        validate_scorecard(scorecard)
        self.version: str = scorecard.version
        self._base = scorecard.base_points
        self._min = scorecard.min_score
        self._max = scorecard.max_score
        self._required = scorecard.required_agencies
        self._bands = tuple((b.lower, b.upper, b.name) for b in scorecard.bands)
        self._costs = reason_costs(scorecard)
        self._order = {code: index for index, code in enumerate(self._costs)}

    def aggregate(self, partials: Sequence[tuple[int, Sequence[str]]]) -> CreditOutcome:
        """Combine ``(partial_points, reason_codes)`` of each answering credit agency.

        Raises:
            InvalidInput: an agency sent a reason code the scorecard does not define.
        """
        total = 0
        reported: dict[str, int] = {}
        for points, reason_codes in partials:
            total += points
            for code in set(reason_codes):
                reported[code] = reported.get(code, 0) + 1
        for code in reported:
            if code not in self._costs:
                raise InvalidInput(f"reason code {code!r} is not in scorecard {self.version!r}")
        summed = {code: self._costs[code] * count for code, count in reported.items()}
        return self.outcome(total, summed, len(partials))

    def outcome(
        self, points: int, codes: Mapping[str, int] | Collection[str], answering: int
    ) -> CreditOutcome:
        """The result of ``answering`` agencies whose partial points sum to ``points``.

        ``codes`` maps each reason code any of them reported to what it cost
        summed over them (its cost times how many reported it); a plain
        collection counts each code's cost once.

        Raises:
            InvalidInput: a reason code the scorecard does not define.
        """
        for code in codes:
            if code not in self._costs:
                raise InvalidInput(f"reason code {code!r} is not in scorecard {self.version!r}")
        summed = (
            codes if isinstance(codes, Mapping) else {code: self._costs[code] for code in codes}
        )
        score = min(max(self._base + points, self._min), self._max)
        ranked = sorted(summed, key=lambda code: (-summed[code], self._order[code]))
        ranked = ranked[:MAX_REASON_CODES]
        band = next(name for lower, upper, name in self._bands if lower <= score <= upper)
        return CreditOutcome(
            score=score,
            band=band,
            reason_codes=tuple(ranked),
            provisional=answering < self._required,
        )


def aggregate_credit(
    scorecard: manifest_pb2.Scorecard, partials: Sequence[tuple[int, Sequence[str]]]
) -> CreditOutcome:
    """Combine agencies' contributions under ``scorecard`` (see :class:`Aggregator`).

    Raises:
        InvalidInput: the scorecard is invalid or a reason code is unknown to it.
    """
    return Aggregator(scorecard).aggregate(partials)
