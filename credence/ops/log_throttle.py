"""Warnings that a flood cannot multiply: at most one line per key and interval.

A peer that sends thousands of refused calls a second must not grow a
server's log file at the same rate. :class:`ThrottledWarning` writes the first
warning of a key at once, then at most one more per ``interval`` seconds,
saying how many were held back since. The keys it remembers are bounded; the
oldest is forgotten first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["ThrottledWarning"]


class ThrottledWarning:
    """Logs a warning per key at most once every ``interval`` seconds. Thread-safe.

    Args:
        logger: where the warnings go.
        interval: seconds between two lines of one key.
        max_keys: how many keys are remembered (the oldest is dropped first).
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (when its last line was written, warnings held back since).
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def warn(self, key: Hashable, message: str, *args: object) -> bool:
        """Write ``message % args`` unless ``key`` had a line in the last interval.

        Returns:
            Whether a line was written.
        """
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self._interval:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            held_back = last[1] if last is not None else 0
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
        if held_back:
            self._logger.warning(
                message + " (%d more like it in the last %.0f s)",
                *args,
                held_back,
                self._interval,
            )
        else:
            self._logger.warning(message, *args)
        return True
