"""Fixtures of the fault suite: one federation behind fault proxies per package.

Built by :func:`support.fault_federation.fault_federation`; every test leaves
the proxies healed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.fault_federation import FaultFederation, fault_federation, is_complete, wait_for


@pytest.fixture(scope="package")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultFederation]:
    with fault_federation(tmp_path_factory.mktemp("faults")) as federation:
        yield federation


@pytest.fixture
def fed(faults: FaultFederation) -> Iterator[FaultFederation]:
    """The package's federation, warmed up with every fault healed, healed again after."""
    faults.heal()
    with faults.requester() as company:
        # A fault test must start from a federation that answers in full.
        assert wait_for(lambda: is_complete(company.verify_organisation(faults.organisation(0))))
    try:
        yield faults
    finally:
        faults.heal()
