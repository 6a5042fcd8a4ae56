"""The node's log gate: when it answers, and the reason it gives when it does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agency_node.log_gate import LogGate
from credence.errors import Unavailable
from credence.transparency.checkpoint import Checkpoint

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
AGE = timedelta(minutes=5)
CHECKPOINT = Checkpoint("credence/fed/log", 42, bytes(32))


def test_no_cosigned_checkpoint_yet_refuses_saying_so() -> None:
    gate = LogGate(AGE)
    gate.fetch_problem("checkpoint of size 3 is cosigned by 0 of the 2 witnesses")
    reason = gate.refusal(NOW) or ""
    assert "no checkpoint of the registry's log cosigned" in reason
    assert "0 of the 2 witnesses" in reason
    with pytest.raises(Unavailable, match="answers no queries"):
        gate.check(NOW)


def test_a_recent_cosigned_checkpoint_opens_the_gate_until_it_is_too_old() -> None:
    gate = LogGate(AGE)
    gate.saw_cosigned(CHECKPOINT, NOW - timedelta(minutes=1))
    assert gate.refusal(NOW) is None
    gate.check(NOW)
    later = NOW + AGE
    reason = gate.refusal(later) or ""
    assert "size 42" in reason
    assert "stopped publishing cosigned checkpoints" in reason
    # An older checkpoint re-served later does not move the gate back.
    gate.saw_cosigned(Checkpoint("credence/fed/log", 41, bytes(32)), NOW - timedelta(hours=1))
    assert gate.latest() == (CHECKPOINT, NOW - timedelta(minutes=1))


def test_a_split_view_closes_the_gate_for_good_and_the_audit_while_it_lasts() -> None:
    gate = LogGate(AGE)
    gate.saw_cosigned(CHECKPOINT, NOW)
    gate.audit_problem("query q-1 was promised but is not in the cosigned checkpoint")
    assert "q-1" in (gate.refusal(NOW) or "")
    gate.audit_problem(None)
    assert gate.refusal(NOW) is None
    gate.inconsistent("split view: size 42 differs")
    gate.saw_cosigned(CHECKPOINT, NOW + timedelta(seconds=1))
    assert gate.refusal(NOW + timedelta(seconds=1)) == "split view: size 42 differs"


def test_a_node_without_a_registry_to_watch_is_not_gated() -> None:
    gate = LogGate(AGE, enforced=False)
    assert gate.refusal(NOW) is None
    gate.inconsistent("ignored")
    gate.check(NOW)
