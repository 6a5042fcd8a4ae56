"""Tests for agency_node.evaluation: what counts, blacklist and credit answers, wire forms."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agency_node.evaluation import (
    NOT_LISTED,
    BlacklistAssertionFacts,
    CreditFacts,
    Evaluator,
    RecordFacts,
    _whole_months,
    blacklist_assertion,
    counts,
    credit_contribution,
    lists,
    stops_counting_at,
    to_blacklist_proto,
    to_credit_proto,
)
from credence.errors import InvalidInput
from credence.record_kinds import KINDS
from credence.scorecard import aggregate_credit, default_scorecard

NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
YEAR = timedelta(days=365)
SC = default_scorecard()
ALL_KINDS = frozenset(KINDS)
EVALUATOR = Evaluator(SC, ALL_KINDS)


def rec(kind: str, **overrides: Any) -> RecordFacts:
    fields: dict[str, Any] = {
        "kind": kind,
        "category": sorted(KINDS[kind].categories)[0],
        "status": "active",
        "occurred_at": NOW - 30 * DAY,
        "expires_at": None,
        "disputed": False,
        "amount_minor": 123_456_789,
        "currency": "EUR",
        "days_overdue": None,
    }
    fields.update(overrides)
    return RecordFacts(**fields)


def credit(*records: RecordFacts, now: datetime = NOW) -> CreditFacts:
    return EVALUATOR.credit(records, now)


# --- when a record counts ----------------------------------------------------


def test_explicit_expiry_one_second_before_and_after() -> None:
    record = rec("court_judgment", expires_at=NOW + SECOND)
    assert counts(record, NOW)
    assert lists(record, NOW)
    assert not counts(record, NOW + SECOND)
    assert not lists(record, NOW + SECOND)
    assert not counts(record, NOW + 2 * SECOND)


def test_rehabilitation_period_ends_counting() -> None:
    period = KINDS["court_judgment"].rehabilitation
    assert counts(rec("court_judgment", occurred_at=NOW - period + SECOND), NOW)
    assert not counts(rec("court_judgment", occurred_at=NOW - period), NOW)


def test_explicit_expiry_cannot_extend_rehabilitation() -> None:
    period = KINDS["late_payment"].rehabilitation
    record = rec("late_payment", occurred_at=NOW - period - SECOND, expires_at=NOW + 10 * YEAR)
    assert stops_counting_at(record) == NOW - SECOND
    assert not counts(record, NOW)


def test_future_record_does_not_count_yet() -> None:
    record = rec("court_judgment", occurred_at=NOW + SECOND)
    assert not counts(record, NOW)
    assert counts(record, NOW + SECOND)


def test_unknown_kind_never_counts() -> None:
    record = RecordFacts("parking_ticket", "x", "active", NOW - DAY, None, disputed=False)
    assert stops_counting_at(record) is None
    assert not counts(record, NOW)
    assert not lists(record, NOW)


@pytest.mark.parametrize(
    ("status", "counts_for_credit", "lists_subject"),
    [
        ("active", True, True),
        ("settled", True, False),
        ("closed", True, False),
        ("overturned", False, False),
    ],
)
def test_status_decides(status: str, counts_for_credit: bool, lists_subject: bool) -> None:
    record = rec("court_judgment", status=status)
    assert counts(record, NOW) is counts_for_credit
    assert lists(record, NOW) is lists_subject


def test_only_listing_kinds_list() -> None:
    for kind, rule in KINDS.items():
        assert lists(rec(kind), NOW) is rule.lists


# --- blacklist ---------------------------------------------------------------


def test_no_records_not_listed() -> None:
    assert blacklist_assertion([], NOW) == NOT_LISTED
    assert EVALUATOR.blacklist([], NOW) is NOT_LISTED


def test_listing_merges_categories_since_until_disputed() -> None:
    judgment_early = rec("court_judgment", category="judgment_debt", occurred_at=NOW - 400 * DAY)
    judgment_late = rec("court_judgment", category="dishonest_debtor", occurred_at=NOW - 10 * DAY)
    judgment_again = rec("court_judgment", category="judgment_debt", occurred_at=NOW - 20 * DAY)
    arrears = rec(
        "tax_arrears",
        category="tax_arrears",
        occurred_at=NOW - 100 * DAY,
        expires_at=NOW + 3000 * DAY,  # capped by the 3-year period
        disputed=True,
    )
    facts = blacklist_assertion([judgment_early, judgment_late, judgment_again, arrears], NOW)
    assert facts == BlacklistAssertionFacts(
        listed=True,
        categories=("dishonest_debtor", "judgment_debt", "tax_arrears"),
        since=NOW - 400 * DAY,
        until=NOW - 10 * DAY + KINDS["court_judgment"].rehabilitation,
        disputed=True,
    )
    assert EVALUATOR.blacklist([judgment_early, arrears], NOW) == blacklist_assertion(
        [judgment_early, arrears], NOW
    )


def test_until_is_latest_end_including_explicit_expiry() -> None:
    short = rec("fraud_flag", occurred_at=NOW - 100 * DAY, expires_at=NOW + 5 * DAY)
    long = rec("bankruptcy", occurred_at=NOW - 50 * DAY, expires_at=NOW + 7 * DAY)
    facts = blacklist_assertion([short, long], NOW)
    assert (facts.since, facts.until) == (NOW - 100 * DAY, NOW + 7 * DAY)


def test_records_that_do_not_list_are_ignored_even_if_disputed() -> None:
    records = [
        rec("court_judgment", status="settled", disputed=True),
        rec("court_judgment", status="overturned", disputed=True),
        rec("court_judgment", expires_at=NOW, disputed=True),
        rec("loan_default", disputed=True),
        rec("late_payment", disputed=True, days_overdue=120),
    ]
    assert blacklist_assertion(records, NOW) == NOT_LISTED
    listed = blacklist_assertion([*records, rec("fraud_flag", category="fraud")], NOW)
    assert listed.listed
    assert listed.categories == ("fraud",)
    assert listed.disputed is False


def test_blacklist_expiry_one_second() -> None:
    record = rec("tax_arrears", expires_at=NOW + SECOND)
    assert blacklist_assertion([record], NOW).listed
    assert blacklist_assertion([record], NOW + SECOND) == NOT_LISTED


# --- credit: the zero value and the held kinds ----------------------------------


def test_no_records_scores_zero_values_with_short_history_code() -> None:
    facts = credit()
    assert facts == CreditFacts(
        partial_points=0, reason_codes=("H01",), has_history=False, disputed=False
    )
    assert facts is EVALUATOR.empty_credit


@pytest.mark.parametrize(
    ("held", "codes"),
    [
        ({"court_judgment"}, ()),
        ({"payment_history"}, ("H01",)),
        ({"court_judgment", "late_payment", "payment_history"}, ("H01",)),
    ],
)
def test_empty_answer_depends_on_held_kinds(held: set[str], codes: tuple[str, ...]) -> None:
    evaluator = Evaluator(SC, held)
    assert evaluator.credit([], NOW) == CreditFacts(0, codes, has_history=False, disputed=False)
    assert evaluator.version == SC.version


def test_records_of_kinds_not_held_are_ignored() -> None:
    evaluator = Evaluator(SC, {"payment_history"})
    facts = evaluator.credit([rec("court_judgment", disputed=True)], NOW)
    assert facts == evaluator.empty_credit


def test_records_that_do_not_count_give_the_empty_answer() -> None:
    records = [
        rec("court_judgment", status="overturned", disputed=True),
        rec("loan_default", expires_at=NOW),
    ]
    assert credit(*records) is EVALUATOR.empty_credit


# --- credit: measures and bin edges -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "number", "points", "codes"),
    [
        ("court_judgment", 1, -120, ("J01", "H01")),
        ("court_judgment", 2, -200, ("J02", "H01")),
        ("court_judgment", 5, -200, ("J02", "H01")),
        ("tax_arrears", 1, -80, ("H01", "T01")),
        ("tax_arrears", 2, -140, ("T02", "H01")),
        ("fraud_flag", 1, -250, ("F01", "H01")),
        ("fraud_flag", 3, -250, ("F01", "H01")),
        ("bankruptcy", 1, -220, ("B01", "H01")),
        ("loan_default", 1, -100, ("D01", "H01")),
        ("loan_default", 2, -170, ("D02", "H01")),
    ],
)
def test_count_measures(kind: str, number: int, points: int, codes: tuple[str, ...]) -> None:
    # Codes rank by cost: H01 (no payment history) costs 90 points.
    facts = credit(*[rec(kind, occurred_at=NOW - (i + 1) * DAY) for i in range(number)])
    assert (facts.partial_points, facts.reason_codes) == (points, codes)
    assert facts.has_history


@pytest.mark.parametrize(
    ("days", "points", "codes"),
    [
        (None, 0, ("H01",)),
        (0, 0, ("H01",)),
        (29, 0, ("H01",)),
        (30, -20, ("H01", "L01")),
        (59, -20, ("H01", "L01")),
        (60, -50, ("H01", "L02")),
        (89, -50, ("H01", "L02")),
        # L03 and H01 both cost 90; L03 comes first in the scorecard.
        (90, -90, ("L03", "H01")),
        (400, -90, ("L03", "H01")),
    ],
)
def test_max_days_overdue_edges(days: int | None, points: int, codes: tuple[str, ...]) -> None:
    facts = credit(rec("late_payment", days_overdue=days))
    assert (facts.partial_points, facts.reason_codes) == (points, codes)
    assert facts.has_history


def test_max_days_overdue_takes_the_worst() -> None:
    facts = credit(
        rec("late_payment", days_overdue=10),
        # Outside the one-year count, inside the two-year worst: only the worst sees it.
        rec("late_payment", days_overdue=65, occurred_at=NOW - 400 * DAY),
        rec("late_payment", days_overdue=31),
    )
    assert facts.partial_points == -50
    assert facts.reason_codes == ("H01", "L02")


@pytest.mark.parametrize(
    ("number", "points", "codes"),
    [
        (2, 0, ("H01",)),
        (3, -30, ("H01", "L04")),
        (5, -30, ("H01", "L04")),
        (6, -60, ("H01", "L05")),
    ],
)
def test_late_payment_count_edges(number: int, points: int, codes: tuple[str, ...]) -> None:
    records = [rec("late_payment", occurred_at=NOW - (i + 1) * DAY) for i in range(number)]
    facts = credit(*records)
    assert (facts.partial_points, facts.reason_codes) == (points, codes)


def test_lookback_edge_one_second() -> None:
    # late_payments_1y looks back 365 days; worst_late_payment_2y 730.
    inside = [rec("late_payment", occurred_at=NOW - 365 * DAY) for _ in range(3)]
    outside = [rec("late_payment", occurred_at=NOW - 365 * DAY - SECOND) for _ in range(3)]
    assert credit(*inside).partial_points == -30
    assert credit(*outside).partial_points == 0
    assert credit(*outside).has_history


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC), 0),
        (datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), 1),
        (datetime(2026, 1, 15, 10, tzinfo=UTC), datetime(2026, 7, 15, 10, tzinfo=UTC), 6),
        (datetime(2026, 1, 15, 10, tzinfo=UTC), datetime(2026, 7, 15, 9, 59, tzinfo=UTC), 5),
        (datetime(2025, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), 13),
        (datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), 0),
    ],
)
def test_whole_months(start: datetime, end: datetime, months: int) -> None:
    assert _whole_months(start, end) == months


@pytest.mark.parametrize(
    ("occurred_at", "points", "codes"),
    [
        (datetime(2026, 5, 28, 10, 0, 1, tzinfo=UTC), 0, ("H01",)),
        (datetime(2026, 5, 28, 10, 0, 0, tzinfo=UTC), 30, ("H02",)),
        (datetime(2025, 11, 28, 10, 0, 1, tzinfo=UTC), 30, ("H02",)),
        (datetime(2025, 11, 28, 10, 0, 0, tzinfo=UTC), 60, ("H03",)),
        (datetime(2025, 5, 28, 10, 0, 1, tzinfo=UTC), 60, ("H03",)),
        (datetime(2025, 5, 28, 10, 0, 0, tzinfo=UTC), 90, ()),
    ],
)
def test_months_of_history_edges(
    occurred_at: datetime, points: int, codes: tuple[str, ...]
) -> None:
    facts = credit(rec("payment_history", occurred_at=occurred_at))
    assert (facts.partial_points, facts.reason_codes) == (points, codes)
    assert facts.has_history


def test_months_of_history_uses_earliest_counting_record() -> None:
    period = KINDS["payment_history"].rehabilitation
    records = [
        rec("payment_history", occurred_at=NOW - 30 * DAY),
        rec("payment_history", occurred_at=datetime(2025, 5, 1, tzinfo=UTC)),
        # Expired: its age must not lengthen the history.
        rec("payment_history", occurred_at=NOW - period),
    ]
    assert credit(*records).partial_points == 90
    assert credit(records[0]).reason_codes == ("H01",)


# --- credit: statuses, expiry, disputes, reason codes ------------------------


def test_settled_default_still_counts_overturned_does_not() -> None:
    assert credit(rec("loan_default", status="settled")).reason_codes == ("D01", "H01")
    assert credit(rec("loan_default", status="closed")).partial_points == -100
    assert credit(rec("loan_default", status="overturned")) is EVALUATOR.empty_credit


def test_credit_expiry_one_second() -> None:
    record = rec("loan_default", expires_at=NOW + SECOND)
    assert credit(record, now=NOW).partial_points == -100
    assert credit(record, now=NOW + SECOND) == EVALUATOR.empty_credit


def test_disputed_propagates_from_counted_records_only() -> None:
    assert credit(rec("court_judgment", disputed=True)).disputed
    assert credit(rec("payment_history", disputed=True, occurred_at=NOW - 400 * DAY)).disputed
    assert not credit(
        rec("court_judgment"), rec("loan_default", disputed=True, expires_at=NOW)
    ).disputed
    assert not credit(rec("court_judgment", status="overturned", disputed=True)).disputed
    # A later characteristic with undisputed records must not clear an earlier dispute.
    assert credit(rec("court_judgment", disputed=True), rec("payment_history")).disputed


def test_at_most_four_reason_codes_most_costly_first() -> None:
    records = [
        *[rec("court_judgment", occurred_at=NOW - i * DAY) for i in (1, 2)],
        *[rec("tax_arrears", occurred_at=NOW - i * DAY) for i in (1, 2)],
        *[rec("loan_default", occurred_at=NOW - i * DAY) for i in (1, 2)],
        rec("fraud_flag"),
        rec("bankruptcy"),
        rec("late_payment", days_overdue=45),
    ]
    facts = credit(*records)
    assert facts.reason_codes == ("F01", "B01", "J02", "D02")
    # All eight characteristics contribute points, reported or not.
    assert facts.partial_points == -200 - 140 - 250 - 220 - 170 - 20 + 0 + 0


def test_credit_contribution_function_matches_evaluator() -> None:
    records = [rec("loan_default"), rec("payment_history", occurred_at=NOW - 200 * DAY)]
    assert credit_contribution(records, SC, ALL_KINDS, NOW) == EVALUATOR.credit(records, NOW)


def test_evaluate_returns_both() -> None:
    records = [rec("court_judgment", category="dishonest_debtor")]
    evaluation = EVALUATOR.evaluate(records, NOW)
    assert evaluation.blacklist == blacklist_assertion(records, NOW)
    assert evaluation.credit == EVALUATOR.credit(records, NOW)


def test_node_answers_aggregate_at_the_registry() -> None:
    clean = Evaluator(SC, {"payment_history", "late_payment"}).credit(
        [rec("payment_history", occurred_at=NOW - 600 * DAY)], NOW
    )
    court = Evaluator(SC, {"court_judgment", "tax_arrears"}).credit([rec("court_judgment")], NOW)
    outcome = aggregate_credit(SC, [(f.partial_points, f.reason_codes) for f in (clean, court)])
    assert outcome.score == SC.base_points + 90 - 120
    assert outcome.reason_codes == ("J01",)
    assert not outcome.provisional


# --- refusals ----------------------------------------------------------------


def test_evaluator_refuses_unknown_held_kind() -> None:
    with pytest.raises(InvalidInput, match=r"held record kinds 'parking_ticket' are not known"):
        Evaluator(SC, {"court_judgment", "parking_ticket"})


def test_evaluator_refuses_invalid_scorecard() -> None:
    broken = default_scorecard()
    broken.bands[1].lower += 1
    with pytest.raises(InvalidInput, match=r"band 2 \('poor'\): lower 551 leaves a gap"):
        Evaluator(broken, ALL_KINDS)


def test_naive_now_is_refused_even_on_the_empty_path() -> None:
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        EVALUATOR.credit([], naive)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        EVALUATOR.blacklist([], naive)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        blacklist_assertion([rec("court_judgment")], naive)


def test_facts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EVALUATOR.empty_credit.partial_points = 5  # type: ignore[misc]


# --- wire forms: only the revealed fields ---------------------------------------


def test_blacklist_proto_listed() -> None:
    records = [
        rec("court_judgment", category="dishonest_debtor", disputed=True, amount_minor=987_654_321),
        rec("tax_arrears", category="tax_evasion", occurred_at=NOW - 90 * DAY),
    ]
    facts = blacklist_assertion(records, NOW)
    message = to_blacklist_proto(facts)
    assert {field.name for field, _ in message.ListFields()} == {
        "listed",
        "categories",
        "since",
        "until",
        "disputed",
    }
    assert message.listed
    assert list(message.categories) == ["dishonest_debtor", "tax_evasion"]
    assert message.since.ToDatetime(tzinfo=UTC) == NOW - 90 * DAY
    assert message.until.ToDatetime(tzinfo=UTC) == facts.until
    assert message.disputed
    wire = message.SerializeToString()
    assert b"EUR" not in wire
    assert (987_654_321).to_bytes(4, "little") not in wire


def test_blacklist_proto_not_listed_sets_nothing() -> None:
    message = to_blacklist_proto(NOT_LISTED)
    assert message.ListFields() == []
    assert not message.HasField("since")
    assert not message.HasField("until")


def test_credit_proto_carries_only_points_codes_version_flags() -> None:
    facts = credit(rec("loan_default", disputed=True, amount_minor=5_000_000, currency="GBP"))
    message = to_credit_proto(facts, SC.version)
    assert {field.name for field, _ in message.ListFields()} == {
        "partial_points",
        "reason_codes",
        "scorecard_version",
        "disputed",
        "has_history",
    }
    assert message.partial_points == -100
    assert list(message.reason_codes) == ["D01", "H01"]
    assert message.scorecard_version == SC.version
    assert b"GBP" not in message.SerializeToString()


def test_answer_messages_define_no_other_field() -> None:
    # If someone adds an amount or record id to the wire messages, this fails.
    blacklist_fields = {f.name for f in to_blacklist_proto(NOT_LISTED).DESCRIPTOR.fields}
    credit_fields = {f.name for f in to_credit_proto(EVALUATOR.empty_credit, "v").DESCRIPTOR.fields}
    assert blacklist_fields == {"listed", "categories", "since", "until", "disputed"}
    assert credit_fields == {
        "partial_points",
        "reason_codes",
        "scorecard_version",
        "disputed",
        "has_history",
    }
