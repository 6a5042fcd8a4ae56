"""Explanations of credit verdicts, pure: built from the answers' sum, checked, put in words.

Answers are filled into the scorecard's vector layout as agencies fill them,
summed, and the verdict read from the sum as the registry reads it
(:mod:`credence.blind.reading`); the explanation must then follow from the
same sum. From the attacker's side: every tampered figure, another verdict,
another signer and another payload type are refused, naming what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from credence import payloads
from credence.blind.layout import VectorLayout, for_scorecard
from credence.blind.reading import verdict_parts
from credence.blind.sums import add
from credence.envelope import Envelope, sign
from credence.errors import ClaimMismatch, UnknownKey, WrongPayloadType
from credence.explanations import (
    check_explanation,
    check_figures,
    describe,
    explain,
    open_explanation,
    verdict_hash,
)
from credence.keys import KeySet, SigningKey
from credence.scorecard import Aggregator, default_scorecard, reason_costs
from credence.v1 import common_pb2, manifest_pb2, registry_pb2
from credence.verdicts import sign_verdict

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
SCORECARD = default_scorecard()
LAYOUT = for_scorecard(SCORECARD)
COSTS = reason_costs(SCORECARD)


@dataclass(frozen=True)
class Credit:
    """One agency's credit answer, as :meth:`VectorLayout.fill` reads it."""

    partial_points: int
    reason_codes: tuple[str, ...]
    has_history: bool = True
    disputed: bool = False


def _points(codes: Sequence[str], bonus: int = 0) -> int:
    # An agency's partial points: what its adverse bins lost against the best, plus any history.
    return bonus - sum(COSTS[code] for code in codes)


def _verdict(
    answers: Sequence[Credit], layout: VectorLayout = LAYOUT, expected: int | None = None
) -> tuple[registry_pb2.Verdict, list[int]]:
    summed = add(layout.fill(None, answer) for answer in answers) or [0] * layout.length
    counts: dict[int, tuple[int, int]] = {
        common_pb2.VERDICT_KIND_BLACKLIST: (0, 0),
        common_pb2.VERDICT_KIND_CREDIT: (len(answers), expected or len(answers)),
    }
    _, credit = verdict_parts(layout, summed, aggregator=Aggregator(SCORECARD), counts=counts)
    verdict = registry_pb2.Verdict(
        verdict_id="v-1",
        query_id="q-1",
        subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes(range(32))),
        requester="acme",
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
        kinds=[common_pb2.VERDICT_KIND_CREDIT],
        scorecard_version=SCORECARD.version,
        credit=credit,
    )
    verdict.issued_at.FromDatetime(NOW)
    verdict.expires_at.FromDatetime(NOW + timedelta(days=1))
    return verdict, summed


KEY = SigningKey.generate()
# Two agencies report D01 (the summed cost is twice the scorecard's), one L02 and H01.
ANSWERS = (
    Credit(_points(["D01", "L02"], bonus=90), ("D01", "L02")),
    Credit(_points(["D01", "H01"]), ("D01", "H01")),
    Credit(_points([], bonus=90), ()),
)


def _explained(
    answers: Sequence[Credit] = ANSWERS, expected: int | None = None
) -> tuple[registry_pb2.Explanation, registry_pb2.Verdict, Envelope]:
    verdict, summed = _verdict(answers, expected=expected)
    envelope = sign_verdict(verdict, KEY)
    explanation = explain(
        verdict,
        envelope.payload,
        scorecard=SCORECARD,
        layout=LAYOUT,
        summed=summed,
        credit_answering=len(answers),
        credit_expected=expected or len(answers),
        manifest_version=7,
        scorecard_url="https://127.0.0.1:7780/scorecard",
    )
    return explanation, verdict, envelope


def test_every_figure_follows_from_the_sum_and_the_scorecard() -> None:
    explanation, verdict, envelope = _explained()
    total = sum(answer.partial_points for answer in ANSWERS)
    assert explanation.points_total == total
    assert explanation.base_points == SCORECARD.base_points
    assert explanation.score == verdict.credit.score == SCORECARD.base_points + total
    assert explanation.band == verdict.credit.band
    assert list(explanation.bands) == list(SCORECARD.bands)
    assert explanation.verdict_hash == hashlib.sha256(envelope.payload).digest()
    assert [r.reason_code for r in explanation.reasons] == list(verdict.credit.reason_codes)
    assert len(explanation.reasons) <= 4
    by_code = {reason.reason_code: reason for reason in explanation.reasons}
    # Summed over agencies: two reported D01, so it cost twice its scorecard cost.
    assert by_code["D01"].points == -2 * COSTS["D01"]
    assert by_code["L02"].points == -COSTS["L02"]
    assert by_code["H01"].points == -COSTS["H01"]
    for reason in explanation.reasons:
        assert reason.score_without == SCORECARD.base_points + total - reason.points
        assert reason.text == SCORECARD.reason_texts[reason.reason_code]
    assert by_code["D01"].characteristic == "loan_defaults_5y"
    assert (explanation.credit_answering, explanation.credit_expected) == (3, 3)
    assert explanation.manifest_version == 7
    check_explanation(explanation, verdict, SCORECARD, envelope.payload)


def test_reasons_are_most_costly_first_in_summed_points() -> None:
    # L04 costs 30 and L02 50, but three agencies reported L04: 90 in all.
    late = Credit(_points(["L04"]), ("L04",))
    explanation, verdict, envelope = _explained(
        (Credit(_points(["L02"]), ("L02",)), late, late, late)
    )
    assert [(r.reason_code, r.points) for r in explanation.reasons] == [
        ("L04", -3 * COSTS["L04"]),
        ("L02", -COSTS["L02"]),
    ]
    check_explanation(explanation, verdict, SCORECARD, envelope.payload)


def test_a_counterfactual_is_clamped_and_banded_like_the_score() -> None:
    heavy = Credit(_points(["F01", "B01", "J02"]), ("F01", "B01", "J02"))
    explanation, verdict, envelope = _explained((heavy, heavy))
    assert explanation.score == SCORECARD.min_score
    assert explanation.base_points + explanation.points_total < SCORECARD.min_score
    for reason in explanation.reasons:
        assert reason.score_without == max(
            SCORECARD.min_score, explanation.base_points + explanation.points_total - reason.points
        )
    words = describe(explanation)
    assert any("held at 350" in line for line in words)
    check_explanation(explanation, verdict, SCORECARD, envelope.payload)


def test_no_answer_explains_the_base_points_provisional_with_no_reason() -> None:
    verdict, _ = _verdict([], expected=2)
    envelope = sign_verdict(verdict, KEY)
    explanation = explain(
        verdict, envelope.payload, scorecard=SCORECARD, layout=LAYOUT, summed=None,
        credit_answering=0, credit_expected=2, manifest_version=1, scorecard_url="",
    )  # fmt: skip
    assert explanation.score == SCORECARD.base_points
    assert explanation.provisional
    assert not explanation.reasons
    check_explanation(explanation, verdict, SCORECARD, envelope.payload)
    assert "No record cost you points." in describe(explanation)


def test_the_explanation_names_no_agency() -> None:
    explanation, _, _ = _explained()
    data = explanation.SerializeToString()
    # The verdict's coverage would name them; the explanation carries sums only.
    for member in ("court", "bank", "taxoffice", "agency"):
        assert member.encode() not in data


def test_describe_reads_as_a_notice() -> None:
    explanation, _, _ = _explained()
    lines = describe(explanation)
    text = "\n".join(lines)
    d01 = next(r for r in explanation.reasons if r.reason_code == "D01")
    assert f"Your score is {explanation.score} (band {explanation.band}" in text
    assert f"Base {SCORECARD.base_points} points" in text
    assert f"without them the score would be {d01.score_without}" in text
    assert "name no agency" in text
    assert "https://127.0.0.1:7780/scorecard" in text


Tamper = Callable[[registry_pb2.Explanation], None]


def _reason(index: int, **changes: object) -> Tamper:
    def tamper(explanation: registry_pb2.Explanation) -> None:
        for name, value in changes.items():
            setattr(explanation.reasons[index], name, value)

    return tamper


def _set(**changes: object) -> Tamper:
    def tamper(explanation: registry_pb2.Explanation) -> None:
        for name, value in changes.items():
            setattr(explanation, name, value)

    return tamper


def _extra_reason(explanation: registry_pb2.Explanation) -> None:
    explanation.reasons.add().CopyFrom(explanation.reasons[0])


def _swap_reasons(explanation: registry_pb2.Explanation) -> None:
    first, second = (registry_pb2.ExplainedReason(), registry_pb2.ExplainedReason())
    first.CopyFrom(explanation.reasons[0])
    second.CopyFrom(explanation.reasons[1])
    explanation.reasons[0].CopyFrom(second)
    explanation.reasons[1].CopyFrom(first)


def _unscored_code(explanation: registry_pb2.Explanation) -> None:
    explanation.reasons[0].reason_code = "Z99"


def _other_band_edges(explanation: registry_pb2.Explanation) -> None:
    explanation.bands[2].lower += 10


TAMPERED: dict[str, tuple[Tamper, str]] = {
    "score": (_set(score=900), "score"),
    "points total": (_set(points_total=-10), "score"),
    "base points": (_set(base_points=700), "base_points"),
    "band": (_set(band="excellent"), "band"),
    "band edges": (_other_band_edges, "bands"),
    "reason points": (_reason(0, points=-1), "points"),
    "reason points not a whole cost": (_reason(0, points=-COSTS["D01"] - 1), "points"),
    "counterfactual score": (_reason(0, score_without=949), "score_without"),
    "counterfactual band": (_reason(0, band_without="excellent"), "band_without"),
    "reason text": (_reason(0, text="You are a bad person."), "text"),
    "characteristic": (_reason(0, characteristic="fraud_flags_7y"), "characteristic"),
    "verdict hash": (_set(verdict_hash=bytes(32)), "verdict_hash"),
    "other verdict": (_set(verdict_id="v-2"), "verdict_id"),
    "requester": (_set(requester="mallory"), "requester"),
    "purpose": (_set(purpose=common_pb2.PURPOSE_LEGAL_MANDATE), "purpose"),
    "provisional": (_set(provisional=True), "provisional"),
    "a fifth reason": (_extra_reason, "reason"),
    "reasons reordered": (_swap_reasons, "reason codes"),
    "unscored factor": (_unscored_code, "reason codes"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_explanation_is_refused_naming_the_field(case: str) -> None:
    explanation, verdict, envelope = _explained()
    tamper, field = TAMPERED[case]
    tamper(explanation)
    with pytest.raises(ClaimMismatch, match=field):
        check_explanation(explanation, verdict, SCORECARD, envelope.payload)


def test_reasons_out_of_cost_order_are_refused_by_the_figures_alone() -> None:
    explanation, _, _ = _explained()
    _swap_reasons(explanation)
    with pytest.raises(ClaimMismatch, match="most costly first"):
        check_figures(explanation, SCORECARD)


def test_an_unscored_factor_is_refused_by_the_figures_alone() -> None:
    explanation, _, _ = _explained()
    explanation.reasons[0].reason_code = "Z99"
    with pytest.raises(ClaimMismatch, match="no factor"):
        check_figures(explanation, SCORECARD)


def test_the_explanation_of_another_verdict_is_refused() -> None:
    explanation, _, _ = _explained()
    other = (Credit(_points(["L02"]), ("L02",)), Credit(0, ()))
    _, verdict, envelope = _explained(other)
    with pytest.raises(ClaimMismatch, match="verdict_hash"):
        check_explanation(explanation, verdict, SCORECARD, envelope.payload)


def test_another_scorecard_is_refused() -> None:
    explanation, verdict, envelope = _explained()
    changed = manifest_pb2.Scorecard()
    changed.CopyFrom(SCORECARD)
    changed.base_points += 10
    with pytest.raises(ClaimMismatch, match="base_points"):
        check_explanation(explanation, verdict, changed, envelope.payload)


def _signed(explanation: registry_pb2.Explanation, key: SigningKey, kind: str) -> Envelope:
    return sign(kind, explanation.SerializeToString(deterministic=True), [key])


def test_only_the_registry_key_and_the_explanation_type_open() -> None:
    explanation, _, _ = _explained()
    registry = KeySet([KEY.public])
    opened = open_explanation(_signed(explanation, KEY, payloads.EXPLANATION), registry)
    assert opened == explanation
    with pytest.raises(UnknownKey):
        open_explanation(
            _signed(explanation, SigningKey.generate(), payloads.EXPLANATION), registry
        )
    with pytest.raises(WrongPayloadType):
        open_explanation(_signed(explanation, KEY, payloads.VERDICT), registry)
    # A flipped byte of the payload breaks the registry's signature.
    good = _signed(explanation, KEY, payloads.EXPLANATION)
    flipped = dataclasses.replace(good, payload=good.payload[:-1] + bytes([good.payload[-1] ^ 1]))
    with pytest.raises(Exception, match="signature"):
        open_explanation(flipped, registry)


def test_verdict_hash_is_sha256_of_the_payload() -> None:
    assert verdict_hash(b"abc") == hashlib.sha256(b"abc").digest()
