"""credence.blind without servers: layout, masks, recovery and the verdict from a sum."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agency_node.evaluation import BlacklistAssertionFacts, CreditFacts
from credence.blind import layout as layouts
from credence.blind import masks, recovery, sums
from credence.errors import InvalidInput
from credence.scorecard import Aggregator, default_scorecard
from credence.v1 import agency_pb2, common_pb2

FEDERATION = "fed-test"
IDS = ("agency-a", "agency-b", "agency-c", "agency-d")


@pytest.fixture(scope="module")
def layout() -> layouts.VectorLayout:
    return layouts.for_scorecard(default_scorecard())


@pytest.fixture(scope="module")
def pair_keys() -> dict[str, dict[str, bytes]]:
    keys = {member: masks.agreement_key() for member in IDS}
    return {
        own: {
            peer: masks.pair_key(
                keys[own],
                masks.public_bytes(keys[peer]),
                federation_id=FEDERATION,
                own_id=own,
                peer_id=peer,
            )
            for peer in IDS
            if peer != own
        }
        for own in IDS
    }


def test_the_scorecard_file_publishes_the_computed_layout(layout: layouts.VectorLayout) -> None:
    scorecard = default_scorecard()
    assert list(scorecard.vector_layout.slots) == list(layout.slots)
    assert scorecard.vector_layout.layout_hash == layout.layout_hash
    assert layout.length == len(layout.slots)
    assert layout.layout_id.startswith(scorecard.version + "/")


def test_a_published_layout_that_differs_is_refused() -> None:
    scorecard = default_scorecard()
    scorecard.vector_layout.slots[3] = "category:something_else"
    with pytest.raises(InvalidInput, match="slot 3"):
        layouts.for_scorecard(scorecard)
    scorecard = default_scorecard()
    del scorecard.vector_layout.slots[-1]
    with pytest.raises(InvalidInput, match="slots"):
        layouts.for_scorecard(scorecard)
    scorecard = default_scorecard()
    scorecard.vector_layout.layout_hash = "00" * 32
    with pytest.raises(InvalidInput, match="layout_hash"):
        layouts.for_scorecard(scorecard)


def test_fill_puts_each_fact_in_its_slot(layout: layouts.VectorLayout) -> None:
    blacklist = BlacklistAssertionFacts(
        listed=True, categories=("fraud",), since=None, until=None, disputed=True
    )
    credit = CreditFacts(
        partial_points=-120, reason_codes=("J01",), has_history=True, disputed=False
    )
    vector = layout.fill(blacklist, credit)
    named = dict(zip(layout.slots, vector, strict=True))
    assert named["listed"] == 1
    assert named["category:fraud"] == 1
    assert named["listed_and_disputed"] == 1
    assert named["credit_points"] == -120
    assert named["reason:J01"] == layout.reason_cost["J01"] == 120
    assert named["has_history"] == 1
    assert named["credit_disputed"] == 0
    assert sum(1 for value in vector if value) == 6
    assert layout.fill(None, None) == [0] * layout.length


def test_fill_refuses_what_the_layout_has_no_slot_for(layout: layouts.VectorLayout) -> None:
    unknown = BlacklistAssertionFacts(
        listed=True, categories=("gossip",), since=None, until=None, disputed=False
    )
    with pytest.raises(InvalidInput, match="gossip"):
        layout.fill(unknown, None)
    credit = CreditFacts(partial_points=0, reason_codes=("Z99",), has_history=False, disputed=False)
    with pytest.raises(InvalidInput, match="Z99"):
        layout.fill(None, credit)


def test_the_answer_on_the_wire_has_no_cleartext_field() -> None:
    assert set(agency_pb2.Answer.DESCRIPTOR.fields_by_name) == {
        "query_id",
        "agency",
        "query_hash",
        "answered_at",
        "masked",
        "layout_id",
    }
    with pytest.raises(ValueError, match="blacklist"):
        agency_pb2.Answer(blacklist=agency_pb2.BlacklistAssertion(listed=True))  # type: ignore[call-arg]


def test_pair_keys_are_symmetric_and_bound_to_federation_and_pair() -> None:
    a, b, c = (X25519PrivateKey.generate() for _ in range(3))
    ab = masks.pair_key(a, masks.public_bytes(b), federation_id="f", own_id="a", peer_id="b")
    ba = masks.pair_key(b, masks.public_bytes(a), federation_id="f", own_id="b", peer_id="a")
    assert ab == ba
    assert len(ab) == 32
    other_federation = masks.pair_key(
        a, masks.public_bytes(b), federation_id="g", own_id="a", peer_id="b"
    )
    relabelled = masks.pair_key(
        a, masks.public_bytes(b), federation_id="f", own_id="a", peer_id="c"
    )
    ac = masks.pair_key(a, masks.public_bytes(c), federation_id="f", own_id="a", peer_id="c")
    assert len({ab, other_federation, relabelled, ac}) == 4


def test_pair_key_refuses_unusable_keys() -> None:
    own = X25519PrivateKey.generate()
    with pytest.raises(InvalidInput, match="32"):
        masks.pair_key(own, b"\x01" * 31, federation_id="f", own_id="a", peer_id="b")
    with pytest.raises(InvalidInput, match="not usable"):
        masks.pair_key(own, bytes(32), federation_id="f", own_id="a", peer_id="b")
    with pytest.raises(InvalidInput, match="itself"):
        masks.pair_key(own, masks.public_bytes(own), federation_id="f", own_id="a", peer_id="a")


def test_a_single_masked_answer_hides_the_vector(
    layout: layouts.VectorLayout, pair_keys: dict[str, dict[str, bytes]]
) -> None:
    vector = [0] * layout.length
    masked = masks.mask_vector(
        vector, own_id=IDS[0], audience=IDS, pair_keys=pair_keys[IDS[0]], query_id="q-1"
    )
    assert masked != vector
    assert len(set(masked)) == layout.length
    again = masks.mask_vector(
        vector, own_id=IDS[0], audience=IDS, pair_keys=pair_keys[IDS[0]], query_id="q-2"
    )
    assert again != masked


def test_masks_cancel_and_recovery_removes_the_missing_ones(
    layout: layouts.VectorLayout, pair_keys: dict[str, dict[str, bytes]]
) -> None:
    vectors = {
        member: [index - 3 + slot for slot in range(layout.length)]
        for index, member in enumerate(IDS)
    }
    masked = {
        member: masks.mask_vector(
            vectors[member],
            own_id=member,
            audience=IDS,
            pair_keys=pair_keys[member],
            query_id="q-1",
        )
        for member in IDS
    }
    assert sums.add(masked.values()) == sums.add(vectors.values())
    answered, missing = IDS[:2], IDS[2:]
    shares = [
        recovery.recovery_share(
            member,
            missing,
            audience=IDS,
            pair_keys=pair_keys[member],
            query_id="q-1",
            length=layout.length,
        )
        for member in answered
    ]
    partial = sums.add(masked[member] for member in answered)
    assert partial != sums.add(vectors[member] for member in answered)
    assert recovery.remove_recovery(partial, shares) == sums.add(
        vectors[member] for member in answered
    )


def test_a_batch_uses_one_stream_per_pair(pair_keys: dict[str, dict[str, bytes]]) -> None:
    own, peer = IDS[0], IDS[1]
    items = [[1, 2, 3], [4, 5, 6]]
    masked = masks.mask_batch(
        items, own_id=own, audience=(own, peer), pair_keys=pair_keys[own], batch_id="b-1"
    )
    stream = masks.mask_stream(pair_keys[own][peer], "b-1", 6)
    assert masked == [
        [(v + m) % sums.MOD for v, m in zip(items[0], stream[:3], strict=True)],
        [(v + m) % sums.MOD for v, m in zip(items[1], stream[3:], strict=True)],
    ]


def test_masking_refuses_a_missing_pair_key_or_member(
    pair_keys: dict[str, dict[str, bytes]],
) -> None:
    with pytest.raises(InvalidInput, match="not in the query's audience"):
        masks.mask_vector([0], own_id="stranger", audience=IDS, pair_keys={}, query_id="q")
    with pytest.raises(InvalidInput, match="no pair key"):
        masks.mask_vector([0], own_id=IDS[0], audience=IDS, pair_keys={}, query_id="q")
    with pytest.raises(InvalidInput, match="cannot be missing"):
        recovery.recovery_share(
            IDS[0], [IDS[0]], audience=IDS, pair_keys=pair_keys[IDS[0]], query_id="q", length=1
        )


def test_verdict_from_sum_reads_listing_and_credit(layout: layouts.VectorLayout) -> None:
    listed = BlacklistAssertionFacts(
        listed=True, categories=("fraud", "payment_fraud"), since=None, until=None, disputed=False
    )
    credit = CreditFacts(
        partial_points=-250, reason_codes=("F01",), has_history=True, disputed=True
    )
    summed = sums.add([layout.fill(listed, credit), layout.fill(None, None)])
    assert sums.check_sum(layout, summed, 2) is None
    blacklist, outcome = sums.verdict_from_sum(
        layout, summed, answering=2, expected=2, aggregator=Aggregator(default_scorecard())
    )
    assert blacklist.status == common_pb2.BLACKLIST_STATUS_LISTED
    assert list(blacklist.categories) == ["fraud", "payment_fraud"]
    assert blacklist.listing_agencies == 1
    assert not blacklist.disputed
    assert outcome.score == 680 - 250
    assert list(outcome.reason_codes) == ["F01"]
    assert outcome.disputed
    assert not outcome.provisional


def test_check_sum_names_an_impossible_sum(layout: layouts.VectorLayout) -> None:
    five_listings = [0] * layout.length
    five_listings[layout.listed_index] = 5
    reason = sums.check_sum(layout, five_listings, 2)
    assert reason is not None
    assert "listed sum 5" in reason
    deep = [0] * layout.length
    deep[layout.points_index] = (layout.points_min * 3) % sums.MOD
    reason = sums.check_sum(layout, deep, 2)
    assert reason is not None
    assert "credit_points" in reason
    odd = [0] * layout.length
    odd[layout.points_index + 1] = layout.reason_cost[layout.reason_codes[0]] + 1
    reason = sums.check_sum(layout, odd, 2)
    assert reason is not None
    assert "whole number" in reason
    category_without_listing = [0] * layout.length
    category_without_listing[1] = 1
    reason = sums.check_sum(layout, category_without_listing, 2)
    assert reason is not None
    assert "above the listed sum 0" in reason
