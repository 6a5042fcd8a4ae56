"""Aggregation: agencies' verified answers in, one unsigned ``Verdict`` out (pure).

Rules (DESIGN.md, "Verdicts"):

* Blacklist: LISTED if any answering agency lists the subject (categories are
  the sorted union of the listing agencies' categories, ``disputed`` whether any
  listing answer is contested); CLEAR only if every contributing agency
  answered and there was at least one (no agency at all proves nothing);
  otherwise INCOMPLETE with no categories.
* Credit: ``score = clamp(base + sum of partial points)`` through the caller's
  :class:`credence.scorecard.Aggregator`, with band and the top reason codes.
  Provisional when fewer agencies answered than the scorecard requires, or
  fewer than contribute to credit. When no agency answered at all the score is
  the scorecard's base points, always provisional: the field is present so the
  requester sees that credit was asked, and ``provisional`` says not to rely on it.

Answers are re-checked against what was asked, because a verdict must never
be built from content that was not asked for or that the scorecard cannot
read. An ANSWERED outcome is downgraded to INVALID_ANSWER (with a reason, and
its answer hash kept in coverage as evidence of what arrived) when:

* a blacklist was asked and the answer carries none, or credit likewise;
* the answer carries a kind that was not asked (over-sharing);
* its credit part was evaluated under another scorecard version;
* its credit part names a reason code the scorecard does not define.

Fan-out checks signatures, query binding and the agency's identity; this
module trusts it for those.

Per-kind contributors: a query names every asked kind and goes to every agency
contributing to any of them, so an agency that holds only blacklist records
also answers credit (with zero points). Passing ``contributors`` (kind -> member
ids, from the manifest, built once per manifest version) restricts each kind
to its own contributors: a credit-only agency that times out then does not make
the blacklist INCOMPLETE, and a blacklist-only agency's empty credit answer
does not count towards the scorecard's required agencies. Without it, every
outcome counts for every asked kind.

This is on the screening hot path (about 20,000 verdicts per second): the
scorecard is pre-parsed in the Aggregator, the happy path makes one
``Aggregator.aggregate`` call, and messages are built with one constructor each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import datetime

from central_registry.outcomes import AgencyOutcome
from credence.errors import InvalidInput
from credence.scorecard import Aggregator
from credence.v1 import agency_pb2, common_pb2, registry_pb2

__all__ = ["aggregate"]

_BLACKLIST = common_pb2.VERDICT_KIND_BLACKLIST
_CREDIT = common_pb2.VERDICT_KIND_CREDIT
_ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED
_INVALID = common_pb2.COVERAGE_STATE_INVALID_ANSWER


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
    scorecard_version: str,
    log_promise: common_pb2.Envelope | None,
    issued_at: datetime,
    expires_at: datetime,
    contributors: Mapping[int, Set[str]] | None = None,
) -> registry_pb2.Verdict:
    """Build the (unsigned) verdict of one lookup from its agencies' outcomes.

    Args:
        verdict_id: the new verdict's id.
        query_id: the query it answers.
        subject: who was looked up.
        requester: the member that asked.
        purpose: a ``common_pb2.Purpose`` value.
        kinds: the asked ``common_pb2.VerdictKind`` values.
        grant_id: the grant's jti, empty on the public-register basis.
        outcomes: one per agency asked, in the order coverage lists them.
        aggregator: built once from the scorecard by the caller.
        scorecard_version: the version named in the query; must be the aggregator's.
        log_promise: the signed log promise of the lookup, if any.
        issued_at: when the verdict is signed (tz-aware).
        expires_at: until when the requester may rely on it (tz-aware).
        contributors: optional kind -> member ids contributing to it (see module doc).

    Returns:
        The verdict, ready for :func:`credence.verdicts.sign_verdict`.

    Raises:
        ValueError: a programming error: ``scorecard_version`` is not the
            aggregator's, ``expires_at`` is not after ``issued_at``, or an agency
            appears twice in ``outcomes``.
    """
    if scorecard_version != aggregator.version:
        raise ValueError(
            f"scorecard_version {scorecard_version!r} is not the aggregator's "
            f"{aggregator.version!r}"
        )
    if expires_at <= issued_at:
        raise ValueError(f"verdict expires_at {expires_at} is not after issued_at {issued_at}")
    asks_blacklist = _BLACKLIST in kinds
    asks_credit = _CREDIT in kinds
    states = [outcome.state for outcome in outcomes]
    reasons = [outcome.reason for outcome in outcomes]
    if len({outcome.member_id for outcome in outcomes}) != len(outcomes):
        raise ValueError("outcomes name the same agency twice; give one outcome per agency")
    for index, outcome in enumerate(outcomes):
        if states[index] == _ANSWERED:
            problem = _answer_problem(outcome.answer, asks_blacklist, asks_credit, aggregator)
            if problem:
                states[index] = _INVALID
                reasons[index] = problem

    credit = None
    if asks_credit:
        members = contributors.get(_CREDIT) if contributors is not None else None
        credit = _credit(outcomes, states, reasons, aggregator, members)
    # After credit: credit may downgrade an answer (unknown reason code), and a
    # downgraded answer must not count for the blacklist either.
    blacklist = None
    if asks_blacklist:
        members = contributors.get(_BLACKLIST) if contributors is not None else None
        blacklist = _blacklist(outcomes, states, members)

    # None leaves a message field unset, so absent parts stay absent on the wire.
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
        blacklist=blacklist,
        credit=credit,
        log_promise=log_promise,
    )
    # Filled in place: building AgencyCoverage messages first and passing the
    # list copies each one again (measured ~40% slower for eight agencies).
    coverage = verdict.coverage
    add_agency = coverage.agencies.add
    answer_hashes = verdict.answer_hashes
    answered = 0
    for index, outcome in enumerate(outcomes):
        state = states[index]
        if state == _ANSWERED:
            answered += 1
            answer_hashes.append(outcome.answer_hash)
        add_agency(
            member_id=outcome.member_id,
            state=state,
            reason=reasons[index],
            answer_hash=outcome.answer_hash,
        )
    coverage.answered = answered
    coverage.expected = len(outcomes)
    return verdict


def _answer_problem(
    answer: agency_pb2.Answer | None,
    asks_blacklist: bool,
    asks_credit: bool,
    aggregator: Aggregator,
) -> str:
    """Why an ANSWERED outcome cannot be used, or "" when it can."""
    if answer is None:
        return "answered without an answer message"
    has_blacklist = answer.HasField("blacklist")
    has_credit = answer.HasField("credit")
    if has_blacklist != asks_blacklist:
        return _shape_problem("blacklist", asked=asks_blacklist)
    if has_credit != asks_credit:
        return _shape_problem("credit", asked=asks_credit)
    if has_credit and answer.credit.scorecard_version != aggregator.version:
        return (
            f"credit answer is under scorecard {answer.credit.scorecard_version!r}, "
            f"not {aggregator.version!r}"
        )
    return ""


def _shape_problem(part: str, *, asked: bool) -> str:
    if asked:
        return f"answer lacks the {part} part that was asked"
    return f"answer carries a {part} part that was not asked"


def _credit(
    outcomes: Sequence[AgencyOutcome],
    states: list[int],
    reasons: list[str],
    aggregator: Aggregator,
    members: Set[str] | None,
) -> registry_pb2.CreditVerdict:
    """The credit part; marks answers with reason codes unknown to the scorecard invalid."""
    indices = [
        index
        for index, outcome in enumerate(outcomes)
        if members is None or outcome.member_id in members
    ]
    usable = [index for index in indices if states[index] == _ANSWERED]
    try:
        result = aggregator.aggregate([_partial(outcomes[index]) for index in usable])
    except InvalidInput:
        # Rare path: find the culprits one by one so one bad agency cannot
        # sink the verdict, then aggregate the rest.
        kept: list[int] = []
        for index in usable:
            try:
                aggregator.aggregate([_partial(outcomes[index])])
            except InvalidInput as exc:
                states[index] = _INVALID
                reasons[index] = f"credit answer: {exc}"
            else:
                kept.append(index)
        usable = kept
        result = aggregator.aggregate([_partial(outcomes[index]) for index in usable])
    disputed = False
    for index in usable:
        credit = outcomes[index].answer.credit  # type: ignore[union-attr]
        disputed = disputed or credit.disputed
    return registry_pb2.CreditVerdict(
        score=result.score,
        band=result.band,
        reason_codes=result.reason_codes,
        provisional=result.provisional or len(usable) < len(indices),
        disputed=disputed,
    )


def _partial(outcome: AgencyOutcome) -> tuple[int, Sequence[str]]:
    credit = outcome.answer.credit  # type: ignore[union-attr]
    return credit.partial_points, credit.reason_codes


def _blacklist(
    outcomes: Sequence[AgencyOutcome], states: list[int], members: Set[str] | None
) -> registry_pb2.BlacklistVerdict:
    expected = 0
    answered = 0
    listing = 0
    disputed = False
    categories: set[str] = set()
    for index, outcome in enumerate(outcomes):
        if members is not None and outcome.member_id not in members:
            continue
        expected += 1
        if states[index] != _ANSWERED:
            continue
        answered += 1
        assertion = outcome.answer.blacklist  # type: ignore[union-attr]
        if assertion.listed:
            listing += 1
            categories.update(assertion.categories)
            disputed = disputed or assertion.disputed
    if listing:
        return registry_pb2.BlacklistVerdict(
            status=common_pb2.BLACKLIST_STATUS_LISTED,
            categories=sorted(categories),
            disputed=disputed,
            listing_agencies=listing,
        )
    if expected and answered == expected:
        return registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_CLEAR)
    return registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_INCOMPLETE)
