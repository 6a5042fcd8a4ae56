"""The registry's messages as the portal shows them: plain words from the catalogue.

Pure functions over protobuf messages; the templates only lay them out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from credence.client.subject import ReviewView
from credence.client.subject_records import AgencyAnswer
from credence.portal.strings import Catalogue
from credence.v1 import common_pb2, registry_pb2

__all__ = [
    "ContestView",
    "ExplanationView",
    "GrantView",
    "LookupView",
    "RecordsView",
    "ReviewStatusView",
    "contest_views",
    "explanation_views",
    "grant_views",
    "lookup_views",
    "records_views",
    "review_views",
]


def _moment(stamp: Timestamp) -> datetime | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def when(t: Catalogue, stamp: Timestamp) -> str:
    """A timestamp in words (minutes, UTC), or "never" when unset."""
    moment = _moment(stamp)
    if moment is None:
        return t("time.never")
    return t("time.at", day=f"{moment:%Y-%m-%d}", time=f"{moment:%H:%M}")


def _day(stamp: Timestamp) -> str:
    moment = _moment(stamp)
    return "—" if moment is None else f"{moment:%Y-%m-%d}"


def _enum_words(t: Catalogue, prefix: str, names: dict[int, str], value: int) -> str:
    name = names.get(value, str(value))
    key = f"{prefix}.{name}"
    return t(key) if t.has(key) else t(f"{prefix}.unknown", name=name)


_STATUS_CODE = re.compile(r"^[A-Z][A-Z_]+: ")
_PURPOSES: dict[int, str] = {int(value): name for name, value in common_pb2.Purpose.items()}
_KINDS: dict[int, str] = {int(value): name for name, value in common_pb2.VerdictKind.items()}


def purpose_words(t: Catalogue, purpose: int) -> str:
    """A purpose in words: what the requester said it would decide."""
    return _enum_words(t, "purpose", _PURPOSES, purpose)


def kinds_words(t: Catalogue, kinds: Sequence[int]) -> str:
    """What was asked, in words: "whether you are on a blacklist and your credit score"."""
    shown = [_enum_words(t, "kind", _KINDS, kind) for kind in kinds]
    if not shown:
        return t("list.nothing")
    if len(shown) == 1:
        return shown[0]
    return t("list.and", first=", ".join(shown[:-1]), last=shown[-1])


def _plain(name: str) -> str:
    """A machine word in words: ``court_judgment`` -> ``court judgment``."""
    return name.replace("_", " ")


@dataclass(frozen=True)
class LookupView:
    """One lookup as a row."""

    query_id: str
    when: str
    who: str
    why: str
    what: str
    outcome: str
    refused: bool
    basis: str
    verdict_id: str


def lookup_views(t: Catalogue, lookups: Sequence[registry_pb2.LookupRecord]) -> list[LookupView]:
    """The lookups newest first, in words."""
    rows = []
    for lookup in sorted(lookups, key=lambda item: item.at.ToNanoseconds(), reverse=True):
        refused = lookup.outcome.startswith("refused")
        # "refused: PERMISSION_DENIED: grant ... was revoked": the words, not the status code.
        reason = _STATUS_CODE.sub("", lookup.outcome.removeprefix("refused").lstrip(": "))
        outcome = t("lookups.refused", reason=reason) if refused else t("lookups.served")
        if lookup.basis.startswith("consent "):
            basis = t("basis.consent", grant_id=lookup.basis.removeprefix("consent "))
        elif lookup.basis:
            basis = t("basis.other", basis=lookup.basis)
        else:
            basis = t("basis.none")
        rows.append(
            LookupView(
                query_id=lookup.query_id,
                when=when(t, lookup.at),
                who=lookup.requester,
                why=purpose_words(t, lookup.purpose),
                what=kinds_words(t, lookup.kinds),
                outcome=outcome,
                refused=refused,
                basis=basis,
                verdict_id=lookup.verdict_id,
            )
        )
    return rows


@dataclass(frozen=True)
class GrantView:
    """One consent or mandate."""

    grant_id: str
    title: str
    is_consent: bool
    requester: str
    purpose: str
    covers: str
    uses: str
    until: str
    revoked: str


def grant_view(t: Catalogue, grant: registry_pb2.GrantRecord) -> GrantView:
    """A grant in words."""
    is_consent = grant.kind == "consent"
    title = t("grants.consent" if is_consent else "grants.mandate", requester=grant.requester)
    uses = (
        t("grants.uses_of", uses=grant.uses, max_uses=grant.max_uses)
        if grant.max_uses
        else t("grants.uses_only", uses=grant.uses)
    )
    revoked = (
        t("grants.revoked", when=when(t, grant.revoked_at)) if grant.HasField("revoked_at") else ""
    )
    return GrantView(
        grant_id=grant.grant_id,
        title=title,
        is_consent=is_consent,
        requester=grant.requester,
        purpose=purpose_words(t, grant.purpose),
        covers=kinds_words(t, grant.kinds),
        uses=uses,
        until=when(t, grant.expires_at),
        revoked=revoked,
    )


def grant_views(t: Catalogue, grants: Sequence[registry_pb2.GrantRecord]) -> list[GrantView]:
    """Every grant, in force first."""
    views = [grant_view(t, grant) for grant in grants]
    return sorted(views, key=lambda view: (bool(view.revoked), view.title, view.grant_id))


@dataclass(frozen=True)
class RecordRow:
    """One record held by an agency."""

    kind: str
    category: str
    status: str
    since: str
    until: str
    amount: str
    overdue: str
    disputed: bool


@dataclass(frozen=True)
class RecordsView:
    """One agency's answer."""

    agency: str
    records: list[RecordRow]
    problem: str
    shown_note: str


def records_views(t: Catalogue, answers: Sequence[AgencyAnswer]) -> list[RecordsView]:
    """Each agency's opened answer, or why it could not be read."""
    views = []
    for answer in answers:
        if answer.records is None:
            views.append(RecordsView(answer.agency, [], answer.problem, ""))
            continue
        held = answer.records.records
        rows = [
            RecordRow(
                kind=_plain(record.kind),
                category=_plain(record.category),
                status=_plain(record.status),
                since=_day(record.occurred_at),
                until=_day(record.expires_at),
                amount=record.amount_band or "—",
                overdue=str(record.days_overdue) if record.days_overdue else "—",
                disputed=record.disputed,
            )
            for record in held
        ]
        total = int(answer.records.total)
        note = t("records.shown", shown=len(held), total=total) if total > len(held) else ""
        # The agency's how_to_contest names the command line; here the dispute
        # button below its records does that.
        views.append(RecordsView(answer.agency, rows, "", note))
    return views


@dataclass(frozen=True)
class ContestView:
    """One contest and where it stands."""

    contest_id: str
    agency: str
    which: str
    state: str
    filed: str
    resolved: str
    due: str
    overdue: str


def contest_views(
    t: Catalogue, contests: Sequence[registry_pb2.ContestRecord]
) -> list[ContestView]:
    """The subject's contests, newest first."""
    rows = []
    for contest in sorted(contests, key=lambda item: item.filed_at.ToNanoseconds(), reverse=True):
        state_key = f"state.{contest.state}"
        rows.append(
            ContestView(
                contest_id=contest.contest_id,
                agency=contest.agency,
                which=_plain(contest.record_kind)
                if contest.record_kind
                else t("contests.kind_all"),
                state=t(state_key) if t.has(state_key) else contest.state,
                filed=when(t, contest.filed_at),
                resolved=(
                    when(t, contest.resolved_at)
                    if contest.HasField("resolved_at")
                    else t("contests.not_yet")
                ),
                due=_day(contest.due_at) if contest.HasField("due_at") else t("contests.no_due"),
                # The registry says when the clock ran out; the notice names the day it did.
                overdue=t("contests.overdue", day=_day(contest.due_at)) if contest.overdue else "",
            )
        )
    return rows


def _signed(points: int) -> str:
    """Points with their sign: ``+12``, ``-40``, ``0``."""
    return f"{points:+d}" if points else "0"


@dataclass(frozen=True)
class BandRow:
    """One band of the scorecard."""

    name: str
    lower: int
    upper: int
    yours: bool


@dataclass(frozen=True)
class ReasonRow:
    """One principal reason of a score, in words."""

    what: str
    points: str
    without: str


@dataclass(frozen=True)
class ExplanationView:
    """One credit verdict's explanation."""

    verdict_id: str
    heading: str
    who: str
    when: str
    why: str
    score: int
    score_words: str
    low: int
    high: int
    bands: list[BandRow]
    base: str
    added: str
    reasons: list[ReasonRow]
    notes: list[str]
    scorecard: str
    scorecard_url: str


def explanation_view(t: Catalogue, explanation: registry_pb2.Explanation) -> ExplanationView:
    """An explanation in words: the sums, the band edges and the reasons with what-ifs."""
    reasons = [
        ReasonRow(
            what=t(
                "explanations.reason",
                text=(reason.text or _plain(reason.characteristic)).rstrip("."),
                code=reason.reason_code,
            ),
            points=t(
                "explanations.reason_cost" if reason.points < 0 else "explanations.reason_gain",
                points=abs(reason.points),
            ),
            without=t("explanations.without", score=reason.score_without, band=reason.band_without),
        )
        for reason in explanation.reasons
    ]
    notes = []
    if explanation.provisional:
        notes.append(
            t(
                "explanations.provisional",
                answering=explanation.credit_answering,
                expected=explanation.credit_expected,
            )
        )
    if explanation.disputed:
        notes.append(t("explanations.disputed"))
    bands = sorted(explanation.bands, key=lambda band: band.lower)
    url = explanation.scorecard_url
    return ExplanationView(
        verdict_id=explanation.verdict_id,
        heading=t(
            "explanations.heading",
            requester=explanation.requester,
            when=when(t, explanation.issued_at),
        ),
        who=explanation.requester,
        when=when(t, explanation.issued_at),
        why=purpose_words(t, explanation.purpose),
        score=explanation.score,
        score_words=t("explanations.score_is", score=explanation.score, band=explanation.band),
        low=explanation.min_score,
        high=explanation.max_score,
        bands=[
            BandRow(band.name, band.lower, band.upper, band.name == explanation.band)
            for band in bands
        ],
        base=t("explanations.points", points=explanation.base_points),
        added=t("explanations.points", points=_signed(explanation.points_total)),
        reasons=reasons,
        notes=notes,
        scorecard=t(
            "explanations.scorecard_is",
            version=explanation.scorecard_version,
            manifest=explanation.manifest_version,
        ),
        # Only a web address becomes a link: never a javascript: or data: one.
        scorecard_url=url if url.startswith("https://") else "",
    )


def explanation_views(
    t: Catalogue, explanations: Sequence[registry_pb2.Explanation]
) -> list[ExplanationView]:
    """The explanations newest first, in words."""
    newest = sorted(explanations, key=lambda item: item.issued_at.ToNanoseconds(), reverse=True)
    return [explanation_view(t, explanation) for explanation in newest]


@dataclass(frozen=True)
class ReviewStatusView:
    """One review and where it stands."""

    review_id: str
    verdict_id: str
    statement: str
    asked: str
    told: str
    state: str
    decided: str
    reviewer: str
    reasons: str
    outcome: str


def review_views(t: Catalogue, reviews: Sequence[ReviewView]) -> list[ReviewStatusView]:
    """The subject's reviews newest first; a decided one with its signed outcome."""
    rows = []
    newest = sorted(
        reviews, key=lambda item: item.record.requested_at.ToNanoseconds(), reverse=True
    )
    for review in newest:
        record, outcome = review.record, review.outcome
        state = outcome.outcome if outcome is not None else record.state
        rows.append(
            ReviewStatusView(
                review_id=record.review_id,
                verdict_id=record.verdict_id,
                statement=record.statement,
                asked=when(t, record.requested_at),
                told=", ".join(record.agencies) or t("reviews.told_none"),
                state=t(f"review.{state}")
                if t.has(f"review.{state}")
                else t("review.unknown", name=state),
                decided=when(t, outcome.decided_at) if outcome is not None else "",
                reviewer=outcome.reviewer if outcome is not None else "",
                reasons=outcome.statement if outcome is not None else "",
                outcome=state if outcome is not None else "",
            )
        )
    return rows
