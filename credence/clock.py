"""The clock every server and client takes as an argument.

Verification and protocol code never read the wall clock: they take ``now``,
and the objects that need the time repeatedly take a :data:`Clock`, so tests
pass a fixed or stepping one and production passes :func:`utc_now`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

#: A source of the current time: returns a timezone-aware UTC ``datetime``.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC (the default :data:`Clock`)."""
    return datetime.now(UTC)
