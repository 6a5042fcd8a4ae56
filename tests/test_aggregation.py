from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from central_registry.aggregation import Recovery, aggregate
from central_registry.outcomes import AgencyOutcome
from credence.blind.layout import for_scorecard
from credence.blind.sums import MOD
from credence.scorecard import Aggregator, default_scorecard
from credence.v1 import agency_pb2, common_pb2, registry_pb2

BL = common_pb2.VERDICT_KIND_BLACKLIST
CR = common_pb2.VERDICT_KIND_CREDIT
BOTH = (BL, CR)
ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED
TIMEOUT = common_pb2.COVERAGE_STATE_TIMEOUT
UNAVAILABLE = common_pb2.COVERAGE_STATE_UNAVAILABLE
REFUSED = common_pb2.COVERAGE_STATE_REFUSED
INVALID = common_pb2.COVERAGE_STATE_INVALID_ANSWER
CLEAR = common_pb2.BLACKLIST_STATUS_CLEAR
LISTED = common_pb2.BLACKLIST_STATUS_LISTED
INCOMPLETE = common_pb2.BLACKLIST_STATUS_INCOMPLETE

AGGREGATOR = Aggregator(default_scorecard())
LAYOUT = for_scorecard(default_scorecard())
VERSION = AGGREGATOR.version
NOW = datetime(2026, 11, 28, 10, 0, 0, tzinfo=UTC)
SUBJECT = common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes(range(32)))
PROMISE = common_pb2.Envelope(
    payload_type="application/vnd.credence.log-promise.v1+proto",
    payload=b"promise",
    signatures=[common_pb2.Signature(keyid="log", sig=b"s" * 64)],
)


def digest(member: str) -> bytes:
    return hashlib.sha256(member.encode()).digest()


def answered(
    member: str,
    *,
    listed: bool = False,
    categories: Sequence[str] = (),
    disputed: bool = False,
    points: int = 0,
    codes: Sequence[str] = (),
    credit_disputed: bool = False,
    parts: Sequence[int] = BOTH,
) -> AgencyOutcome:
    """The answer as a node sends it: a vector (unmasked: a test audience of plain sums)."""
    vector = LAYOUT.fill(
        agency_pb2.BlacklistAssertion(listed=listed, categories=categories, disputed=disputed)
        if BL in parts
        else None,
        agency_pb2.CreditContribution(
            partial_points=points, reason_codes=codes, disputed=credit_disputed
        )
        if CR in parts
        else None,
    )
    answer = agency_pb2.Answer(
        query_id="q-1",
        agency=member,
        masked=[value % MOD for value in vector],
        layout_id=LAYOUT.layout_id,
    )
    return AgencyOutcome(member, ANSWERED, answer=answer, answer_hash=digest(member))


def fitted(outcome: AgencyOutcome, kinds: Sequence[int]) -> AgencyOutcome:
    """Zeros in the slots of the parts that were not asked, as a node fills them."""
    if outcome.answer is None:
        return outcome
    answer = agency_pb2.Answer()
    answer.CopyFrom(outcome.answer)
    if BL not in kinds:
        answer.masked[: LAYOUT.points_index] = [0] * LAYOUT.points_index
    if CR not in kinds:
        answer.masked[LAYOUT.points_index :] = [0] * (LAYOUT.length - LAYOUT.points_index)
    return replace(outcome, answer=answer)


def zero_shares(outcomes: Sequence[AgencyOutcome]) -> Recovery:
    """Recovery shares of plain (unmasked) answers: all zeros."""
    return Recovery(
        shares={o.member_id: [0] * LAYOUT.length for o in outcomes if o.state == ANSWERED}
    )


def failed(member: str, state: int, reason: str = "") -> AgencyOutcome:
    return AgencyOutcome(member, state, reason=reason or f"{member} did not answer")


def build(
    outcomes: Sequence[AgencyOutcome],
    kinds: Sequence[int] = BOTH,
    *,
    contributors: Mapping[int, Set[str]] | None = None,
    log_promise: common_pb2.Envelope | None = PROMISE,
    fit: bool = True,
    recovery: Recovery | None = None,
) -> registry_pb2.Verdict:
    """Aggregate; ``fit`` drops the parts of each answer that were not asked, as a node does."""
    if fit:
        outcomes = [fitted(outcome, kinds) for outcome in outcomes]
    return aggregate(
        verdict_id="v-1",
        query_id="q-1",
        subject=SUBJECT,
        requester="acme",
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        kinds=kinds,
        grant_id="g-1",
        outcomes=outcomes,
        aggregator=AGGREGATOR,
        layout=LAYOUT,
        scorecard_version=VERSION,
        log_promise=log_promise,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        contributors=contributors,
        recovery=recovery if recovery is not None else zero_shares(outcomes),
    ).verdict


def states(verdict: registry_pb2.Verdict) -> list[int]:
    return [agency.state for agency in verdict.coverage.agencies]


# --------------------------------------------------------------- blacklist


@dataclass(frozen=True)
class BlacklistCase:
    name: str
    outcomes: tuple[AgencyOutcome, ...]
    status: int


BLACKLIST_CASES = [
    BlacklistCase("all answered, none lists", (answered("a"), answered("b"), answered("c")), CLEAR),
    BlacklistCase(
        "one times out", (answered("a"), failed("b", TIMEOUT), answered("c")), INCOMPLETE
    ),
    BlacklistCase("one refused", (answered("a"), failed("b", REFUSED)), INCOMPLETE),
    BlacklistCase("one unavailable", (failed("a", UNAVAILABLE), answered("b")), INCOMPLETE),
    BlacklistCase("one invalid answer", (answered("a"), failed("b", INVALID)), INCOMPLETE),
    BlacklistCase(
        "one lists, one times out",
        (answered("a", listed=True, categories=["fraud"]), failed("b", TIMEOUT)),
        LISTED,
    ),
    BlacklistCase("all listing", (answered("a", listed=True), answered("b", listed=True)), LISTED),
    BlacklistCase("nobody answered", (failed("a", TIMEOUT), failed("b", TIMEOUT)), INCOMPLETE),
    BlacklistCase("no agency at all", (), INCOMPLETE),
]


@pytest.mark.parametrize("case", BLACKLIST_CASES, ids=lambda case: case.name)
def test_blacklist_status_table(case: BlacklistCase) -> None:
    verdict = build(case.outcomes, kinds=[BL])
    assert verdict.blacklist.status == case.status
    assert not verdict.HasField("credit")
    if case.status != LISTED:
        assert list(verdict.blacklist.categories) == []
        assert verdict.blacklist.listing_agencies == 0


def test_listing_categories_are_the_sorted_union_and_disputed_is_any() -> None:
    verdict = build(
        [
            answered("a", listed=True, categories=["tax_evasion", "dishonest_debtor"]),
            answered("b"),
            answered(
                "c", listed=True, categories=["dishonest_debtor", "bankruptcy"], disputed=True
            ),
        ],
        kinds=[BL],
    )
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(
        status=LISTED,
        categories=["bankruptcy", "dishonest_debtor", "tax_evasion"],
        disputed=True,
        listing_agencies=2,
    )


def test_a_disputed_flag_on_a_non_listing_answer_does_not_count() -> None:
    verdict = build([answered("a", listed=True), answered("b", disputed=True)], kinds=[BL])
    assert not verdict.blacklist.disputed


def test_incomplete_carries_no_categories_even_when_an_answer_sent_some() -> None:
    verdict = build([answered("a", categories=["fraud"]), failed("b", TIMEOUT)], kinds=[BL])
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(status=INCOMPLETE)


# ------------------------------------------------------------------ credit


@pytest.mark.parametrize(
    ("points", "score", "band"),
    [
        ((0, 0), 680, "fair"),
        ((-200, -130), 350, "very poor"),
        ((-1130, -1130), 350, "very poor"),
        ((90, 60), 830, "very good"),
        ((90, 90), 860, "excellent"),
        ((-131, 0), 549, "very poor"),
        ((-130, 0), 550, "poor"),
    ],
)
def test_credit_score_is_base_plus_points_clamped_with_band(
    points: tuple[int, int], score: int, band: str
) -> None:
    verdict = build([answered("a", points=points[0]), answered("b", points=points[1])], [CR])
    assert (verdict.credit.score, verdict.credit.band) == (score, band)
    assert not verdict.credit.provisional
    assert not verdict.HasField("blacklist")


def test_reason_codes_are_at_most_four_ranked_by_cost() -> None:
    verdict = build(
        [
            answered("a", points=-500, codes=["L01", "J02", "H01"]),
            answered("b", points=-500, codes=["F01", "T01", "B01"]),
        ],
        [CR],
    )
    # Costs: F01 250, B01 220, J02 200, T01 80, H01 90, L01 20.
    assert list(verdict.credit.reason_codes) == ["F01", "B01", "J02", "H01"]


def test_fewer_answers_than_the_scorecard_requires_is_provisional() -> None:
    verdict = build([answered("a", points=-120, codes=["J01"])], [CR])
    assert verdict.credit.score == 560
    assert verdict.credit.provisional


def test_fewer_answers_than_contributors_is_provisional_even_above_the_requirement() -> None:
    verdict = build([answered("a"), answered("b"), failed("c", TIMEOUT)], [CR])
    assert verdict.credit.provisional
    assert not build([answered("a"), answered("b"), answered("c")], [CR]).credit.provisional


def test_no_credit_answer_at_all_gives_the_base_score_provisionally() -> None:
    verdict = build([failed("a", TIMEOUT), failed("b", REFUSED)], [CR])
    assert verdict.credit == registry_pb2.CreditVerdict(score=680, band="fair", provisional=True)


def test_credit_disputed_is_any_answering_agency_disputed() -> None:
    assert build([answered("a"), answered("b", credit_disputed=True)], [CR]).credit.disputed
    assert not build([answered("a"), answered("b")], [CR]).credit.disputed


def test_an_answer_of_another_layout_is_invalid_and_counts_as_missing() -> None:
    other = answered("b", points=-300, codes=["F01"])
    assert other.answer is not None
    other.answer.layout_id = "credence-scorecard-v0/0000000000000000"
    verdict = build([answered("a", points=-80, codes=["T01"]), other])
    assert states(verdict) == [ANSWERED, INVALID]
    assert verdict.coverage.agencies[1].reason == (
        f"answer follows layout 'credence-scorecard-v0/0000000000000000', not {LAYOUT.layout_id!r}"
    )
    assert (verdict.credit.score, verdict.credit.provisional) == (600, True)
    assert list(verdict.credit.reason_codes) == ["T01"]
    # An answer the verdict cannot use counts for the blacklist no more than for credit.
    assert verdict.blacklist.status == INCOMPLETE
    assert list(verdict.answer_hashes) == [digest("a")]


# ------------------------------------------------------ answers out of shape


def _cleartext() -> AgencyOutcome:
    """A vector answer that also carries the old cleartext blacklist part (field 5)."""
    outcome = answered("b")
    assert outcome.answer is not None
    part = agency_pb2.BlacklistAssertion(listed=True).SerializeToString()
    payload = outcome.answer.SerializeToString() + bytes([5 << 3 | 2, len(part)]) + part
    return replace(outcome, answer=agency_pb2.Answer.FromString(payload))


def _short() -> AgencyOutcome:
    outcome = answered("b")
    assert outcome.answer is not None
    del outcome.answer.masked[-1]
    return outcome


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (
            _cleartext(),
            "answer carries fields outside the masked answer (a cleartext part?); "
            "answers are masked vectors (docs/protocol.md section 10)",
        ),
        (
            _short(),
            f"answer has {LAYOUT.length - 1} vector words; "
            f"layout {LAYOUT.layout_id} has {LAYOUT.length}",
        ),
        (AgencyOutcome("b", ANSWERED), "answered without an answer message"),
    ],
    ids=["cleartext", "short", "no answer"],
)
def test_an_answer_that_is_not_a_vector_of_the_layout_is_invalid(
    outcome: AgencyOutcome, reason: str
) -> None:
    # Not fitted: aggregate sees b's answer as it came.
    verdict = aggregate(
        verdict_id="v-1", query_id="q-1", subject=SUBJECT, requester="acme",
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT, kinds=BOTH, grant_id="",
        outcomes=[answered("a"), outcome], aggregator=AGGREGATOR, layout=LAYOUT,
        scorecard_version=VERSION, log_promise=None, issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        recovery=Recovery(shares={"a": [0] * LAYOUT.length}),
    ).verdict  # fmt: skip
    assert states(verdict) == [ANSWERED, INVALID]
    assert verdict.coverage.agencies[1].reason == reason
    assert verdict.coverage.answered == 1
    assert list(verdict.answer_hashes) == [digest("a")]


@pytest.mark.parametrize(
    ("kinds", "slot"), [((BL,), "credit_points"), ((CR,), "listed")], ids=["credit", "blacklist"]
)
def test_a_part_that_was_not_asked_makes_the_sum_impossible(
    kinds: tuple[int, ...], slot: str
) -> None:
    verdict = build(
        [answered("a", parts=kinds), answered("b", listed=True, points=-100)], kinds, fit=False
    )
    assert verdict.incomplete_reason.startswith(f"the answers' sum is impossible: the {slot} sum")
    if BL in kinds:
        assert verdict.blacklist == registry_pb2.BlacklistVerdict(status=INCOMPLETE)
    else:
        assert verdict.credit == registry_pb2.CreditVerdict(
            score=680, band="fair", provisional=True
        )
    assert states(verdict) == [ANSWERED, ANSWERED]


def test_an_impossible_sum_is_incomplete_with_the_reason() -> None:
    five = answered("b", parts=[BL])
    assert five.answer is not None
    five.answer.masked[LAYOUT.listed_index] = 5
    verdict = build([answered("a", parts=[BL]), five], [BL])
    assert verdict.incomplete_reason == (
        "the answers' sum is impossible: the listed sum 5 is outside 0..2 for 2 answering agencies"
    )
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(status=INCOMPLETE)


def test_missing_recovery_shares_make_the_verdict_incomplete() -> None:
    outcomes = [answered("a", listed=True, parts=[BL]), failed("b", TIMEOUT)]
    failure = "an answering agency gave no recovery share (a: no recovery share within 2.0 s)"
    verdict = build(outcomes, [BL], recovery=Recovery(failure=failure))
    assert verdict.incomplete_reason == failure
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(status=INCOMPLETE)
    without = build(outcomes, [BL], recovery=Recovery(shares={}))
    assert without.incomplete_reason == "agency a answered but gave no usable recovery share"
    assert build(outcomes, [BL]).blacklist.status == LISTED


def test_recovery_shares_are_removed_from_the_sum() -> None:
    share = [3] * LAYOUT.length
    noisy = answered("a", listed=True, categories=["fraud"], parts=[BL])
    assert noisy.answer is not None
    noisy.answer.masked[:] = [(v + 3) % MOD for v in noisy.answer.masked]
    verdict = build(
        [noisy, failed("b", TIMEOUT)], [BL], recovery=Recovery(shares={"a": share}), fit=False
    )
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(
        status=LISTED, categories=["fraud"], listing_agencies=1
    )


def test_an_invalid_listing_answer_does_not_list() -> None:
    listing = answered("b", listed=True, parts=[BL])
    assert listing.answer is not None
    listing.answer.layout_id = "another"
    verdict = build([answered("a", parts=[BL]), listing], BOTH, fit=False)
    assert verdict.blacklist.status == INCOMPLETE


# ---------------------------------------------------------------- coverage


def test_coverage_lists_every_agency_in_order_with_state_reason_and_hash() -> None:
    verdict = build(
        [
            answered("a"),
            failed("b", TIMEOUT, "no answer within 250 ms"),
            answered("c", listed=True),
            failed("d", REFUSED, "PERMISSION_DENIED: grant revoked"),
        ]
    )
    assert verdict.coverage == common_pb2.Coverage(
        agencies=[
            common_pb2.AgencyCoverage(member_id="a", state=ANSWERED, answer_hash=digest("a")),
            common_pb2.AgencyCoverage(
                member_id="b", state=TIMEOUT, reason="no answer within 250 ms"
            ),
            common_pb2.AgencyCoverage(member_id="c", state=ANSWERED, answer_hash=digest("c")),
            common_pb2.AgencyCoverage(
                member_id="d", state=REFUSED, reason="PERMISSION_DENIED: grant revoked"
            ),
        ],
        answered=2,
        expected=4,
    )
    assert list(verdict.answer_hashes) == [digest("a"), digest("c")]


def test_verdict_carries_the_lookup_fields() -> None:
    verdict = build([answered("a"), answered("b")])
    assert verdict.verdict_id == "v-1"
    assert verdict.query_id == "q-1"
    assert verdict.subject == SUBJECT
    assert verdict.requester == "acme"
    assert verdict.purpose == common_pb2.PURPOSE_CREDIT_ASSESSMENT
    assert list(verdict.kinds) == [BL, CR]
    assert verdict.grant_id == "g-1"
    assert verdict.scorecard_version == VERSION
    assert verdict.log_promise == PROMISE
    assert verdict.issued_at.ToDatetime(tzinfo=UTC) == NOW
    assert verdict.expires_at.ToDatetime(tzinfo=UTC) == NOW + timedelta(hours=1)
    assert not build([answered("a")], log_promise=None).HasField("log_promise")


# ------------------------------------------------------------ contributors


def test_contributors_restrict_each_kind_to_its_own_agencies() -> None:
    contributors: dict[int, frozenset[str]] = {
        BL: frozenset({"bl", "both"}),
        CR: frozenset({"cr", "both"}),
    }
    verdict = build(
        [
            answered("bl", points=0),
            answered("both", points=-120, codes=["J01"]),
            failed("cr", TIMEOUT),
        ],
        contributors=contributors,
    )
    # The credit-only agency's timeout leaves the blacklist complete...
    assert verdict.blacklist.status == CLEAR
    # ...while the blacklist-only agency's empty credit answer does not count.
    assert verdict.credit.score == 560
    assert verdict.credit.provisional
    assert verdict.coverage.expected == 3


def test_without_contributors_every_outcome_counts_for_every_kind() -> None:
    verdict = build([answered("bl"), answered("both"), failed("cr", TIMEOUT)])
    assert verdict.blacklist.status == INCOMPLETE


# ------------------------------------------------------- programming errors


def test_a_scorecard_version_other_than_the_aggregators_is_refused() -> None:
    with pytest.raises(ValueError, match="'credence-scorecard-v0' is not the aggregator's"):
        aggregate(
            verdict_id="v-1",
            query_id="q-1",
            subject=SUBJECT,
            requester="acme",
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
            kinds=BOTH,
            grant_id="",
            outcomes=[],
            aggregator=AGGREGATOR,
            layout=LAYOUT,
            scorecard_version="credence-scorecard-v0",
            log_promise=None,
            issued_at=NOW,
            expires_at=NOW + timedelta(hours=1),
        )


def test_an_agency_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="same agency twice"):
        build([answered("a"), failed("a", TIMEOUT)])


def test_expiry_before_issue_is_refused() -> None:
    with pytest.raises(ValueError, match="is not after issued_at"):
        aggregate(
            verdict_id="v-1",
            query_id="q-1",
            subject=SUBJECT,
            requester="acme",
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
            kinds=BOTH,
            grant_id="",
            outcomes=[],
            aggregator=AGGREGATOR,
            layout=LAYOUT,
            scorecard_version=VERSION,
            log_promise=None,
            issued_at=NOW,
            expires_at=NOW,
        )
