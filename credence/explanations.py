"""Explanations of credit verdicts: built from the answers' sum, checked, put in words (pure).

The registry signs one :class:`~credence.v1.registry_pb2.Explanation` per
credit verdict (payload type ``EXPLANATION``): the scorecard applied, the base
points, the sum of every agency's partial points, the band edges, and for each
of the verdict's reason codes (at most four, in the verdict's order) the
points it cost summed over every agency that reported it, with the score and
band the verdict would have had without those points. Every figure comes from
the sum of the answer vectors (:mod:`credence.blind.layout`): a reason slot
holds the code's cost once per reporting agency, so its sum is what the code
cost in all, and no agency is ever named.

* :func:`explain` builds it (the registry);
* :func:`check_figures` checks what follows from the scorecard alone (the
  arithmetic, the bands, each reason a scored factor);
* :func:`check_explanation` also checks it against the verdict it explains
  (the requester, or anyone holding both);
* :func:`open_explanation` verifies the registry's signature and payload type,
  :func:`verify_explanation` that and :func:`check_explanation` together;
* :func:`describe` puts it in plain English for the CLI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC

from credence import payloads
from credence.blind.layout import VectorLayout
from credence.blind.sums import to_signed
from credence.encoding import format_time
from credence.envelope import Envelope, verify_message
from credence.errors import ClaimMismatch
from credence.keys import KeySet
from credence.manifest import TrustedManifest
from credence.scorecard import MAX_REASON_CODES, reason_costs
from credence.v1 import common_pb2, manifest_pb2, registry_pb2

__all__ = [
    "check_explanation",
    "check_figures",
    "describe",
    "explain",
    "open_explanation",
    "verdict_hash",
    "verify_explanation",
]

_PURPOSE_WORDS = {
    common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION: "counterparty verification",
    common_pb2.PURPOSE_CREDIT_ASSESSMENT: "a credit decision",
    common_pb2.PURPOSE_TENANCY_SCREENING: "tenancy screening",
    common_pb2.PURPOSE_EMPLOYMENT_SCREENING: "employment screening",
    common_pb2.PURPOSE_LEGAL_MANDATE: "a legal mandate",
}


def verdict_hash(verdict_payload: bytes) -> bytes:
    """SHA-256 of a signed verdict's payload bytes (``Explanation.verdict_hash``)."""
    return hashlib.sha256(verdict_payload).digest()


def _clamp(scorecard: manifest_pb2.Scorecard, points: int) -> int:
    return min(max(scorecard.base_points + points, scorecard.min_score), scorecard.max_score)


def _band(scorecard: manifest_pb2.Scorecard, score: int) -> str:
    return next(b.name for b in scorecard.bands if b.lower <= score <= b.upper)


def _characteristics(scorecard: manifest_pb2.Scorecard) -> dict[str, str]:
    """Reason code -> the characteristic whose bin carries it."""
    return {
        score_bin.reason_code: characteristic.name
        for characteristic in scorecard.characteristics
        for score_bin in characteristic.bins
        if score_bin.reason_code
    }


def _reason_text(scorecard: manifest_pb2.Scorecard, code: str) -> str:
    text = scorecard.reason_texts.get(code, "")
    if text:
        return text
    name = _characteristics(scorecard).get(code, "")
    return next((c.description for c in scorecard.characteristics if c.name == name), "")


def explain(
    verdict: registry_pb2.Verdict,
    verdict_payload: bytes,
    *,
    scorecard: manifest_pb2.Scorecard,
    layout: VectorLayout,
    summed: Sequence[int] | None,
    credit_answering: int,
    credit_expected: int,
    manifest_version: int,
    scorecard_url: str,
) -> registry_pb2.Explanation:
    """The explanation of ``verdict``'s credit part, from the answers' sum.

    Args:
        verdict: the signed verdict (with a credit part).
        verdict_payload: its payload bytes exactly as signed.
        scorecard: the scorecard the verdict was made under.
        layout: that scorecard's vector layout.
        summed: the answering agencies' plain sum, or None when it could not
            be read (the verdict then holds the base points and no reasons).
        credit_answering: how many credit agencies' answers are in the sum.
        credit_expected: how many credit agencies were asked.
        manifest_version: the manifest that published the scorecard.
        scorecard_url: where a person reads the scorecard.

    Raises:
        ValueError: a programming error: the verdict has no credit part, or
            the sum, layout and scorecard are of different versions.
    """
    if not verdict.HasField("credit"):
        raise ValueError(f"verdict {verdict.verdict_id!r} has no credit part to explain")
    if not (verdict.scorecard_version == scorecard.version == layout.scorecard_version):
        raise ValueError(
            f"verdict scorecard {verdict.scorecard_version!r}, scorecard {scorecard.version!r} "
            f"and layout {layout.scorecard_version!r} differ"
        )
    total = 0
    cost: dict[str, int] = {}
    if summed is not None:
        if len(summed) != layout.length:
            raise ValueError(f"a sum of {len(summed)} values does not fit {layout.layout_id}")
        total = to_signed(summed[layout.points_index])
        first = layout.points_index + 1
        cost = {
            code: to_signed(summed[first + offset])
            for offset, code in enumerate(layout.reason_codes)
        }
    characteristics = _characteristics(scorecard)
    reasons = []
    for code in verdict.credit.reason_codes:
        points = -cost.get(code, 0)
        without = _clamp(scorecard, total - points)
        reasons.append(
            registry_pb2.ExplainedReason(
                reason_code=code,
                text=_reason_text(scorecard, code),
                characteristic=characteristics.get(code, ""),
                points=points,
                score_without=without,
                band_without=_band(scorecard, without),
            )
        )
    return registry_pb2.Explanation(
        verdict_id=verdict.verdict_id,
        query_id=verdict.query_id,
        subject=verdict.subject,
        requester=verdict.requester,
        purpose=verdict.purpose,
        issued_at=verdict.issued_at,
        verdict_hash=verdict_hash(verdict_payload),
        scorecard_version=scorecard.version,
        manifest_version=manifest_version,
        scorecard_url=scorecard_url,
        base_points=scorecard.base_points,
        points_total=total,
        min_score=scorecard.min_score,
        max_score=scorecard.max_score,
        score=verdict.credit.score,
        band=verdict.credit.band,
        bands=scorecard.bands,
        reasons=reasons,
        provisional=verdict.credit.provisional,
        disputed=verdict.credit.disputed,
        credit_answering=credit_answering,
        credit_expected=credit_expected,
    )


def _differs(what: str, field: str, have: object, want: object) -> None:
    if have != want:
        raise ClaimMismatch(f"{what}: {field} is {have!r}; it should be {want!r}")


def check_figures(explanation: registry_pb2.Explanation, scorecard: manifest_pb2.Scorecard) -> None:
    """Check everything in ``explanation`` that follows from ``scorecard``.

    The scorecard's base points, range and bands; ``score`` =
    clamp(base + total) and its band; at most four reasons, each a code of a
    scored factor with that factor and text, costing a whole number (at least
    one) of the code's cost per answering agency, most costly first (ties in
    scorecard order), and each counterfactual clamp(base + total - points)
    with its band.

    Raises:
        ClaimMismatch: names the first field that does not follow.
    """
    what = f"explanation of verdict {explanation.verdict_id!r}"
    _differs(what, "scorecard_version", explanation.scorecard_version, scorecard.version)
    _differs(what, "base_points", explanation.base_points, scorecard.base_points)
    _differs(what, "min_score", explanation.min_score, scorecard.min_score)
    _differs(what, "max_score", explanation.max_score, scorecard.max_score)
    _differs(what, "bands", list(explanation.bands), list(scorecard.bands))
    if explanation.credit_answering > explanation.credit_expected:
        raise ClaimMismatch(
            f"{what}: credit_answering {explanation.credit_answering} is above "
            f"credit_expected {explanation.credit_expected}"
        )
    score = _clamp(scorecard, explanation.points_total)
    _differs(what, "score", explanation.score, score)
    _differs(what, "band", explanation.band, _band(scorecard, score))
    if len(explanation.reasons) > MAX_REASON_CODES:
        raise ClaimMismatch(
            f"{what}: {len(explanation.reasons)} reasons; at most {MAX_REASON_CODES} are given"
        )
    costs = reason_costs(scorecard)
    order = {code: index for index, code in enumerate(costs)}
    characteristics = _characteristics(scorecard)
    codes = [reason.reason_code for reason in explanation.reasons]
    if len(set(codes)) != len(codes):
        raise ClaimMismatch(f"{what}: a reason code appears twice in {codes}")
    for reason in explanation.reasons:
        code = reason.reason_code
        where = f"{what} reason {code!r}"
        if code not in costs:
            raise ClaimMismatch(f"{where} is no factor scorecard {scorecard.version!r} scores")
        _differs(where, "characteristic", reason.characteristic, characteristics[code])
        _differs(where, "text", reason.text, _reason_text(scorecard, code))
        count, rest = divmod(-reason.points, costs[code])
        if rest or not 1 <= count <= max(explanation.credit_answering, 1):
            raise ClaimMismatch(
                f"{where}: points {reason.points} are not -{costs[code]} (its cost) times "
                f"1..{max(explanation.credit_answering, 1)} answering agencies"
            )
        without = _clamp(scorecard, explanation.points_total - reason.points)
        _differs(where, "score_without", reason.score_without, without)
        _differs(where, "band_without", reason.band_without, _band(scorecard, without))
    ranks = [(reason.points, order[reason.reason_code]) for reason in explanation.reasons]
    if ranks != sorted(ranks):
        raise ClaimMismatch(
            f"{what}: reasons {codes} are not most costly first (summed points, ties in "
            "scorecard order)"
        )


def check_explanation(
    explanation: registry_pb2.Explanation,
    verdict: registry_pb2.Verdict,
    scorecard: manifest_pb2.Scorecard,
    verdict_payload: bytes,
) -> None:
    """Check ``explanation`` against the verdict it explains and the scorecard applied.

    The ids, subject, requester, purpose and time are the verdict's;
    ``verdict_hash`` is SHA-256 of ``verdict_payload``; score, band, provisional,
    disputed and the reason codes (in order) are the verdict's credit part;
    and everything :func:`check_figures` checks.

    Raises:
        ClaimMismatch: names the first field that does not follow.
    """
    what = f"explanation of verdict {explanation.verdict_id!r}"
    if not verdict.HasField("credit"):
        raise ClaimMismatch(f"{what}: verdict {verdict.verdict_id!r} has no credit part")
    _differs(what, "verdict_hash", explanation.verdict_hash, verdict_hash(verdict_payload))
    _differs(what, "verdict_id", explanation.verdict_id, verdict.verdict_id)
    _differs(what, "query_id", explanation.query_id, verdict.query_id)
    _differs(what, "subject", explanation.subject, verdict.subject)
    _differs(what, "requester", explanation.requester, verdict.requester)
    _differs(what, "purpose", explanation.purpose, verdict.purpose)
    _differs(what, "issued_at", explanation.issued_at, verdict.issued_at)
    _differs(what, "scorecard_version", explanation.scorecard_version, verdict.scorecard_version)
    credit = verdict.credit
    _differs(what, "score", explanation.score, credit.score)
    _differs(what, "band", explanation.band, credit.band)
    _differs(what, "provisional", explanation.provisional, credit.provisional)
    _differs(what, "disputed", explanation.disputed, credit.disputed)
    _differs(
        what,
        "reason codes",
        [reason.reason_code for reason in explanation.reasons],
        list(credit.reason_codes),
    )
    check_figures(explanation, scorecard)


def open_explanation(envelope: Envelope, registry_keys: KeySet) -> registry_pb2.Explanation:
    """Verify a registry-signed explanation envelope and parse it.

    Raises:
        WrongPayloadType: the envelope is not an explanation.
        UnknownKey: signed only by keys that are not the registry's.
        BadSignature: a registry signature does not verify.
        InvalidInput: the payload is not an Explanation.
    """
    return verify_message(envelope, payloads.EXPLANATION, registry_keys, registry_pb2.Explanation)


def verify_explanation(
    envelope: Envelope,
    verdict: registry_pb2.Verdict,
    verdict_envelope: Envelope,
    manifest: TrustedManifest,
) -> registry_pb2.Explanation:
    """Open a signed explanation and check it against its verified verdict and the scorecard.

    Args:
        envelope: the explanation's envelope as received.
        verdict: the verdict, already verified from ``verdict_envelope``.
        verdict_envelope: the verdict's own envelope (its payload is hashed).
        manifest: the verified manifest the verdict was made under.

    Raises:
        WrongPayloadType: the envelope is not an explanation.
        UnknownKey: signed only by keys that are not the registry's.
        BadSignature: a registry signature does not verify.
        InvalidInput: the payload is not an Explanation.
        ClaimMismatch: a field does not follow from the verdict or the scorecard.
    """
    explanation = open_explanation(envelope, manifest.registry_keys)
    check_explanation(explanation, verdict, manifest.scorecard, verdict_envelope.payload)
    return explanation


def _signed(points: int) -> str:
    return f"{points:+d}"


def describe(explanation: registry_pb2.Explanation) -> list[str]:
    """The explanation in plain English, one sentence a line."""
    bands = {band.name: band for band in explanation.bands}

    def band_words(name: str) -> str:
        band = bands.get(name)
        return f"band {name}, {band.lower}-{band.upper}" if band else f"band {name}"

    issued = format_time(explanation.issued_at.ToDatetime(tzinfo=UTC))
    purpose = _PURPOSE_WORDS.get(explanation.purpose, "an unstated purpose")
    lines = [
        f"Verdict {explanation.verdict_id}, issued {issued} to {explanation.requester} "
        f"for {purpose}.",
        f"Your score is {explanation.score} ({band_words(explanation.band)}), "
        f"on a scale of {explanation.min_score}-{explanation.max_score}.",
        f"Base {explanation.base_points} points; the agencies' records together added "
        f"{_signed(explanation.points_total)}.",
    ]
    if explanation.base_points + explanation.points_total != explanation.score:
        lines.append(
            f"{explanation.base_points + explanation.points_total} is outside the scale, "
            f"so the score is held at {explanation.score}."
        )
    if not explanation.reasons:
        lines.append("No record cost you points.")
    for reason in explanation.reasons:
        lines.append(
            f"Reason {reason.reason_code} ({reason.characteristic}): {reason.text} "
            f"It cost {_signed(reason.points)} points; without them the score would be "
            f"{reason.score_without}, {band_words(reason.band_without)}."
        )
    lines.append(
        f"{explanation.credit_answering} of {explanation.credit_expected} credit agencies "
        "answered; the figures are sums over them and name no agency."
    )
    if explanation.provisional:
        lines.append("The score is provisional: fewer agencies answered than the scorecard needs.")
    if explanation.disputed:
        lines.append("A record that counted is contested.")
    lines.append(
        f"Scorecard {explanation.scorecard_version} (manifest version "
        f"{explanation.manifest_version})"
        + (f", published at {explanation.scorecard_url}." if explanation.scorecard_url else ".")
    )
    return lines
