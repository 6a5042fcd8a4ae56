"""Distinct subjects per requester and day, counted by the database.

A subject is counted once per day however many processes note it: the
primary key (requester, day, subject) decides, and the day's count
(``subject_day_counts``) grows by the rows each transaction adds, so checking
the limit never counts the day's rows. Every function receives a
``Session`` and runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import delete
from sqlalchemy.orm import Session

from central_registry.models import SubjectDayCount, SubjectUsage
from central_registry.store.driver import Driver, insert_ignoring

__all__ = ["note_subject_use", "note_subject_uses", "prune_subject_usage"]


def _require_day(day: str) -> str:
    try:
        valid = date.fromisoformat(day).isoformat() == day
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    return day


#: Grows a requester's day by the subjects just noted for the first time; the new count.
_COUNT = (
    "INSERT INTO subject_day_counts (requester, day, subjects) VALUES (?, ?, ?) "
    "ON CONFLICT (requester, day) DO UPDATE "
    "SET subjects = subject_day_counts.subjects + excluded.subjects RETURNING subjects"
)
_NOTE = insert_ignoring(
    "subject_usage", ("requester", "day", "subject_ref"), ("requester", "day", "subject_ref")
)


def note_subject_uses(
    session: Session, requester: str, day: str, subject_refs: Iterable[bytes]
) -> int:
    """Note that ``requester`` looked these subjects up on ``day``.

    Args:
        session: the caller's session, inside its transaction.
        requester: the member id.
        day: the UTC day, ``YYYY-MM-DD``.
        subject_refs: the 32-byte subject references (repeats count once).

    Returns:
        How many distinct subjects the requester has looked up that day,
        these included.

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
    """
    _require_day(day)
    refs = {bytes(ref) for ref in subject_refs}
    driver = Driver(session)  # every lookup runs these: driver statements
    if refs:
        added = driver.many(_NOTE, [(requester, day, ref) for ref in sorted(refs)])
        if added:
            return int(driver.scalar(_COUNT, (requester, day, added)))
    return int(
        driver.scalar(
            "SELECT subjects FROM subject_day_counts WHERE requester = ? AND day = ?",
            (requester, day),
        )
        or 0
    )


def note_subject_use(session: Session, requester: str, day: str, subject_ref: bytes) -> int:
    """Note one lookup of ``subject_ref`` by ``requester`` on ``day``.

    Returns:
        How many distinct subjects the requester has looked up that day, this one included.

    Raises:
        ValueError: ``day`` is not ``YYYY-MM-DD``.
    """
    return note_subject_uses(session, requester, day, (subject_ref,))


def prune_subject_usage(session: Session, before_day: str) -> int:
    """Forget the usage of days before ``before_day`` (``YYYY-MM-DD``).

    Returns:
        How many rows were removed.

    Raises:
        ValueError: ``before_day`` is not ``YYYY-MM-DD``.
    """
    before_day = _require_day(before_day)
    session.execute(delete(SubjectDayCount).where(SubjectDayCount.day < before_day))
    result = session.execute(delete(SubjectUsage).where(SubjectUsage.day < before_day))
    return int(result.rowcount)  # type: ignore[attr-defined]
