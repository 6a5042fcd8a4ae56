"""Local evaluation: what an agency node's records say about one subject.

Pure functions over already-validated :class:`RecordFacts`; no database, and
``now`` is passed in. The results hold only what an answer may reveal
(DESIGN.md, "What an answer reveals"): for a blacklist, listed or not, the
categories, since, until and disputed; for credit, partial points and at most
four adverse reason codes. Amounts, currencies, record ids and dates of
individual records never leave this module.

When a record counts:

* A record stops counting at the earlier of its ``expires_at`` and the end of
  its kind's rehabilitation period (:mod:`credence.record_kinds`), so a stored
  expiry can never extend a record's life. It counts while
  ``occurred_at <= now < end``: a record dated in the future does not count yet,
  and an expired record never counts for anything. A record of a kind not in
  :data:`~credence.record_kinds.KINDS` has no rehabilitation rule and never counts.
* An ``overturned`` record was found wrong and never counts.
* A record whose contest is still open at its ``contest_due_at`` (the dispute
  clock, FCRA §611) stops counting from then until the agency resolves the
  contest: it is compared with ``now`` here, beside the expiry, so nothing
  cached on record changes (the membership filter, the record generation)
  can keep counting it.
* Credit reads every other record: a ``settled`` default or a ``closed``
  account is still history until its rehabilitation ends, as a credit file
  would show it.
* A blacklist lists only on records of a kind that lists and whose status is
  in :data:`~credence.record_kinds.ACTIVE_STATUSES`: settling a debt lifts the
  listing at once.

Credit is evaluated for every scorecard characteristic that reads a kind the
agency declares in the manifest (``held_kinds``), over records of those kinds
only; with no record the characteristic scores its zero value, so every
answer from one agency covers the same characteristics. Batch screening
meets mostly subjects without records: :class:`Evaluator` computes that
answer once and returns it without looking at the clock or the scorecard.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from credence.encoding import require_utc
from credence.errors import InvalidInput
from credence.record_kinds import ACTIVE_STATUSES, KINDS
from credence.scorecard import MAX_REASON_CODES, reason_costs, validate_scorecard
from credence.v1 import agency_pb2, manifest_pb2

__all__ = [
    "NOT_COUNTING_STATUSES",
    "NOT_LISTED",
    "BlacklistAssertionFacts",
    "CreditFacts",
    "Evaluation",
    "Evaluator",
    "RecordFacts",
    "blacklist_assertion",
    "contest_overdue",
    "counts",
    "credit_contribution",
    "lists",
    "stops_counting_at",
    "to_blacklist_proto",
    "to_credit_proto",
]

#: Statuses whose records count for nothing at all.
NOT_COUNTING_STATUSES = frozenset({"overturned"})


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """One stored record as evaluation sees it; datetimes are aware UTC.

    ``expires_at`` is the record's explicit expiry, or ``None`` for the kind's
    rehabilitation period alone. ``contest_due_at`` is when its oldest open
    contest falls due, ``None`` without one. ``amount_minor`` and ``currency`` are carried
    for completeness and never read: no answer reveals them.
    """

    kind: str
    category: str
    status: str
    occurred_at: datetime
    expires_at: datetime | None
    disputed: bool
    amount_minor: int | None = None
    currency: str | None = None
    days_overdue: int | None = None
    contest_due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BlacklistAssertionFacts:
    """What a blacklist answer reveals; ``since``/``until`` are ``None`` when not listed."""

    listed: bool
    categories: tuple[str, ...]
    since: datetime | None
    until: datetime | None
    disputed: bool


@dataclass(frozen=True, slots=True)
class CreditFacts:
    """What a credit answer reveals: partial points and reason codes, most costly first."""

    partial_points: int
    reason_codes: tuple[str, ...]
    has_history: bool
    disputed: bool


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Both results for one subject."""

    blacklist: BlacklistAssertionFacts
    credit: CreditFacts


NOT_LISTED = BlacklistAssertionFacts(
    listed=False, categories=(), since=None, until=None, disputed=False
)


def stops_counting_at(record: RecordFacts) -> datetime | None:
    """When ``record`` stops counting, or ``None`` if its kind is unknown (never counts)."""
    rule = KINDS.get(record.kind)
    if rule is None:
        return None
    end = record.occurred_at + rule.rehabilitation
    if record.expires_at is not None and record.expires_at < end:
        return record.expires_at
    return end


def contest_overdue(record: RecordFacts, now: datetime) -> bool:
    """Whether ``record``'s open contest is past its due date at ``now``."""
    return record.contest_due_at is not None and record.contest_due_at <= now


def counts(record: RecordFacts, now: datetime) -> bool:
    """Whether ``record`` counts for credit at ``now``: not overturned, expired or overdue."""
    if record.status in NOT_COUNTING_STATUSES:
        return False
    due = record.contest_due_at
    if due is not None and due <= now:
        return False
    end = stops_counting_at(record)
    return end is not None and record.occurred_at <= now < end


def lists(record: RecordFacts, now: datetime) -> bool:
    """Whether ``record`` puts its subject on the blacklist at ``now``."""
    rule = KINDS.get(record.kind)
    return (
        rule is not None and rule.lists and record.status in ACTIVE_STATUSES and counts(record, now)
    )


def blacklist_assertion(records: Sequence[RecordFacts], now: datetime) -> BlacklistAssertionFacts:
    """The blacklist answer for one subject's records.

    Raises:
        ValueError: ``now`` is naive (a programming error).
    """
    now = require_utc(now, "now")
    listing = [record for record in records if lists(record, now)]
    if not listing:
        return NOT_LISTED
    ends = [stops_counting_at(record) for record in listing]
    return BlacklistAssertionFacts(
        listed=True,
        categories=tuple(sorted({record.category for record in listing})),
        since=min(record.occurred_at for record in listing),
        until=max(end for end in ends if end is not None),
        disputed=any(record.disputed for record in listing),
    )


def _whole_months(start: datetime, end: datetime) -> int:
    """Whole calendar months from ``start`` to ``end``; Jan 31 to Feb 28 is 0, to Mar 1 is 1."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    months = (end.year - start.year) * 12 + end.month - start.month
    if (end.day, end.timetz()) < (start.day, start.timetz()):
        months -= 1
    return max(months, 0)


def _count(records: Sequence[RecordFacts], _now: datetime) -> int:
    return len(records)


def _max_days_overdue(records: Sequence[RecordFacts], _now: datetime) -> int:
    return max((record.days_overdue or 0 for record in records), default=0)


def _months_of_history(records: Sequence[RecordFacts], now: datetime) -> int:
    if not records:
        return 0
    return _whole_months(min(record.occurred_at for record in records), now)


_MEASURES: dict[str, Callable[[Sequence[RecordFacts], datetime], int]] = {
    "count": _count,
    "max_days_overdue": _max_days_overdue,
    "months_of_history": _months_of_history,
}


@dataclass(frozen=True, slots=True)
class _Bin:
    lower: int
    upper: int | None
    points: int
    reason_code: str


@dataclass(frozen=True, slots=True)
class _Characteristic:
    measure: Callable[[Sequence[RecordFacts], datetime], int]
    kinds: frozenset[str]
    lookback: timedelta | None
    bins: tuple[_Bin, ...]

    def bin_for(self, value: int) -> _Bin:
        for score_bin in self.bins:
            if score_bin.upper is None or value < score_bin.upper:
                return score_bin
        # Unreachable for a validated scorecard: the last bin is unbounded.
        raise InvalidInput(f"value {value} has no bin")


def _compile(
    characteristic: manifest_pb2.ScoreCharacteristic, held: frozenset[str]
) -> _Characteristic:
    return _Characteristic(
        measure=_MEASURES[characteristic.measure],
        kinds=frozenset(characteristic.record_kinds) & held,
        lookback=(
            timedelta(days=characteristic.lookback_days) if characteristic.lookback_days else None
        ),
        bins=tuple(
            _Bin(
                lower=b.lower,
                upper=b.upper if b.HasField("upper") else None,
                points=b.points,
                reason_code=b.reason_code,
            )
            for b in characteristic.bins
        ),
    )


class Evaluator:
    """Evaluates subjects under one scorecard for one agency; build once, reuse.

    ``held_kinds`` are the record kinds the agency declares in the manifest.
    """

    __slots__ = ("_characteristics", "_empty_credit", "_held", "_ranks", "version")

    def __init__(self, scorecard: manifest_pb2.Scorecard, held_kinds: Collection[str]) -> None:
        """Validate the inputs and precompute the answer for a subject with no record.

        Raises:
            InvalidInput: the scorecard is invalid, or a held kind is not a
                record kind this node knows.
        """
        validate_scorecard(scorecard)
        unknown = sorted(set(held_kinds) - set(KINDS))
        if unknown:
            raise InvalidInput(
                f"held record kinds {', '.join(map(repr, unknown))} are not known to this node; "
                f"known: {', '.join(sorted(KINDS))}"
            )
        self.version: str = scorecard.version
        self._held = frozenset(held_kinds)
        self._characteristics = tuple(
            _compile(c, self._held)
            for c in scorecard.characteristics
            if not self._held.isdisjoint(c.record_kinds)
        )
        # Ties between equal costs go to scorecard order, as in the registry.
        self._ranks = {
            code: (-cost, index)
            for index, (code, cost) in enumerate(reason_costs(scorecard).items())
        }
        self._empty_credit = self._score([], datetime.fromtimestamp(0, UTC))

    @property
    def empty_credit(self) -> CreditFacts:
        """The credit answer for a subject with no record that counts."""
        return self._empty_credit

    def blacklist(self, records: Sequence[RecordFacts], now: datetime) -> BlacklistAssertionFacts:
        """The blacklist answer for one subject's records (see :func:`blacklist_assertion`).

        Raises:
            ValueError: ``now`` is naive (a programming error).
        """
        if not records:
            require_utc(now, "now")
            return NOT_LISTED
        return blacklist_assertion(records, now)

    def credit(self, records: Sequence[RecordFacts], now: datetime) -> CreditFacts:
        """The credit answer for one subject's records.

        Raises:
            ValueError: ``now`` is naive (a programming error).
        """
        now = require_utc(now, "now")
        if not records:
            return self._empty_credit
        counting = [r for r in records if r.kind in self._held and counts(r, now)]
        if not counting:
            return self._empty_credit
        return self._score(counting, now)

    def evaluate(self, records: Sequence[RecordFacts], now: datetime) -> Evaluation:
        """Both answers for one subject's records.

        Raises:
            ValueError: ``now`` is naive (a programming error).
        """
        return Evaluation(self.blacklist(records, now), self.credit(records, now))

    def _score(self, counting: Sequence[RecordFacts], now: datetime) -> CreditFacts:
        total = 0
        codes: list[str] = []
        history = disputed = False
        for characteristic in self._characteristics:
            start = None if characteristic.lookback is None else now - characteristic.lookback
            matched = [
                r
                for r in counting
                if r.kind in characteristic.kinds and (start is None or r.occurred_at >= start)
            ]
            if matched:
                history = True
                disputed = disputed or any(r.disputed for r in matched)
            score_bin = characteristic.bin_for(characteristic.measure(matched, now))
            total += score_bin.points
            if score_bin.reason_code:
                codes.append(score_bin.reason_code)
        codes.sort(key=self._ranks.__getitem__)
        return CreditFacts(
            partial_points=total,
            reason_codes=tuple(codes[:MAX_REASON_CODES]),
            has_history=history,
            disputed=disputed,
        )


def credit_contribution(
    records: Sequence[RecordFacts],
    scorecard: manifest_pb2.Scorecard,
    held_kinds: Collection[str],
    now: datetime,
) -> CreditFacts:
    """The credit answer for one subject; build an :class:`Evaluator` on hot paths.

    Raises:
        InvalidInput: the scorecard is invalid or a held kind is unknown.
        ValueError: ``now`` is naive (a programming error).
    """
    return Evaluator(scorecard, held_kinds).credit(records, now)


def to_blacklist_proto(facts: BlacklistAssertionFacts) -> agency_pb2.BlacklistAssertion:
    """The wire form of a blacklist answer: only the five revealed fields."""
    message = agency_pb2.BlacklistAssertion(
        listed=facts.listed, categories=facts.categories, disputed=facts.disputed
    )
    if facts.since is not None:
        message.since.FromDatetime(facts.since)
    if facts.until is not None:
        message.until.FromDatetime(facts.until)
    return message


def to_credit_proto(facts: CreditFacts, version: str) -> agency_pb2.CreditContribution:
    """The wire form of a credit answer under scorecard ``version``."""
    return agency_pb2.CreditContribution(
        partial_points=facts.partial_points,
        reason_codes=facts.reason_codes,
        scorecard_version=version,
        disputed=facts.disputed,
        has_history=facts.has_history,
    )
