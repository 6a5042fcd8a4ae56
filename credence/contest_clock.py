"""The dispute clock's arithmetic, shared by the registry and the nodes.

An agency has the manifest's ``contest_deadline_days`` (30 when unset, FCRA
§611) to resolve a subject's contest. A contest still open at its due date is
overdue: the contested records stop counting in verdicts until it is
resolved. Operators see open contests grouped by age; these buckets are the
labels of both metrics and consoles, so they never carry a contest id.

Pure functions; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["AGE_BUCKETS", "ContestAges", "age_bucket", "contest_ages", "is_overdue"]

#: Upper bounds (exclusive, in days) and labels of the age buckets; the last is open-ended.
AGE_BUCKETS: tuple[tuple[int | None, str], ...] = (
    (7, "0-7d"),
    (14, "7-14d"),
    (30, "14-30d"),
    (60, "30-60d"),
    (None, "60d+"),
)


def age_bucket(age: timedelta) -> str:
    """The label of the bucket ``age`` falls in (a negative age counts as new)."""
    days = age.days
    for upper, label in AGE_BUCKETS:
        if upper is None or days < upper:
            return label
    raise AssertionError("the last bucket is open-ended")  # pragma: no cover


def is_overdue(due_at: datetime | None, *, open_: bool, now: datetime) -> bool:
    """Whether a contest due at ``due_at`` is overdue at ``now``: still open, and due."""
    return open_ and due_at is not None and due_at <= now


@dataclass(frozen=True)
class ContestAges:
    """Open contests by age bucket (every bucket present), and how many are overdue."""

    by_age: dict[str, int]
    overdue: int


def contest_ages(
    open_contests: Iterable[tuple[datetime, datetime | None]], now: datetime
) -> ContestAges:
    """Count open contests, given as ``(filed_at, due_at)``, by age and overdue at ``now``."""
    by_age = {label: 0 for _, label in AGE_BUCKETS}
    overdue = 0
    for filed_at, due_at in open_contests:
        by_age[age_bucket(now - filed_at)] += 1
        overdue += is_overdue(due_at, open_=True, now=now)
    return ContestAges(by_age, overdue)
