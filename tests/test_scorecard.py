"""Tests for credence.scorecard: the data file, validation, bins and aggregation."""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable

import pytest
from google.protobuf import json_format

from credence.errors import InvalidInput
from credence.scorecard import (
    MAX_REASON_CODES,
    MAX_SCORE,
    MEASURES,
    MIN_SCORE,
    Aggregator,
    CreditOutcome,
    aggregate_credit,
    band_for,
    best_points,
    bin_for,
    default_scorecard,
    load_scorecard,
    reason_costs,
    validate_scorecard,
)
from credence.v1 import manifest_pb2

SC = default_scorecard()


def _char(scorecard: manifest_pb2.Scorecard, name: str) -> manifest_pb2.ScoreCharacteristic:
    return next(c for c in scorecard.characteristics if c.name == name)


def _json(scorecard: manifest_pb2.Scorecard) -> str:
    return json_format.MessageToJson(scorecard, preserving_proto_field_name=True)


# --- the default data file ---------------------------------------------------


def test_default_scorecard_validates_and_has_design_range() -> None:
    validate_scorecard(SC)
    assert SC.version == "credence-scorecard-v1"
    assert (SC.min_score, SC.max_score) == (MIN_SCORE, MAX_SCORE) == (350, 950)
    assert SC.required_agencies == 2
    assert SC.bands[0].name == "very poor"
    assert (SC.bands[0].lower, SC.bands[0].upper) == (350, 549)
    assert (SC.bands[-1].lower, SC.bands[-1].upper, SC.bands[-1].name) == (850, 950, "excellent")
    assert {c.measure for c in SC.characteristics} == set(MEASURES)


def test_default_scorecard_is_a_fresh_copy() -> None:
    first = default_scorecard()
    first.base_points = 400
    assert default_scorecard().base_points == SC.base_points != 400


def test_data_file_is_readable_json_with_proto_field_names() -> None:
    text = importlib.resources.files("credence").joinpath("data", "scorecard-v1.json").read_text()
    document = json.loads(text)
    assert document["min_score"] == 350
    assert document["characteristics"][0]["record_kinds"] == ["court_judgment"]
    assert load_scorecard(text) == SC


def test_load_round_trips_through_json() -> None:
    assert load_scorecard(_json(SC).encode()) == SC


def test_load_refuses_unknown_field() -> None:
    document = json.loads(_json(SC))
    document["base_point"] = 600
    with pytest.raises(InvalidInput, match=r"not a valid Scorecard.*base_point"):
        load_scorecard(json.dumps(document))


def test_load_refuses_wrong_type() -> None:
    document = json.loads(_json(SC))
    document["base_points"] = "lots"
    with pytest.raises(InvalidInput, match="not a valid Scorecard"):
        load_scorecard(json.dumps(document))


def test_load_refuses_non_utf8() -> None:
    with pytest.raises(InvalidInput, match="not UTF-8"):
        load_scorecard(b"\xff{}")


def test_load_validates() -> None:
    document = json.loads(_json(SC))
    document["max_score"] = 999
    with pytest.raises(InvalidInput, match=r"range must be 350\.\.950, got 350\.\.999"):
        load_scorecard(json.dumps(document))


# --- bins --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "points", "code"),
    [
        (0, 0, ""),
        (29, 0, ""),
        (30, -20, "L01"),
        (59, -20, "L01"),
        (60, -50, "L02"),
        (89, -50, "L02"),
        (90, -90, "L03"),
        (10_000, -90, "L03"),
    ],
)
def test_bin_for_late_payment_edges(value: int, points: int, code: str) -> None:
    score_bin = bin_for(_char(SC, "worst_late_payment_2y"), value)
    assert (score_bin.points, score_bin.reason_code) == (points, code)


def test_bin_for_every_edge_of_every_characteristic() -> None:
    for characteristic in SC.characteristics:
        bins = list(characteristic.bins)
        for index, score_bin in enumerate(bins):
            assert bin_for(characteristic, score_bin.lower) == score_bin
            if score_bin.HasField("upper"):
                assert bin_for(characteristic, score_bin.upper - 1) == score_bin
                assert bin_for(characteristic, score_bin.upper) == bins[index + 1]
            else:
                assert bin_for(characteristic, 2**40) == score_bin


def test_bin_for_refuses_negative_value() -> None:
    with pytest.raises(InvalidInput, match=r"value -1 has no bin in .*court_judgments_5y"):
        bin_for(_char(SC, "court_judgments_5y"), -1)


def test_best_points_and_reason_costs() -> None:
    assert best_points(_char(SC, "payment_history")) == 90
    assert best_points(_char(SC, "court_judgments_5y")) == 0
    costs = reason_costs(SC)
    assert costs["J01"] == 120
    assert costs["J02"] == 200
    assert costs["F01"] == 250
    assert costs["H01"] == 90
    assert costs["H02"] == 60
    assert costs["H03"] == 30
    assert set(costs) == set(SC.reason_texts)


# --- validation refusals -----------------------------------------------------

Mutation = Callable[[manifest_pb2.Scorecard], None]


def _gap(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "worst_late_payment_2y").bins[1].lower = 31


def _overlap(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "worst_late_payment_2y").bins[2].lower = 50


def _first_not_zero(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[0].lower = 1


def _negative_start(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[0].lower = -1


def _last_bounded(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[-1].upper = 10


def _middle_unbounded(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[1].ClearField("upper")


def _empty_bin(sc: manifest_pb2.Scorecard) -> None:
    characteristic = _char(sc, "court_judgments_5y")
    characteristic.bins[1].upper = 1
    characteristic.bins[2].lower = 1


def _adverse_without_code(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[1].reason_code = ""


def _best_with_code(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[0].reason_code = "J00"
    sc.reason_texts["J00"] = "none"


def _missing_text(sc: manifest_pb2.Scorecard) -> None:
    del sc.reason_texts["L02"]


def _empty_text(sc: manifest_pb2.Scorecard) -> None:
    sc.reason_texts["L02"] = ""


def _unused_text(sc: manifest_pb2.Scorecard) -> None:
    sc.reason_texts["Z99"] = "nothing uses this"


def _duplicate_code(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "tax_arrears_3y").bins[1].reason_code = "J01"


def _bad_code(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").bins[1].reason_code = "j-1"
    sc.reason_texts["j-1"] = "lowercase"


def _unknown_measure(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").measure = "sum_amount"


def _no_kinds(sc: manifest_pb2.Scorecard) -> None:
    del _char(sc, "court_judgments_5y").record_kinds[:]


def _blank_kind(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").record_kinds.append("")


def _twice_kind(sc: manifest_pb2.Scorecard) -> None:
    _char(sc, "court_judgments_5y").record_kinds.append("court_judgment")


def _no_bins(sc: manifest_pb2.Scorecard) -> None:
    del _char(sc, "court_judgments_5y").bins[:]


def _duplicate_name(sc: manifest_pb2.Scorecard) -> None:
    sc.characteristics[1].name = sc.characteristics[0].name


def _no_name(sc: manifest_pb2.Scorecard) -> None:
    sc.characteristics[0].name = ""


def _no_version(sc: manifest_pb2.Scorecard) -> None:
    sc.version = ""


def _min_score(sc: manifest_pb2.Scorecard) -> None:
    sc.min_score = 300


def _base_outside(sc: manifest_pb2.Scorecard) -> None:
    sc.base_points = 951


def _no_required(sc: manifest_pb2.Scorecard) -> None:
    sc.required_agencies = 0


def _no_characteristics(sc: manifest_pb2.Scorecard) -> None:
    del sc.characteristics[:]


def _band_gap(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[2].lower = 631


def _band_overlap(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[2].lower = 629


def _band_start(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[0].lower = 300


def _band_short(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[-1].upper = 949


def _band_long(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[-1].upper = 951


def _band_inverted(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[0].upper = 340


def _band_unnamed(sc: manifest_pb2.Scorecard) -> None:
    sc.bands[0].name = ""


def _no_bands(sc: manifest_pb2.Scorecard) -> None:
    del sc.bands[:]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_gap, r"'worst_late_payment_2y' bin 2: lower 31 leaves a gap after 30"),
        (
            _overlap,
            r"'worst_late_payment_2y' bin 3: lower 50 overlaps the previous bin.*ends at 60",
        ),
        (_first_not_zero, r"'court_judgments_5y' bin 1: lower 1 leaves a gap after 0"),
        (_negative_start, r"'court_judgments_5y' bin 1: lower -1 is negative"),
        (_last_bounded, r"'court_judgments_5y' bin 3: the last bin must be unbounded"),
        (_middle_unbounded, r"'court_judgments_5y' bin 2: only the last bin may be unbounded"),
        (_empty_bin, r"'court_judgments_5y' bin 2: upper 1 must be above lower 1"),
        (_adverse_without_code, r"bin 2: adverse bin \(-120 points, best is 0\) needs a reason_co"),
        (_best_with_code, r"bin 1: a best bin \(0 points\) must not carry reason code 'J00'"),
        (_missing_text, r"reason code 'L02' \('worst_late_payment_2y' bin 3\) has no reason text"),
        (_empty_text, r"reason code 'L02' .* has no reason text"),
        (_unused_text, r"reason_texts name codes no bin uses: Z99"),
        (_duplicate_code, r"'J01' is used by both 'court_judgments_5y' and 'tax_arrears_3y'"),
        (_bad_code, r"reason code 'j-1' must be 2-8 of A-Z 0-9"),
        (_unknown_measure, r"unknown measure 'sum_amount'; known: count, max_days_overdue"),
        (_no_kinds, r"'court_judgments_5y' needs non-empty record_kinds"),
        (_blank_kind, r"'court_judgments_5y' needs non-empty record_kinds"),
        (_twice_kind, r"'court_judgments_5y' lists a record kind twice"),
        (_no_bins, r"'court_judgments_5y' has no bins"),
        (_duplicate_name, r"name 'court_judgments_5y' appears twice"),
        (_no_name, r"characteristic without a name"),
        (_no_version, r"scorecard has no version"),
        (_min_score, r"range must be 350\.\.950, got 300\.\.950"),
        (_base_outside, r"base_points 951 is outside 350\.\.950"),
        (_no_required, r"required_agencies must be at least 1"),
        (_no_characteristics, r"scorecard has no characteristics"),
        (_band_gap, r"band 3 \('fair'\): lower 631 leaves a gap; expected 630"),
        (_band_overlap, r"band 3 \('fair'\): lower 629 overlaps; expected 630"),
        (_band_start, r"band 1 \('very poor'\): lower 300 overlaps; expected 350"),
        (_band_short, r"bands end at 949; they must end at 950"),
        (_band_long, r"bands end at 951; they must end at 950"),
        (_band_inverted, r"band 1 \('very poor'\): upper 340 is below lower 350"),
        (_band_unnamed, r"band 1 has no name"),
        (_no_bands, r"scorecard has no bands"),
    ],
)
def test_validate_refuses(mutate: Mutation, message: str) -> None:
    scorecard = default_scorecard()
    mutate(scorecard)
    with pytest.raises(InvalidInput, match=message):
        validate_scorecard(scorecard)
    with pytest.raises(InvalidInput, match=message):
        Aggregator(scorecard)


# --- aggregation (the registry's side) ----------------------------------------


def test_aggregate_adds_partials_to_base() -> None:
    outcome = aggregate_credit(SC, [(90, []), (-120, ["J01"])])
    assert outcome == CreditOutcome(
        score=SC.base_points - 30, band="fair", reason_codes=("J01",), provisional=False
    )


def test_aggregate_clamps_low_and_high() -> None:
    low = aggregate_credit(SC, [(-2000, ["F01"]), (-1, [])])
    assert (low.score, low.band) == (350, "very poor")
    high = aggregate_credit(SC, [(90, []), (90, []), (90, []), (90, [])])
    assert SC.base_points + 360 > 950
    assert (high.score, high.band) == (950, "excellent")


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (350, "very poor"),
        (549, "very poor"),
        (550, "poor"),
        (629, "poor"),
        (630, "fair"),
        (699, "fair"),
        (700, "good"),
        (759, "good"),
        (760, "very good"),
        (849, "very good"),
        (850, "excellent"),
        (950, "excellent"),
    ],
)
def test_bands(score: int, band: str) -> None:
    assert band_for(SC, score) == band
    outcome = aggregate_credit(SC, [(score - SC.base_points, []), (0, [])])
    assert (outcome.score, outcome.band) == (score, band)


def test_band_for_refuses_score_outside_range() -> None:
    with pytest.raises(InvalidInput, match="score 349 is in no band"):
        band_for(SC, 349)


@pytest.mark.parametrize(("answers", "provisional"), [(0, True), (1, True), (2, False), (3, False)])
def test_provisional_below_required_agencies(answers: int, provisional: bool) -> None:
    outcome = aggregate_credit(SC, [(0, [])] * answers)
    assert outcome.provisional is provisional
    assert outcome.score == SC.base_points


def test_reason_codes_ranked_by_summed_cost_across_agencies_top_four() -> None:
    partials = [
        (0, ["H01", "L01"]),
        (-200, ["J02", "H01"]),
        (-250, ["F01"]),
        (-100, ["D01", "H03", "T01"]),
    ]
    outcome = aggregate_credit(SC, partials)
    # Costs: F01 250, J02 200, J01 -, D01 100, H01 90, T01 80, H03 30, L01 20;
    # H01 is reported twice, so it cost 180 in all and outranks D01.
    assert outcome.reason_codes == ("F01", "J02", "H01", "D01")
    assert len(outcome.reason_codes) == MAX_REASON_CODES


def test_a_code_many_agencies_report_outranks_a_costlier_one_reported_once() -> None:
    # L04 costs 30, L02 50: three agencies' L04 cost 90 in all.
    partials = [(-50, ["L02"]), (-30, ["L04"]), (-30, ["L04"]), (-30, ["L04", "L04"])]
    assert aggregate_credit(SC, partials).reason_codes == ("L04", "L02")
    # One agency naming a code twice reports it once.
    assert aggregate_credit(SC, [(-50, ["L02"]), (-30, ["L04", "L04"])]).reason_codes == (
        "L02",
        "L04",
    )


def test_equal_costs_break_ties_in_scorecard_order() -> None:
    # L03 and H01 both cost 90; L03's characteristic comes first in the file.
    assert reason_costs(SC)["L03"] == reason_costs(SC)["H01"] == 90
    assert aggregate_credit(SC, [(0, ["H01"]), (-90, ["L03"])]).reason_codes == ("L03", "H01")


def test_aggregate_refuses_unknown_reason_code() -> None:
    with pytest.raises(InvalidInput, match="reason code 'X42' is not in scorecard"):
        aggregate_credit(SC, [(0, ["X42"])])


def test_aggregator_is_reusable_and_matches_function() -> None:
    aggregator = Aggregator(SC)
    assert aggregator.version == SC.version
    partials = [(-50, ["L02"]), (30, ["H02"])]
    assert aggregator.aggregate(partials) == aggregate_credit(SC, partials)
    assert aggregator.aggregate(partials) == aggregator.aggregate(partials)
