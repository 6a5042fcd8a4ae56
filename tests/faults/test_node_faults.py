"""A node that is slow, stalled, partitioned or flapping never holds up a verdict.

Each fault is injected by the proxy in front of one agency node, on the path
the registry's fan-out takes; the company asks for verdicts as usual. Every
verdict must come back within the fan-out deadline (times a generous factor
for this busy machine), complete when the faulty node still answers in time,
otherwise INCOMPLETE naming that agency and no other.
"""

from __future__ import annotations

import threading
import time
from itertools import count

import pytest
from support.fault_federation import (
    HEADROOM,
    FaultFederation,
    incomplete_naming,
    is_complete,
    wait_for,
)

from credence.client.requester import Requester, ScreenRow
from credence.client.results import VerifiedVerdict
from credence.v1 import common_pb2

pytestmark = pytest.mark.slow

_subjects = count(1)


def _timed_lookup(fed: FaultFederation, company: Requester) -> tuple[VerifiedVerdict, float]:
    # A fresh subject each time: nothing the registry or a node caches helps.
    subject = fed.organisation(next(_subjects))
    started = time.monotonic()
    verified = company.verify_organisation(subject)
    return verified, time.monotonic() - started


def _state(verified: VerifiedVerdict, agency: str) -> int:
    return next(a.state for a in verified.verdict.coverage.agencies if a.member_id == agency)


def test_slow_node_within_the_deadline_still_answers(fed: FaultFederation) -> None:
    proxy = fed.proxies["court"]
    before = proxy.stats.forwarded_bytes
    # One way; a call crosses it twice, well inside the deadline.
    proxy.set_latency(fed.deadline / 10)
    with fed.requester() as company:
        verified, elapsed = _timed_lookup(fed, company)
    assert is_complete(verified), verified.verdict.coverage
    assert verified.status == "clear"
    assert elapsed < fed.deadline * HEADROOM, f"the verdict took {elapsed:.1f} s"
    assert proxy.stats.forwarded_bytes > before, "the court's answer crossed the proxy"


def test_slow_node_past_the_deadline_is_named_incomplete(fed: FaultFederation) -> None:
    fed.proxies["court"].set_latency(fed.deadline * 1.5)
    with fed.requester() as company:
        verified, elapsed = _timed_lookup(fed, company)
    assert incomplete_naming(verified, "court"), verified.verdict.coverage
    assert _state(verified, "court") == common_pb2.COVERAGE_STATE_TIMEOUT
    assert elapsed < fed.deadline * HEADROOM, f"the verdict took {elapsed:.1f} s"


def test_stalled_node_is_named_incomplete_within_the_deadline(fed: FaultFederation) -> None:
    fed.proxies["tax-office"].stall()
    with fed.requester() as company:
        for _ in range(2):
            verified, elapsed = _timed_lookup(fed, company)
            assert incomplete_naming(verified, "tax-office"), verified.verdict.coverage
            assert _state(verified, "tax-office") == common_pb2.COVERAGE_STATE_TIMEOUT
            assert elapsed < fed.deadline * HEADROOM, f"the verdict took {elapsed:.1f} s"
        fed.proxies["tax-office"].heal()
        assert wait_for(lambda: is_complete(_timed_lookup(fed, company)[0]))


def test_stalled_node_during_a_screen_is_named_on_every_row(fed: FaultFederation) -> None:
    fed.proxies["court"].stall()
    rows = [ScreenRow(f"row-{n}", fed.organisation(next(_subjects))) for n in range(60)]
    with fed.requester() as company:
        started = time.monotonic()
        outcomes = list(company.screen(rows, message_size=len(rows)))
        elapsed = time.monotonic() - started
    assert sorted(outcome.row_key for outcome in outcomes) == sorted(r.row_key for r in rows)
    for outcome in outcomes:
        assert outcome.verdict is not None, outcome
        assert incomplete_naming(outcome.verdict, "court"), outcome.verdict.verdict.coverage
    assert elapsed < fed.batch_deadline * HEADROOM, f"the screen took {elapsed:.1f} s"


@pytest.mark.parametrize("partition", ["refuse", "blackhole"])
def test_partitioned_node_is_named_incomplete(fed: FaultFederation, partition: str) -> None:
    proxy = fed.proxies["fraud-desk"]
    getattr(proxy, partition)()
    with fed.requester() as company:
        for _ in range(2):
            verified, elapsed = _timed_lookup(fed, company)
            assert incomplete_naming(verified, "fraud-desk"), verified.verdict.coverage
            assert elapsed < fed.deadline * HEADROOM, f"the verdict took {elapsed:.1f} s"
        proxy.heal()
        assert wait_for(lambda: is_complete(_timed_lookup(fed, company)[0]))


def test_flapping_node_never_costs_a_verdict(fed: FaultFederation) -> None:
    proxy = fed.proxies["tax-office"]
    stop = threading.Event()

    def flap() -> None:
        # Down, up, reset mid-call, up: the node's connection never settles.
        faults = (proxy.refuse, proxy.heal, proxy.drop, proxy.heal)
        for turn in count():
            if stop.wait(0.15):
                return
            faults[turn % len(faults)]()

    flapper = threading.Thread(target=flap, name="flapper")
    flapper.start()
    outcomes: list[VerifiedVerdict] = []
    try:
        with fed.requester() as company:
            for _ in range(12):
                verified, elapsed = _timed_lookup(fed, company)
                outcomes.append(verified)
                assert elapsed < fed.deadline * HEADROOM, f"a verdict took {elapsed:.1f} s"
    finally:
        stop.set()
        flapper.join(timeout=30)
    for verified in outcomes:
        assert is_complete(verified) or incomplete_naming(verified, "tax-office"), (
            verified.verdict.coverage
        )
    # While it is down, the node is named; once it is back, it answers again.
    proxy.refuse()
    with fed.requester() as company:
        assert incomplete_naming(_timed_lookup(fed, company)[0], "tax-office")
        proxy.heal()
        assert wait_for(lambda: is_complete(_timed_lookup(fed, company)[0]))
