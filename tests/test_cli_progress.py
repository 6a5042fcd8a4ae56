"""The one progress reporter of long commands (screen, node import, node audit)."""

from __future__ import annotations

import io

import pytest

from credence.cli.progress import ETA_MIN_SECONDS, Progress, RateEstimate, format_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_estimate_from_the_first_slow_rows() -> None:
    # What printed "ETA 30905s": 3 rows of 100,000 done in the first second,
    # while the connection was still being set up.
    estimate = RateEstimate(total=100_000)
    estimate.update(1.0, 3)
    assert estimate.seconds_left(1.0, 3) is None
    # Enough rows and time: an estimate from the smoothed rate.
    estimate.update(ETA_MIN_SECONDS + 1, 5_000)
    left = estimate.seconds_left(ETA_MIN_SECONDS + 1, 5_000)
    assert left is not None
    assert left < 1_000


def test_one_slow_batch_does_not_swing_the_estimate() -> None:
    estimate = RateEstimate(total=100_000)
    for second in range(1, 11):
        estimate.update(float(second), second * 1_000)
    steady = estimate.seconds_left(10.0, 10_000)
    estimate.update(11.0, 10_010)  # one batch 100 times slower
    after = estimate.seconds_left(11.0, 10_010)
    assert steady is not None
    assert after is not None
    assert after < steady * 2  # the raw rate would have predicted 100 times longer


def test_off_a_terminal_a_line_every_few_seconds() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(stream, "screen", "rows", every=3.0, clock=clock)
    for step in range(1, 81):
        clock.now += 0.125  # exact in binary: no drift in the sums
        progress(step * 10, 800)
    progress.end()
    lines = stream.getvalue().splitlines()
    # 10 s of work: a line after 3, 6 and 9 seconds, and the final state.
    assert len(lines) == 4
    assert lines[0] == "screen: 240/800 rows (30%), 80/s, about 7s left"
    assert lines[-1].startswith("screen: 800/800 rows (100%)")
    assert "\r" not in stream.getvalue()


def test_short_work_off_a_terminal_writes_its_end_once() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(stream, "import", "bytes read", clock=clock)
    clock.now += 0.5
    progress(5, 10)
    clock.now += 0.5
    progress(10, 10)
    progress.end()
    assert stream.getvalue() == "import: 10/10 bytes read (100%), 10/s\n"


def test_nothing_is_written_before_any_work() -> None:
    stream = io.StringIO()
    Progress(stream, "screen", "rows").end()
    assert stream.getvalue() == ""


def test_on_a_terminal_one_line_redrawn_and_ended() -> None:
    clock = FakeClock()
    stream = Terminal()
    progress = Progress(stream, "audit node", "promises checked", clock=clock)
    for step in range(1, 51):
        clock.now += 0.1
        progress(step, 50)
    progress.end()
    text = stream.getvalue()
    assert text.startswith("\r")
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "50/50 promises checked (100%)" in text.rsplit("\r", 1)[-1]


@pytest.mark.parametrize(
    ("seconds", "shown"), [(4.4, "4s"), (59.6, "1m00s"), (185, "3m05s"), (3_725, "1h02m")]
)
def test_time_left_reads_short(seconds: float, shown: str) -> None:
    assert format_seconds(seconds) == shown
