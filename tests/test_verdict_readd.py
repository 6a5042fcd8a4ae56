"""Re-adding a verdict (credence.verdicts.readd_verdict) from the attacker's side, without servers.

Three agencies answer with really masked, really signed vectors; the
registry's aggregation builds the verdict; the verifier re-adds it. Then the
registry lies, each way it could, and the verifier names the lie: a field the
sum does not give, an impossible sum passed off as a listing, a dropout whose
shares are not all there but whose verdict claims a reading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta

import pytest

from central_registry.aggregation import Recovery, aggregate
from central_registry.outcomes import AgencyOutcome
from credence import payloads
from credence.blind.layout import for_scorecard
from credence.blind.masks import mask_vector, pair_key, public_bytes
from credence.blind.recovery import recovery_share
from credence.client.results import VerifiedVerdict
from credence.dev.offline_federation import NOW, Federation
from credence.envelope import sign
from credence.errors import BadSignature, ClaimMismatch, InvalidInput
from credence.keys import KeySet
from credence.manifest import TrustedManifest, verify_manifest
from credence.scorecard import Aggregator, default_scorecard
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import readd_verdict

BL = common_pb2.VERDICT_KIND_BLACKLIST
CR = common_pb2.VERDICT_KIND_CREDIT
AGENCIES = ("a1", "a2", "a3")
LAYOUT = for_scorecard(default_scorecard())
QUERY = "q-readd-1"


class Listing:
    listed = True
    categories = ("fraud",)
    disputed = False


@pytest.fixture(scope="module")
def federation() -> tuple[Federation, TrustedManifest]:
    federation = Federation.create()
    for agency in AGENCIES:
        federation.add_agency(agency, ("fraud_flag",))
    manifest = verify_manifest(
        federation.manifest_envelope(),
        trusted_root=KeySet([federation.root_key.public]),
        threshold=1,
        now=NOW,
    )
    return federation, manifest


def _pairs(federation: Federation, agency: str) -> dict[str, bytes]:
    own = federation.members[agency].agreement_key
    return {
        peer: pair_key(
            own,
            public_bytes(federation.members[peer].agreement_key),
            federation_id="test-federation",
            own_id=agency,
            peer_id=peer,
        )
        for peer in AGENCIES
        if peer != agency
    }


def _answer(federation: Federation, agency: str, vector: Sequence[int]) -> AgencyOutcome:
    masked = mask_vector(
        list(vector),
        own_id=agency,
        audience=AGENCIES,
        pair_keys=_pairs(federation, agency),
        query_id=QUERY,
    )
    body = agency_pb2.Answer(
        query_id=QUERY, agency=agency, masked=masked, layout_id=LAYOUT.layout_id
    ).SerializeToString()
    envelope = sign(payloads.ANSWER, body, [federation.members[agency].signing_key])
    return AgencyOutcome(
        agency,
        common_pb2.COVERAGE_STATE_ANSWERED,
        answer=agency_pb2.Answer.FromString(body),
        answer_hash=hashlib.sha256(body).digest(),
        envelope=envelope.to_proto(),
    )


def _share(
    federation: Federation, agency: str, missing: Sequence[str]
) -> tuple[list[int], common_pb2.Envelope]:
    words = recovery_share(
        agency,
        missing,
        audience=AGENCIES,
        pair_keys=_pairs(federation, agency),
        query_id=QUERY,
        length=LAYOUT.length,
    )
    body = agency_pb2.RecoveryShare(
        query_id=QUERY, agency=agency, share=words, missing=sorted(missing)
    ).SerializeToString()
    return words, sign(
        payloads.RECOVERY_SHARE, body, [federation.members[agency].signing_key]
    ).to_proto()


def _verdict(
    outcomes: Sequence[AgencyOutcome], recovery: Recovery | None = None
) -> registry_pb2.Verdict:
    return aggregate(
        verdict_id="v-1", query_id=QUERY,
        subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_ORGANISATION, ref=bytes(32)),
        requester="acme", purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION, kinds=(BL,),
        grant_id="", outcomes=outcomes, aggregator=Aggregator(default_scorecard()),
        layout=LAYOUT, scorecard_version=LAYOUT.scorecard_version, log_promise=None,
        issued_at=NOW, expires_at=NOW + timedelta(hours=1), recovery=recovery,
        contributors={BL: set(AGENCIES)},
    ).verdict  # fmt: skip


def _copy(verdict: registry_pb2.Verdict) -> registry_pb2.Verdict:
    copy = registry_pb2.Verdict()
    copy.CopyFrom(verdict)
    return copy


def test_an_honest_verdict_re_adds_and_each_lie_is_named(
    federation: tuple[Federation, TrustedManifest],
) -> None:
    fed, manifest = federation
    listing = LAYOUT.fill(Listing(), None)
    clear = LAYOUT.fill(None, None)
    verdict = _verdict([_answer(fed, "a1", listing), _answer(fed, "a2", clear),
                        _answer(fed, "a3", clear)])  # fmt: skip
    assert verdict.blacklist == registry_pb2.BlacklistVerdict(
        status=common_pb2.BLACKLIST_STATUS_LISTED, categories=["fraud"], listing_agencies=1
    )
    readd_verdict(verdict, manifest)

    lies = _copy(verdict)
    lies.blacklist.status = common_pb2.BLACKLIST_STATUS_CLEAR
    with pytest.raises(ClaimMismatch, match="its blacklist part does not follow"):
        readd_verdict(lies, manifest)
    lies = _copy(verdict)
    lies.blacklist.categories.append("tax_evasion")
    with pytest.raises(ClaimMismatch, match="its blacklist part does not follow"):
        readd_verdict(lies, manifest)
    lies = _copy(verdict)
    lies.credit.score = 700  # a part that was not asked
    with pytest.raises(ClaimMismatch, match="its credit part does not follow"):
        readd_verdict(lies, manifest)
    lies = _copy(verdict)
    lies.answers[0].signatures[0].sig = bytes(64)
    with pytest.raises(BadSignature):
        readd_verdict(lies, manifest)
    lies = _copy(verdict)
    lies.coverage.agencies[2].state = common_pb2.COVERAGE_STATE_TIMEOUT
    with pytest.raises(ClaimMismatch, match="answer_hashes are not the coverage's"):
        readd_verdict(lies, manifest)
    screened = _copy(verdict)
    del screened.answers[:]
    with pytest.raises(InvalidInput, match="carries no answers to re-add"):
        readd_verdict(screened, manifest)
    # Nothing changed: the verdict as made still re-adds.
    readd_verdict(verdict, manifest)


def test_five_listings_from_one_node_make_an_incomplete_verdict_that_re_adds(
    federation: tuple[Federation, TrustedManifest],
) -> None:
    fed, manifest = federation
    five = LAYOUT.fill(Listing(), None)
    five[LAYOUT.listed_index] = 5
    clear = LAYOUT.fill(None, None)
    verdict = _verdict([_answer(fed, "a1", clear), _answer(fed, "a2", five),
                        _answer(fed, "a3", clear)])  # fmt: skip
    assert verdict.incomplete_reason == (
        "the answers' sum is impossible: the listed sum 5 is outside 0..3 for 3 answering agencies"
    )
    assert verdict.blacklist.status == common_pb2.BLACKLIST_STATUS_INCOMPLETE
    readd_verdict(verdict, manifest)
    # A registry passing the dishonest sum off as five listings is caught.
    lies = _copy(verdict)
    lies.incomplete_reason = ""
    lies.blacklist.CopyFrom(
        registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED, categories=["fraud"], listing_agencies=5
        )
    )
    with pytest.raises(ClaimMismatch, match="incomplete_reason is ''; the sum gives"):
        readd_verdict(lies, manifest)


def test_a_dropout_re_adds_with_its_shares_and_a_missing_share_must_be_said(
    federation: tuple[Federation, TrustedManifest],
) -> None:
    fed, manifest = federation
    timeout = AgencyOutcome("a3", common_pb2.COVERAGE_STATE_TIMEOUT, "no answer within 2.0 s")
    outcomes = [_answer(fed, "a1", LAYOUT.fill(Listing(), None)),
                _answer(fed, "a2", LAYOUT.fill(None, None)), timeout]  # fmt: skip
    shares = {agency: _share(fed, agency, ["a3"]) for agency in ("a1", "a2")}
    recovery = Recovery(
        shares={agency: words for agency, (words, _) in shares.items()},
        envelopes=[envelope for _, envelope in shares.values()],
    )
    verdict = _verdict(outcomes, recovery)
    assert verdict.blacklist.status == common_pb2.BLACKLIST_STATUS_LISTED
    assert verdict.blacklist.listing_agencies == 1
    readd_verdict(verdict, manifest)

    short = _copy(verdict)
    del short.recoveries[1]
    with pytest.raises(ClaimMismatch, match="does not say its sum could not be read"):
        readd_verdict(short, manifest)
    # The registry that could not get a share and says so re-adds.
    said = _verdict(outcomes, Recovery(failure="an answering agency gave no recovery share (a2)"))
    assert said.blacklist.status == common_pb2.BLACKLIST_STATUS_INCOMPLETE
    said.recoveries.append(shares["a1"][1])
    readd_verdict(said, manifest)
    # A share for another missing set is refused.
    other = _copy(verdict)
    other.recoveries[0].CopyFrom(_share(fed, "a1", ["a2", "a3"])[1])
    with pytest.raises(ClaimMismatch, match="recovery share is not for this query"):
        readd_verdict(other, manifest)


def test_the_requester_sees_why_the_sum_was_not_read(
    federation: tuple[Federation, TrustedManifest],
) -> None:
    fed, _ = federation
    five = LAYOUT.fill(Listing(), None)
    five[LAYOUT.listed_index] = 5
    verdict = _verdict([_answer(fed, agency, five) for agency in AGENCIES])
    shown = VerifiedVerdict(verdict, sign(payloads.VERDICT, b"", [fed.registry_key]), "")
    assert shown.status == "incomplete"
    assert shown.coverage == (
        "3/3 agencies answered; sum not read: the answers' sum is impossible: "
        "the listed sum 15 is outside 0..3 for 3 answering agencies"
    )
