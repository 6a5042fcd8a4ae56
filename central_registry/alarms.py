"""Alarms agency nodes report from their log audits (``ReportAlarm``), for the operator.

A node that finds the log missing an entry it was promised, or inconsistent,
tells the registry's operator as well as its own: one row per report, with the
kind of problem, how many, and the log size checked. Nothing in it names a
query or a subject (the node keeps those). Reports are bounded: the kind is a
short word, and each member may report at most :data:`ALARMS_PER_HOUR` in any
hour (counted in the database, so across every registry process), beyond which
they are refused with RESOURCE_EXHAUSTED and nothing is stored.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from central_registry.models import Alarm
from credence.encoding import format_time
from credence.errors import InvalidInput, ResourceExhausted

_log = logging.getLogger(__name__)

ALARMS_PER_HOUR = 60
#: A raised_at further ahead of the registry's clock than this is refused.
CLOCK_SKEW = timedelta(minutes=5)
#: Counts above this are stored as this (a node cannot make a row say anything bigger).
MAX_COUNT = 1_000_000
_KIND = re.compile(r"[a-z][a-z0-9_]{0,47}")


def record_alarm(
    session: Session,
    member_id: str,
    *,
    kind: str,
    count: int,
    tree_size: int,
    raised_at: datetime,
    now: datetime,
) -> Alarm:
    """Store one node's alarm and log it.

    Raises:
        InvalidInput: a kind that is not a short lower-case word, a zero count,
            or a raised_at in the future.
        ResourceExhausted: the member already reported :data:`ALARMS_PER_HOUR` this hour.
    """
    if not _KIND.fullmatch(kind):
        raise InvalidInput(
            f"alarm kind {kind[:60]!r}: use 1..48 lower-case letters, digits or '_', "
            "starting with a letter (e.g. missing_entry)"
        )
    if count < 1:
        raise InvalidInput("an alarm reports at least one problem: set count")
    if raised_at > now + CLOCK_SKEW:
        raise InvalidInput(
            f"alarm raised_at {format_time(raised_at)} is ahead of the registry's clock "
            f"({format_time(now)}): check the node's clock"
        )
    since = now - timedelta(hours=1)
    recent = session.scalar(
        select(func.count())
        .select_from(Alarm)
        .where(Alarm.member_id == member_id, Alarm.received_at > since)
    )
    if (recent or 0) >= ALARMS_PER_HOUR:
        raise ResourceExhausted(
            f"{member_id} reported {ALARMS_PER_HOUR} alarms in the last hour; "
            "report again later (the node keeps every alarm in its audit_alarms table)",
            retry_after=3600 / ALARMS_PER_HOUR,
        )
    alarm = Alarm(
        member_id=member_id,
        kind=kind,
        count=min(count, MAX_COUNT),
        tree_size=tree_size,
        raised_at=raised_at,
        received_at=now,
    )
    session.add(alarm)
    _log.error(
        "node %s reports a log audit alarm: %d x %s against a log of %d",
        member_id, alarm.count, kind, tree_size,
    )  # fmt: skip
    return alarm
