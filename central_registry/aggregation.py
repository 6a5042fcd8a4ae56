"""Aggregation: agencies' verified masked answers in, one unsigned ``Verdict`` out (pure).

Answers arrive masked (docs/protocol.md section 10): each is a vector of the
scorecard's layout (:mod:`credence.blind.layout`) under pairwise masks, and
only the sum of every answering agency's vector can be read. This module adds
the masked vectors, removes the recovery shares of the agencies that did not
answer (:mod:`central_registry.mask_recovery` asks for them), and reads every
verdict field from the sum with :func:`credence.blind.sums.verdict_from_sum`:

* Blacklist: LISTED when the ``listed`` sum is above 0 (the categories whose
  sum is above 0, ``listing_agencies`` the ``listed`` sum, ``disputed`` when
  ``listed_and_disputed`` is); CLEAR only if every contributing agency
  answered and there was at least one; otherwise INCOMPLETE.
* Credit: ``score = clamp(base + points sum)`` with band and the top reason
  codes; provisional when fewer agencies answered than the scorecard requires
  or than contribute to credit. With no answer at all the score is the
  scorecard's base points, provisional.

No single agency's contribution is ever read: the registry holds the sum only.

An ANSWERED outcome is downgraded to INVALID_ANSWER (with a reason, its answer
hash kept in coverage as evidence of what arrived) when it carries a cleartext
part, follows another layout, or has a vector of the wrong length; its
agency then counts as missing, like one that timed out.

The verdict is INCOMPLETE (blacklist INCOMPLETE, credit the base points,
provisional) with ``incomplete_reason`` set when the sum cannot be read: an
answering agency gave no recovery share, or the sum is one no honest answers
can give (:func:`credence.blind.sums.check_sum`; a slot of a kind that was not
asked summing to anything but 0 counts as such).

Per-kind contributors: a query goes to every agency contributing to any asked
kind, and a node fills only the parts it contributes to (zeros elsewhere).
Passing ``contributors`` (kind -> member ids, from the manifest) counts each
kind's answering and expected agencies among its own contributors only: a
credit-only agency that times out then does not make the blacklist
INCOMPLETE, and a blacklist-only agency does not count towards the
scorecard's required agencies. Without it, every outcome counts for every
asked kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.unknown_fields import UnknownFieldSet

from central_registry.outcomes import AgencyOutcome
from credence.blind.layout import VectorLayout
from credence.blind.reading import impossible_reason, kind_counts, verdict_parts
from credence.blind.recovery import remove_recovery
from credence.blind.sums import add
from credence.scorecard import Aggregator
from credence.v1 import agency_pb2, common_pb2, registry_pb2

__all__ = [
    "Aggregated",
    "Recovery",
    "aggregate",
    "answer_problem",
    "usable_members",
]

_BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
_CREDIT = common_pb2.VERDICT_KIND_CREDIT
_ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED
_INVALID = common_pb2.COVERAGE_STATE_INVALID_ANSWER


@dataclass(frozen=True, slots=True)
class Recovery:
    """The recovery shares of one query (or batch), as the fan-out gathered them.

    Attributes:
        shares: answering agency -> its share (the masks it applied with the
            missing agencies), verified against its signature.
        envelopes: the node-signed shares, for the verdict to carry.
        failure: why the shares do not cover every answering agency, or "".
    """

    shares: Mapping[str, Sequence[int]] = field(default_factory=dict)
    envelopes: Sequence[common_pb2.Envelope] = ()
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Aggregated:
    """A verdict with the sum it was read from, for the explanation of its credit part.

    Attributes:
        verdict: the unsigned verdict.
        summed: the answering agencies' plain sum, or None when it could not
            be read (``verdict.incomplete_reason`` says why).
        credit_answering: how many credit agencies' answers are in the sum.
        credit_expected: how many credit agencies were asked.
    """

    verdict: registry_pb2.Verdict
    summed: list[int] | None
    credit_answering: int
    credit_expected: int


def answer_problem(answer: agency_pb2.Answer | None, layout: VectorLayout) -> str:
    """Why an answer cannot be added into the sum, or "" when it can."""
    if answer is None:
        return "answered without an answer message"
    if len(UnknownFieldSet(answer)):
        return (
            "answer carries fields outside the masked answer (a cleartext part?); "
            "answers are masked vectors (docs/protocol.md section 10)"
        )
    if answer.layout_id != layout.layout_id:
        return f"answer follows layout {answer.layout_id!r}, not {layout.layout_id!r}"
    if len(answer.masked) != layout.length:
        return (
            f"answer has {len(answer.masked)} vector words; "
            f"layout {layout.layout_id} has {layout.length}"
        )
    return ""


def usable_members(
    outcomes: Sequence[AgencyOutcome], layout: VectorLayout
) -> tuple[list[str], list[str]]:
    """The agencies whose answers go into the sum, and the ones missing from it, in order."""
    answering: list[str] = []
    missing: list[str] = []
    for outcome in outcomes:
        if outcome.state == _ANSWERED and not answer_problem(outcome.answer, layout):
            answering.append(outcome.member_id)
        else:
            missing.append(outcome.member_id)
    return answering, missing


def aggregate(
    *,
    verdict_id: str,
    query_id: str,
    subject: common_pb2.SubjectRef,
    requester: str,
    purpose: int,
    kinds: Sequence[int],
    grant_id: str,
    outcomes: Sequence[AgencyOutcome],
    aggregator: Aggregator,
    layout: VectorLayout,
    scorecard_version: str,
    log_promise: common_pb2.Envelope | None,
    issued_at: datetime,
    expires_at: datetime,
    contributors: Mapping[int, Set[str]] | None = None,
    recovery: Recovery | None = None,
) -> Aggregated:
    """Build the (unsigned) verdict of one lookup from the sum of its agencies' answers.

    Args:
        verdict_id: the new verdict's id.
        query_id: the query it answers.
        subject: who was looked up.
        requester: the member that asked.
        purpose: a ``common_pb2.Purpose`` value.
        kinds: the asked ``common_pb2.VerdictKind`` values.
        grant_id: the grant's jti, empty on the public-register basis.
        outcomes: one per agency asked (the query's audience), in coverage order.
        aggregator: built once from the scorecard by the caller.
        layout: the scorecard's vector layout.
        scorecard_version: the version named in the query; must be the aggregator's.
        log_promise: the signed log promise of the lookup, if any.
        issued_at: when the verdict is signed (tz-aware).
        expires_at: until when the requester may rely on it (tz-aware).
        contributors: optional kind -> member ids contributing to it (see module doc).
        recovery: the shares of the answering agencies when some agency is
            missing; without it such a sum cannot be read.

    Returns:
        The verdict, ready for :func:`credence.verdicts.sign_verdict`, with
        the sum it was read from and the credit agencies counted.

    Raises:
        ValueError: a programming error: ``scorecard_version`` is not the
            aggregator's or the layout's, ``expires_at`` is not after
            ``issued_at``, or an agency appears twice in ``outcomes``.
    """
    if scorecard_version != aggregator.version or scorecard_version != layout.scorecard_version:
        raise ValueError(
            f"scorecard_version {scorecard_version!r} is not the aggregator's "
            f"{aggregator.version!r} or the layout's {layout.scorecard_version!r}"
        )
    if expires_at <= issued_at:
        raise ValueError(f"verdict expires_at {expires_at} is not after issued_at {issued_at}")
    if len({outcome.member_id for outcome in outcomes}) != len(outcomes):
        raise ValueError("outcomes name the same agency twice; give one outcome per agency")
    states = [outcome.state for outcome in outcomes]
    reasons = [outcome.reason for outcome in outcomes]
    usable: list[int] = []
    for index, outcome in enumerate(outcomes):
        if states[index] == _ANSWERED:
            problem = answer_problem(outcome.answer, layout)
            if problem:
                states[index] = _INVALID
                reasons[index] = problem
            else:
                usable.append(index)
    summed, why = _sum(outcomes, usable, layout, recovery)
    if not why:
        why = impossible_reason(layout, summed, len(usable), kinds)
    counts = kind_counts(
        [outcome.member_id for outcome in outcomes],
        {outcomes[index].member_id for index in usable},
        kinds,
        contributors,
    )
    blacklist, credit = verdict_parts(
        layout, None if why else summed, aggregator=aggregator, counts=counts
    )
    verdict = registry_pb2.Verdict(
        verdict_id=verdict_id,
        query_id=query_id,
        subject=subject,
        requester=requester,
        purpose=purpose,  # type: ignore[arg-type]
        kinds=kinds,  # type: ignore[arg-type]
        # The runtime converts datetimes to Timestamps; the stubs do not say so.
        issued_at=issued_at,  # type: ignore[arg-type]
        expires_at=expires_at,  # type: ignore[arg-type]
        scorecard_version=scorecard_version,
        grant_id=grant_id,
        blacklist=blacklist if _BLACKLIST in kinds else None,
        credit=credit if _CREDIT in kinds else None,
        log_promise=log_promise,
        incomplete_reason=why,
    )
    # Filled in place: building AgencyCoverage messages first and passing the
    # list copies each one again (measured ~40% slower for eight agencies).
    coverage = verdict.coverage
    add_agency = coverage.agencies.add
    answer_hashes = verdict.answer_hashes
    answers = verdict.answers
    for index, outcome in enumerate(outcomes):
        state = states[index]
        if state == _ANSWERED:
            answer_hashes.append(outcome.answer_hash)
            if outcome.envelope is not None:
                answers.append(outcome.envelope)
        add_agency(
            member_id=outcome.member_id,
            state=state,
            reason=reasons[index],
            answer_hash=outcome.answer_hash,
        )
    if recovery is not None and len(usable) < len(outcomes):
        verdict.recoveries.extend(recovery.envelopes)
    coverage.answered = len(usable)
    coverage.expected = len(outcomes)
    credit_answering, credit_expected = counts[_CREDIT]
    return Aggregated(verdict, None if why else summed, credit_answering, credit_expected)


def _sum(
    outcomes: Sequence[AgencyOutcome],
    usable: Sequence[int],
    layout: VectorLayout,
    recovery: Recovery | None,
) -> tuple[list[int], str]:
    """The plain sum of the usable answers, or zeros and why it cannot be read."""
    zeros = [0] * layout.length
    if not usable:
        return zeros, ""
    summed = add(outcomes[index].answer.masked for index in usable)  # type: ignore[union-attr]
    if len(usable) == len(outcomes):
        return summed, ""
    if recovery is None:
        return zeros, "agencies are missing and no recovery shares were asked for"
    if recovery.failure:
        return zeros, recovery.failure
    shares = []
    for index in usable:
        member = outcomes[index].member_id
        share = recovery.shares.get(member)
        if share is None or len(share) != layout.length:
            return zeros, f"agency {member} answered but gave no usable recovery share"
        shares.append(share)
    return remove_recovery(summed, shares), ""
