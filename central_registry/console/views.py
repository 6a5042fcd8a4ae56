"""What each console page shows, read from the registry's database and memory.

Plain functions over a :class:`~sqlalchemy.orm.Session` returning small frozen
records the templates render. Nothing here reads or returns a subject
reference, an identifier, a grant id or a query id: members and agencies by
their own ids, contests by agency, age and due date, alarms by kind and count;
reviews by their ids, age and the subject's statement (what a person reviews).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from central_registry import contests, reviews
from central_registry.agency_stats import AgencyStats, AgencySummary
from central_registry.models import AdminAction, Alarm, Contest, Member, TreeHead, split_names
from central_registry.store import member_rows
from central_registry.transparency import log_size
from credence.contest_clock import ContestAges, age_bucket, contest_ages, is_overdue
from credence.errors import CredenceError
from credence.manifest import TrustedManifest
from credence.pki import load_certificate_pem
from credence.transparency.checkpoint import parse_checkpoint
from credence.transparency.note import parse_note

#: Certificates ending within this are listed as close to expiry.
EXPIRY_WARNING = timedelta(days=7)
#: Rows a page lists at most (the newest).
PAGE_ROWS = 200


@dataclass(frozen=True)
class MemberRow:
    """One member as the members page lists it."""

    member_id: str
    display_name: str
    role: str
    state: str
    endpoint: str
    certificate_expires: datetime | None
    since: datetime

    def expires_within(self, now: datetime, window: timedelta = EXPIRY_WARNING) -> bool:
        """Whether its certificate ends before ``now + window``."""
        return self.certificate_expires is not None and self.certificate_expires < now + window


def _expiry(member: Member) -> datetime | None:
    if not member.certificate_pem:
        return None
    try:
        return load_certificate_pem(member.certificate_pem.encode()).not_valid_after_utc
    except CredenceError:
        return None


def members(session: Session) -> list[MemberRow]:
    """Every member, by id, with its certificate's expiry."""
    return [
        MemberRow(
            member_id=member.member_id,
            display_name=member.display_name,
            role=member.role,
            state=member.state,
            endpoint=member.endpoint,
            certificate_expires=_expiry(member),
            since=member.updated_at,
        )
        for member in member_rows.list_members(session)
    ]


@dataclass(frozen=True)
class AgencyRow:
    """One agency of the manifest and its calls over the last hour (None: none seen)."""

    agency_id: str
    endpoint: str
    state: str
    stats: AgencySummary | None


def agencies(manifest: TrustedManifest, stats: AgencyStats, now: datetime) -> list[AgencyRow]:
    """Every agency the manifest lists, with what the fan-out saw of it."""
    seen = {summary.agency_id: summary for summary in stats.summary(now)}
    rows = [
        AgencyRow(
            agency_id=member_id,
            endpoint=member.endpoint,
            state="active" if member.is_active else "suspended",
            stats=seen.pop(member_id, None),
        )
        for member_id, member in sorted(manifest.members.items())
        if member.role_name == "agency"
    ]
    # An agency asked before it left the manifest still has figures worth seeing.
    rows += [AgencyRow(agency_id, "", "not in the manifest", summary)
             for agency_id, summary in sorted(seen.items())]  # fmt: skip
    return rows


@dataclass(frozen=True)
class LogView:
    """The transparency log at a glance."""

    size: int
    checkpoint_size: int | None
    checkpoint_signed_at: datetime | None
    witnesses: tuple[str, ...]
    quorum: int
    cosigned_size: int | None
    cosigned_by: tuple[str, ...]


def log_view(session: Session, manifest: TrustedManifest, cosigned: bytes) -> LogView:
    """The log's size, its latest signed checkpoint, the witnesses and the latest cosigned one."""
    latest = session.execute(
        select(TreeHead.tree_size, TreeHead.signed_at).order_by(TreeHead.tree_size.desc()).limit(1)
    ).first()
    cosigned_size: int | None = None
    cosigned_by: tuple[str, ...] = ()
    if cosigned:
        try:
            note = parse_note(cosigned)
            cosigned_size = parse_checkpoint(note.text).size
            # The first signature is the log's own; the rest are the witnesses'.
            cosigned_by = tuple(signature.name for signature in note.signatures[1:])
        except CredenceError:
            cosigned_size = None
    return LogView(
        size=log_size(session),
        checkpoint_size=None if latest is None else latest.tree_size,
        checkpoint_signed_at=None if latest is None else latest.signed_at,
        witnesses=tuple(member.member_id for member in manifest.witnesses),
        quorum=manifest.witness_quorum,
        cosigned_size=cosigned_size,
        cosigned_by=cosigned_by,
    )


def alarms(session: Session) -> Sequence[Alarm]:
    """The newest alarms nodes reported."""
    return session.scalars(select(Alarm).order_by(Alarm.id.desc()).limit(PAGE_ROWS)).all()


@dataclass(frozen=True)
class ContestRow:
    """An open contest: which agency, which kind of record, filed and due when (never whose)."""

    agency: str
    record_kind: str
    filed_at: datetime
    #: filed_at + the manifest's contest deadline; None for contests older than the clock.
    due_at: datetime | None
    #: Its age bucket (:data:`credence.contest_clock.AGE_BUCKETS`).
    age: str
    #: Open past due_at: the agency's contested records do not count in verdicts.
    overdue: bool


def open_contests(session: Session, now: datetime) -> list[ContestRow]:
    """Open contests, oldest first, with their age and whether overdue at ``now``."""
    rows = session.execute(
        select(Contest.agency, Contest.record_kind, Contest.filed_at, Contest.due_at)
        .where(Contest.state == "open")
        .order_by(Contest.filed_at)
        .limit(PAGE_ROWS)
    )
    return [
        ContestRow(
            agency,
            kind,
            filed_at,
            due_at,
            age_bucket(now - filed_at),
            is_overdue(due_at, open_=True, now=now),
        )
        for agency, kind, filed_at, due_at in rows
    ]


def contests_by_age(session: Session, now: datetime) -> ContestAges:
    """Every open contest counted by age bucket, and how many are overdue, at ``now``."""
    return contest_ages(contests.open_clocks(session), now)


def admin_actions(session: Session, limit: int = 50) -> Sequence[AdminAction]:
    """The newest admin actions."""
    return session.scalars(select(AdminAction).order_by(AdminAction.id.desc()).limit(limit)).all()


@dataclass(frozen=True)
class ReviewRow:
    """An open review as the queue shows it: ids, age, agencies told, the subject's statement.

    The statement is what the operator is asked to read; the subject is not named.
    """

    review_id: str
    verdict_id: str
    requested_at: datetime
    agencies: tuple[str, ...]
    statement: str


def open_reviews(session: Session) -> list[ReviewRow]:
    """Open reviews, oldest first."""
    return [
        ReviewRow(
            row.review_id,
            row.verdict_id,
            row.requested_at,
            split_names(row.agencies),
            row.statement,
        )
        for row in reviews.open_reviews(session, PAGE_ROWS)
    ]
