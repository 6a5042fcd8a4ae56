"""Distinct subjects per requester and day, counted by the database.

A subject is counted once per day however many processes note it: the
primary key (requester, day, subject) decides. Every function receives a
``Session`` and runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import Insert, and_, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import SubjectUsage

__all__ = ["note_subject_use", "note_subject_uses", "prune_subject_usage"]


def _require_day(day: str) -> str:
    try:
        valid = date.fromisoformat(day).isoformat() == day
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}")
    return day


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, object]]) -> None:
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "sqlite":
        statement = sqlite.insert(SubjectUsage).on_conflict_do_nothing()
    elif dialect == "postgresql":
        statement = postgresql.insert(SubjectUsage).on_conflict_do_nothing()
    else:
        for row in rows:
            try:
                with session.begin_nested():
                    session.execute(insert(SubjectUsage), row)
            except IntegrityError:
                pass  # noted already: the point of the primary key
        return
    session.execute(statement, rows)


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
    if refs:
        _insert_ignoring_duplicates(
            session,
            [{"requester": requester, "day": day, "subject_ref": ref} for ref in sorted(refs)],
        )
    count = session.scalar(
        select(func.count())
        .select_from(SubjectUsage)
        .where(and_(SubjectUsage.requester == requester, SubjectUsage.day == day))
    )
    return int(count or 0)


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
    result = session.execute(
        delete(SubjectUsage).where(SubjectUsage.day < _require_day(before_day))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
