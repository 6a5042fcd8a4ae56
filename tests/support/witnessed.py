"""Waiting until a node answers: its registry's log has a recent cosigned checkpoint.

A node refuses queries until it has verified a checkpoint cosigned by the
manifest's quorum of witnesses (agency_node.log_gate); the registry offers
one every ``witness_interval_seconds``. Tests that start nodes wait here
before they ask anything.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from agency_node.server import RunningNode


def wait_witnessed(node: RunningNode, seconds: float = 60) -> None:
    """Block until ``node`` may answer; fail with its gate's reason after ``seconds``."""
    if node.gate is None:
        return
    deadline = time.monotonic() + seconds
    while (reason := node.gate.refusal(datetime.now(UTC))) is not None:
        if time.monotonic() > deadline:
            raise AssertionError(f"node never saw a cosigned checkpoint: {reason}")
        time.sleep(0.05)
