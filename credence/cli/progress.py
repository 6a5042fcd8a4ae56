"""Progress of long work on stderr: one helper for every command that needs it.

On a terminal one line is redrawn in place; elsewhere (a log file, a pipe, CI)
a plain line is written every few seconds, so long work never looks hung and
a log is not flooded. ``credence screen``, ``credence node import`` and
``credence node audit`` all report through :class:`Progress`.

The estimate of time left is deliberately cautious: none until enough work has
completed to say anything (the first rows of a screen wait on connection
set-up and would otherwise predict hours), then the rate is smoothed so one
slow or fast batch does not swing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

#: Seconds between plain lines off a terminal.
EVERY_SECONDS = 3.0
#: No estimate before this share of the work is done ...
ETA_MIN_FRACTION = 0.02
#: ... nor before this many seconds of measuring.
ETA_MIN_SECONDS = 2.0
#: The weight of the newest rate sample in the smoothed rate.
SMOOTHING = 0.3


@dataclass
class RateEstimate:
    """A smoothed rate and the time left, from (elapsed, done) samples; no I/O, no clock.

    Attributes:
        total: the units of work to do.
        rate: the smoothed units per second, or None before the first sample.
    """

    total: int
    rate: float | None = None
    _last: tuple[float, int] = field(default=(0.0, 0))

    def update(self, elapsed: float, done: int) -> None:
        """Take a sample: ``done`` units after ``elapsed`` seconds."""
        last_elapsed, last_done = self._last
        span = elapsed - last_elapsed
        if span <= 0 or done < last_done:
            return
        sample = (done - last_done) / span
        self.rate = (
            sample if self.rate is None else SMOOTHING * sample + (1 - SMOOTHING) * self.rate
        )
        self._last = (elapsed, done)

    def seconds_left(self, elapsed: float, done: int) -> float | None:
        """Seconds left at the smoothed rate; None while it would be a guess."""
        if self.total <= 0 or done >= self.total:
            return 0.0 if self.total > 0 else None
        if done < self.total * ETA_MIN_FRACTION or elapsed < ETA_MIN_SECONDS:
            return None
        if not self.rate:
            return None
        return (self.total - done) / self.rate


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """Reports ``done`` of ``total`` units of work on ``stream``.

    Call it with ``(done, total)`` as often as convenient; it decides when to
    write. Call :meth:`end` when the work stops (a ``finally``), which
    finishes a terminal line and writes the last plain line.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        unit: str,
        *,
        every: float | None = None,
        redraw: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Report as ``label: done/total unit ...``.

        Args:
            stream: where to write (stderr).
            label: what the work is (``screen``, ``import``, ``audit node``).
            unit: what is counted (``rows``, ``bytes``, ``promises checked``).
            every: seconds between plain lines when ``stream`` is not a terminal
                (default :data:`EVERY_SECONDS`).
            redraw: seconds between redraws on a terminal.
            clock: monotonic seconds (tests pass their own).
        """
        self._stream = stream
        self._tty = stream.isatty()
        self._label = label
        self._unit = unit
        self._every = redraw if self._tty else (EVERY_SECONDS if every is None else every)
        self._clock = clock
        self._started = clock()
        self._last_write: float | None = None
        self._estimate: RateEstimate | None = None
        self._latest: tuple[int, int] | None = None
        self._written: tuple[int, int] | None = None
        self._shown = False
        self._ended = False

    def __call__(self, done: int, total: int) -> None:
        """Record progress; writes a line when one is due."""
        now = self._clock()
        elapsed = now - self._started
        if self._estimate is None or self._estimate.total != total:
            self._estimate = RateEstimate(total)
        self._estimate.update(elapsed, done)
        self._latest = (done, total)
        due = self._last_write is None or now - self._last_write >= self._every
        if due and (self._tty or elapsed >= self._every):
            self._write(now)

    def line(self, done: int, total: int, elapsed: float) -> str:
        """The progress line for ``done`` of ``total`` after ``elapsed`` seconds."""
        share = f" ({done / total:.0%})" if total > 0 else ""
        rate = self._estimate.rate if self._estimate is not None else None
        shown_rate = f", {rate:,.0f}/s" if rate else ""
        left = self._estimate.seconds_left(elapsed, done) if self._estimate else None
        eta = f", about {format_seconds(left)} left" if left else ""
        return f"{self._label}: {done:,}/{total:,} {self._unit}{share}{shown_rate}{eta}"

    def _write(self, now: float) -> None:
        if self._latest is None:
            return
        done, total = self._latest
        text = self.line(done, total, now - self._started)
        if self._tty:
            self._stream.write(f"\r{text}\x1b[K")
            self._shown = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
        self._last_write = now
        self._written = self._latest

    def end(self, *, last: bool = True) -> None:
        """Finish: write the last state if not yet written, then end a terminal line.

        Off a terminal the last state is written (once), so a log shows where
        the work ended even when it took less than ``every``; ``last=False``
        leaves it out (work that was refused: its one line says why). Calling
        it again does nothing.

        Args:
            last: write the last state if it was not written yet.
        """
        if self._ended:
            return
        self._ended = True
        if last and self._latest is not None and self._written != self._latest:
            self._write(self._clock())
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
