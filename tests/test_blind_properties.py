"""Property tests of blind aggregation (hypothesis).

* For random vectors and audiences with random dropouts, the masked answers
  plus the recovery shares of the answering agencies unmask to the plain sum.
* For random evaluations, coverage and per-kind contributors, the verdict read
  from the sum (:func:`credence.blind.sums.verdict_from_sum`) equals the one
  ``central_registry.aggregation`` builds from the same answers in the clear,
  field by field, and :func:`credence.blind.sums.check_sum` accepts every
  honest sum.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agency_node.evaluation import BlacklistAssertionFacts, CreditFacts
from credence.blind import layout as layouts
from credence.blind import masks, recovery, sums
from credence.scorecard import MAX_REASON_CODES, Aggregator, default_scorecard
from credence.v1 import common_pb2, registry_pb2

# No deadline: the machine is shared; examples are few and each is fast.
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 6, 1, tzinfo=UTC)
BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
CREDIT = common_pb2.VERDICT_KIND_CREDIT
ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED
NOT_ANSWERED = (
    common_pb2.COVERAGE_STATE_TIMEOUT,
    common_pb2.COVERAGE_STATE_UNAVAILABLE,
    common_pb2.COVERAGE_STATE_REFUSED,
)


@functools.cache
def _layout() -> layouts.VectorLayout:
    return layouts.for_scorecard(default_scorecard())


@functools.cache
def _aggregator() -> Aggregator:
    return Aggregator(default_scorecard())


@functools.cache
def _agreement_key(member: str) -> X25519PrivateKey:
    return masks.agreement_key()


def _pair_keys(own: str, audience: list[str]) -> dict[str, bytes]:
    return {
        peer: masks.pair_key(
            _agreement_key(own),
            masks.public_bytes(_agreement_key(peer)),
            federation_id="fed-props",
            own_id=own,
            peer_id=peer,
        )
        for peer in audience
        if peer != own
    }


member_ids = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    min_size=2,
    max_size=8,
    unique=True,
)


@st.composite
def audiences_with_dropouts(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, list[int]]]:
    """An audience, the members that answered (at least one) and every member's vector."""
    audience = draw(member_ids)
    answered = draw(
        st.lists(st.sampled_from(audience), min_size=1, max_size=len(audience), unique=True)
    )
    length = draw(st.integers(min_value=1, max_value=40))
    word = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    vectors = {
        member: draw(st.lists(word, min_size=length, max_size=length)) for member in audience
    }
    return audience, answered, vectors


@PROPERTY
@given(case=audiences_with_dropouts(), query_id=st.text(min_size=1, max_size=40))
def test_masked_answers_and_recovery_shares_unmask_to_the_plain_sum(
    case: tuple[list[str], list[str], dict[str, list[int]]], query_id: str
) -> None:
    audience, answered, vectors = case
    length = len(vectors[audience[0]])
    masked = {
        member: masks.mask_vector(
            vectors[member],
            own_id=member,
            audience=audience,
            pair_keys=_pair_keys(member, audience),
            query_id=query_id,
        )
        for member in answered
    }
    missing = [member for member in audience if member not in answered]
    shares = [
        recovery.recovery_share(
            member,
            missing,
            audience=audience,
            pair_keys=_pair_keys(member, audience),
            query_id=query_id,
            length=length,
        )
        for member in answered
    ]
    plain = sums.add(vectors[member] for member in answered)
    assert recovery.remove_recovery(sums.add(masked.values()), shares) == plain
    if not missing:
        assert all(not any(share) for share in shares)
        assert sums.add(masked.values()) == plain


@PROPERTY
@given(case=audiences_with_dropouts(), items=st.integers(min_value=1, max_value=5))
def test_a_batch_unmasks_item_by_item(
    case: tuple[list[str], list[str], dict[str, list[int]]], items: int
) -> None:
    audience, answered, vectors = case
    length = len(vectors[audience[0]])
    batches = {
        member: [
            [(value * (item + 1)) % sums.MOD for value in vectors[member]] for item in range(items)
        ]
        for member in answered
    }
    masked = {
        member: masks.mask_batch(
            batches[member],
            own_id=member,
            audience=audience,
            pair_keys=_pair_keys(member, audience),
            batch_id="batch-1",
        )
        for member in answered
    }
    missing = [member for member in audience if member not in answered]
    shares = [
        recovery.recovery_batch_share(
            member,
            missing,
            audience=audience,
            pair_keys=_pair_keys(member, audience),
            batch_id="batch-1",
            length=length,
            items=items,
        )
        for member in answered
    ]
    for item in range(items):
        summed = sums.add(masked[member][item] for member in answered)
        item_shares = [share[item * length : (item + 1) * length] for share in shares]
        assert recovery.remove_recovery(summed, item_shares) == sums.add(
            batches[member][item] for member in answered
        )


@st.composite
def blacklist_facts(draw: st.DrawFn) -> BlacklistAssertionFacts:
    """A blacklist answer as a node's evaluation gives it."""
    if not draw(st.booleans()):
        return BlacklistAssertionFacts(
            listed=False, categories=(), since=None, until=None, disputed=False
        )
    categories = draw(
        st.lists(st.sampled_from(_layout().categories), min_size=1, max_size=3, unique=True)
    )
    return BlacklistAssertionFacts(
        listed=True,
        categories=tuple(sorted(categories)),
        since=NOW - timedelta(days=30),
        until=NOW + timedelta(days=300),
        disputed=draw(st.booleans()),
    )


@st.composite
def credit_facts(draw: st.DrawFn) -> CreditFacts:
    """A credit answer within the scorecard's per-agency bounds."""
    layout = _layout()
    codes = draw(
        st.lists(st.sampled_from(layout.reason_codes), max_size=MAX_REASON_CODES, unique=True)
    )
    lost = sum(layout.reason_cost[code] for code in codes)
    points = draw(
        st.integers(
            min_value=max(layout.points_min, layout.points_max - lost - 200),
            max_value=layout.points_max - lost,
        )
    )
    return CreditFacts(
        partial_points=points,
        reason_codes=tuple(codes),
        has_history=draw(st.booleans()),
        disputed=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Lookup:
    """A lookup's agencies, who answered what, and optionally per-kind contributors."""

    agencies: list[str]
    kinds: tuple[int, ...]
    states: dict[str, int]
    answers: dict[str, tuple[BlacklistAssertionFacts, CreditFacts]]
    contributors: Mapping[int, frozenset[str]] | None

    def counts(self, kind: int) -> tuple[int, int]:
        """How many of ``kind``'s contributors answered, and how many were asked."""
        members = [
            member
            for member in self.agencies
            if self.contributors is None or member in self.contributors[kind]
        ]
        return sum(1 for member in members if self.states[member] == ANSWERED), len(members)

    def fills(self, member: str, kind: int) -> bool:
        """Whether ``member``'s node fills ``kind``'s part: asked and contributed to."""
        return kind in self.kinds and (
            self.contributors is None or member in self.contributors[kind]
        )


@st.composite
def lookups(draw: st.DrawFn) -> Lookup:
    """A random :class:`Lookup`."""
    agencies = draw(member_ids)
    contributors: dict[int, frozenset[str]] | None = None
    if draw(st.booleans()):
        contributors = {
            kind: frozenset(
                draw(st.lists(st.sampled_from(agencies), max_size=len(agencies), unique=True))
            )
            for kind in (BLACKLIST, CREDIT)
        }
    return Lookup(
        agencies=agencies,
        kinds=draw(st.sampled_from([(BLACKLIST,), (CREDIT,), (BLACKLIST, CREDIT)])),
        states={
            member: draw(st.sampled_from((ANSWERED, ANSWERED, *NOT_ANSWERED)))
            for member in agencies
        },
        answers={member: (draw(blacklist_facts()), draw(credit_facts())) for member in agencies},
        contributors=contributors,
    )


def cleartext_verdicts(
    case: Lookup, aggregator: Aggregator
) -> tuple[registry_pb2.BlacklistVerdict, registry_pb2.CreditVerdict]:
    """The verdict parts by the rules of aggregation from cleartext answers.

    These are central_registry/aggregation.py's rules before issue 14 (commit
    a564a69), which read each agency's answer: kept here as the oracle the
    sums must agree with.
    """

    def contributing(kind: int) -> list[str]:
        return [
            member
            for member in case.agencies
            if case.contributors is None or member in case.contributors[kind]
        ]

    listing, listing_disputed = 0, False
    categories: set[str] = set()
    members = contributing(BLACKLIST)
    answered = [member for member in members if case.states[member] == ANSWERED]
    for member in answered:
        assertion = case.answers[member][0]
        if assertion.listed:
            listing += 1
            categories.update(assertion.categories)
            listing_disputed = listing_disputed or assertion.disputed
    if listing:
        blacklist = registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED,
            categories=sorted(categories),
            disputed=listing_disputed,
            listing_agencies=listing,
        )
    elif members and len(answered) == len(members):
        blacklist = registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_CLEAR)
    else:
        blacklist = registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_INCOMPLETE)

    members = contributing(CREDIT)
    usable = [case.answers[m][1] for m in members if case.states[m] == ANSWERED]
    result = aggregator.aggregate([(c.partial_points, c.reason_codes) for c in usable])
    credit = registry_pb2.CreditVerdict(
        score=result.score,
        band=result.band,
        reason_codes=result.reason_codes,
        provisional=result.provisional or len(usable) < len(members),
        disputed=any(c.disputed for c in usable),
    )
    return blacklist, credit


@PROPERTY
@given(case=lookups())
def test_the_verdict_from_the_sum_is_todays_verdict(case: Lookup) -> None:
    layout = _layout()
    aggregator = _aggregator()
    vectors = [
        layout.fill(
            case.answers[member][0] if case.fills(member, BLACKLIST) else None,
            case.answers[member][1] if case.fills(member, CREDIT) else None,
        )
        for member in case.agencies
        if case.states[member] == ANSWERED
    ]
    summed = sums.add(vectors) if vectors else [0] * layout.length
    assert sums.check_sum(layout, summed, len(vectors)) is None
    answering, expected = case.counts(BLACKLIST)
    credit_answering, credit_expected = case.counts(CREDIT)
    from_sum = sums.verdict_from_sum(
        layout,
        summed,
        answering=answering,
        expected=expected,
        aggregator=aggregator,
        credit_answering=credit_answering,
        credit_expected=credit_expected,
    )
    blacklist, credit = cleartext_verdicts(case, aggregator)
    if BLACKLIST in case.kinds:
        assert from_sum[0] == blacklist
    if CREDIT in case.kinds:
        assert from_sum[1] == credit
