"""A flood of warnings writes one line per key and interval, with the count held back."""

from __future__ import annotations

import logging

import pytest

from credence.ops.log_throttle import ThrottledWarning


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_a_flood_of_one_key_writes_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    throttle = ThrottledWarning(logging.getLogger("t.flood"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING):
        written = [throttle.warn("peer-a", "refused %s", n) for n in range(1000)]
        assert written.count(True) == 1
        assert _lines(caplog) == ["refused 0"]
        clock.now = 61
        assert throttle.warn("peer-a", "refused %s", "again")
    assert _lines(caplog)[-1] == "refused again (999 more like it in the last 60 s)"


def test_keys_are_reported_apart_and_their_number_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    throttle = ThrottledWarning(logging.getLogger("t.keys"), max_keys=2, clock=clock)
    with caplog.at_level(logging.WARNING):
        assert throttle.warn("a", "a")
        assert throttle.warn("b", "b")
        assert not throttle.warn("a", "a")
        # A third key pushes out the one whose line is oldest ("a"): "a" is
        # reported afresh, while "b" is still held back.
        assert throttle.warn("c", "c")
        assert not throttle.warn("b", "b")
        assert throttle.warn("a", "a")
    assert _lines(caplog) == ["a", "b", "c", "a"]  # a forgotten key's count goes with it
