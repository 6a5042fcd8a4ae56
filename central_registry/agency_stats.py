"""Each agency's fan-out calls over the last hour, in memory, for the operator's console.

The fan-out reports every call it made to an agency (how long it took and how
it ended); :class:`AgencyStats` keeps them per agency and per minute for an
hour, so the console can show answer latency (p50, p95), timeouts, errors,
invalid answers and when each agency last answered, and chart the latency per
minute. Nothing here names a subject or a query: an agency id, a duration and
an outcome per call. Thread-safe: the fan-out runs on the registry's loop, the
console reads from its worker threads.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: How a call to an agency ended.
OUTCOMES = ("ok", "timeout", "error", "invalid")
#: How far back the figures reach.
WINDOW = timedelta(hours=1)
#: Durations kept per agency and minute: a percentile over more is no better for a chart.
MAX_SAMPLES_PER_MINUTE = 2000


@dataclass(frozen=True)
class AgencySummary:
    """One agency's calls over the last hour."""

    agency_id: str
    calls: int
    #: Median and 95th percentile answer time in seconds; None without calls.
    p50_seconds: float | None
    p95_seconds: float | None
    timeouts: int
    errors: int
    invalid: int
    #: When the agency last answered (outcome "ok"); None if not in this process's memory.
    last_seen: datetime | None


@dataclass
class _Minute:
    start: datetime
    seconds: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values; None for none."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class AgencyStats:
    """Per-agency, per-minute durations and outcomes of fan-out calls, for one hour."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minutes: dict[str, deque[_Minute]] = {}
        self._last_seen: dict[str, datetime] = {}

    def observe(self, agency_id: str, seconds: float, outcome: str, at: datetime) -> None:
        """Record one call to ``agency_id`` that took ``seconds`` and ended with ``outcome``.

        Raises:
            ValueError: ``outcome`` is not one of :data:`OUTCOMES` (a programming error).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        start = _minute_of(at)
        with self._lock:
            minutes = self._minutes.setdefault(agency_id, deque())
            if not minutes or minutes[-1].start < start:
                minutes.append(_Minute(start))
            # A call finishing out of order lands in the newest minute: close enough.
            minute = minutes[-1]
            minute.outcomes[outcome] = minute.outcomes.get(outcome, 0) + 1
            if len(minute.seconds) < MAX_SAMPLES_PER_MINUTE:
                minute.seconds.append(seconds)
            while minutes and minutes[0].start <= start - WINDOW:
                minutes.popleft()
            if outcome == "ok":
                self._last_seen[agency_id] = max(at, self._last_seen.get(agency_id, at))

    def _recent(self, agency_id: str, now: datetime) -> list[_Minute]:
        since = _minute_of(now) - WINDOW
        return [minute for minute in self._minutes.get(agency_id, ()) if minute.start > since]

    def summary(self, now: datetime) -> list[AgencySummary]:
        """Every agency seen, by id, over the hour before ``now``."""
        with self._lock:
            summaries = []
            for agency_id in sorted(self._minutes):
                minutes = self._recent(agency_id, now)
                ordered = sorted(value for minute in minutes for value in minute.seconds)

                def count(outcome: str, minutes: list[_Minute] = minutes) -> int:
                    return sum(minute.outcomes.get(outcome, 0) for minute in minutes)

                summaries.append(
                    AgencySummary(
                        agency_id=agency_id,
                        calls=sum(sum(minute.outcomes.values()) for minute in minutes),
                        p50_seconds=_percentile(ordered, 0.50),
                        p95_seconds=_percentile(ordered, 0.95),
                        timeouts=count("timeout"),
                        errors=count("error"),
                        invalid=count("invalid"),
                        last_seen=self._last_seen.get(agency_id),
                    )
                )
            return summaries

    def latency_series(
        self, agency_id: str, now: datetime, minutes: int = 60
    ) -> list[tuple[datetime, float | None]]:
        """The median answer time per minute, oldest first, ending with ``now``'s minute.

        A minute without calls is None.
        """
        last = _minute_of(now)
        with self._lock:
            by_start = {
                minute.start: sorted(minute.seconds) for minute in self._minutes.get(agency_id, ())
            }
        series = []
        for back in range(minutes - 1, -1, -1):
            start = last - timedelta(minutes=back)
            series.append((start, _percentile(by_start.get(start, []), 0.50)))
        return series
