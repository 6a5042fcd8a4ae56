"""The fault suite's federation: every agency node behind its own fault proxy.

The registry and three blacklist agencies run in this process over real
mutual TLS (built by :mod:`support.inprocess`, as the operator's commands
would). Each agency is enrolled with its proxy's address as its endpoint, so
the registry's fan-out crosses the proxy; a fourth proxy sits in front of the
registry's members' port for requesters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from central_registry import config as registry_config
from credence.client.requester import Requester
from credence.client.results import VerifiedVerdict
from credence.dev import synthetic
from credence.subjects import SubjectRef
from credence.v1 import common_pb2
from support.fault_proxy import FaultProxy
from support.inprocess import InProcessFederation, start
from support.witnessed import wait_witnessed

#: The agencies that contribute to a blacklist verdict: every fault targets one.
AGENCIES = tuple(
    profile
    for profile in synthetic.AGENCY_PROFILES
    if profile.name in ("court", "tax-office", "fraud-desk")
)
COMPANY = "acme"
# Short, so that each late node costs the suite little; long enough that a
# healthy node answers in time on a busy machine (each test starts warmed up).
DEADLINE = 2.5
# The same for a screening batch (a node answers up to 1,000 rows at once).
BATCH_DEADLINE = 5.0
# A shared 2-core machine: every "within the deadline" check allows this factor.
HEADROOM = 4.0


@dataclass
class FaultFederation:
    """The federation, the proxy in front of each node and the registry's proxy."""

    federation: InProcessFederation
    proxies: dict[str, FaultProxy]
    registry_proxy: FaultProxy

    @property
    def deadline(self) -> float:
        """The registry's fan-out deadline for one lookup, in seconds."""
        config = registry_config.load_config(self.federation.registry_dir)
        return config.fanout_deadline_seconds

    @property
    def batch_deadline(self) -> float:
        """The registry's fan-out deadline for one screening batch, in seconds."""
        config = registry_config.load_config(self.federation.registry_dir)
        return config.batch_deadline_seconds

    def requester(self, *, via_proxy: bool = False) -> Requester:
        """The company's client, straight to the registry or through its proxy."""
        address = self.registry_proxy.address if via_proxy else self.federation.address
        member = self.federation.members[COMPANY].credentials
        return Requester(address, member, root_keys=self.federation.root_keys)

    def organisation(self, number: int) -> SubjectRef:
        """An organisation no agency lists: CLEAR when every agency answers."""
        return self.federation.subject(f"reg:CN:FAULT{number:06d}")

    def heal(self) -> None:
        """End every fault."""
        for proxy in (*self.proxies.values(), self.registry_proxy):
            proxy.heal()


def states(verified: VerifiedVerdict) -> dict[str, int]:
    """Each contributing agency's coverage state in a verdict."""
    return {agency.member_id: agency.state for agency in verified.verdict.coverage.agencies}


def is_complete(verified: VerifiedVerdict) -> bool:
    """Every contributing agency answered and the blacklist status is decided."""
    answered = set(states(verified).values()) == {common_pb2.COVERAGE_STATE_ANSWERED}
    return answered and verified.status in ("clear", "listed")


def incomplete_naming(verified: VerifiedVerdict, *missing: str) -> bool:
    """INCOMPLETE, exactly ``missing`` did not answer, each with a reason."""
    coverage = verified.verdict.coverage.agencies
    absent = {agency.member_id for agency in coverage if agency.state != 1}
    reasons = all(agency.reason for agency in coverage if agency.member_id in missing)
    return verified.status == "incomplete" and absent == set(missing) and reasons


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@contextmanager
def fault_federation(root: Path) -> Iterator[FaultFederation]:
    """Start the registry, the company and each agency behind a proxy; stop them after."""
    federation = start(
        root, fanout_deadline_seconds=DEADLINE, batch_deadline_seconds=BATCH_DEADLINE
    )
    proxies: dict[str, FaultProxy] = {}
    registry_proxy = FaultProxy(federation.address)
    try:
        federation.enrol_member(COMPANY, "company", "--purposes", "counterparty_verification")
        for profile in AGENCIES:
            # The node's port is known only once it runs: the proxy learns it then.
            proxy = FaultProxy("127.0.0.1:1")
            proxies[profile.name] = proxy
            node = federation.add_agency(
                profile, subjects=20, endpoint=proxy.address, witnessed=False
            )
            proxy.set_upstream(f"127.0.0.1:{node.port}")
        for node in federation.nodes.values():
            wait_witnessed(node)
        yield FaultFederation(federation, proxies, registry_proxy)
    finally:
        for proxy in (*proxies.values(), registry_proxy):
            proxy.close()
        federation.stop()
