"""The public port, flooded by someone without a certificate, over real gRPC.

Before issue 10 the public port took 200 pending enrolments in 6.3 s and a
10 MiB display name. Each test here is the attacker's attempt, then a look at
the registry's database to show that the refusal left nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker
from support.public_port import enrol_outcomes, enrol_request, public_stub, row_counts
from support.registry import init_registry, running_registry

from central_registry import database, membership
from central_registry.config import PublicLimits, load_config
from central_registry.keyring import load_keys
from central_registry.limits.public import ENROL, take_public_tokens
from central_registry.server import RegistryThread
from central_registry.store import member_rows
from credence.cli import main
from credence.errors import FailedPrecondition, ResourceExhausted
from credence.storage import session_factory
from credence.v1 import manifest_pb2, registry_pb2

OK, REFUSED = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture
def burst_registry(tmp_path: Path) -> Iterator[tuple[RegistryThread, Path]]:
    # A burst of 5 per address and next to no refill: the outcome does not
    # depend on how fast this machine sends.
    directory = init_registry(
        tmp_path / "registry",
        public={"enrolment_burst_per_address": 5, "enrolments_per_second_per_address": 0.001},
    )
    with running_registry(directory) as registry:
        yield registry, directory


def test_a_burst_of_enrolments_from_one_address_is_refused_beyond_its_burst(
    burst_registry: tuple[RegistryThread, Path],
) -> None:
    registry, directory = burst_registry
    requests = [enrol_request(f"flood-{i:03d}") for i in range(20)]
    with public_stub(registry, directory) as stub:
        codes = enrol_outcomes(stub, requests)
        refused = codes.count(REFUSED)
        print(f"enrolment refusals under a burst: {refused} of {len(codes)}")
        assert codes[:5] == [OK] * 5
        assert codes[5:] == [REFUSED] * 15
        # Everything refused left nothing pending.
        members, pending, _ = row_counts(registry)
        assert (members, pending) == (5, 5)
        with pytest.raises(grpc.RpcError) as refusal:
            stub.Enrol(enrol_request("flood-late"), timeout=60)
    assert refusal.value.code() is REFUSED
    assert "too many enrolments from 127.0.0.1" in (refusal.value.details() or "")
    assert row_counts(registry)[:2] == (5, 5)


def test_the_pending_enrolment_cap_holds(tmp_path: Path) -> None:
    directory = init_registry(tmp_path / "registry", public={"max_pending_enrolments": 3})
    with running_registry(directory) as registry, public_stub(registry, directory) as stub:
        codes = enrol_outcomes(stub, [enrol_request(f"queue-{i}") for i in range(6)])
        assert codes == [OK] * 3 + [REFUSED] * 3
        assert row_counts(registry)[:2] == (3, 3)
        with pytest.raises(grpc.RpcError) as refusal:
            stub.Enrol(enrol_request("queue-late"), timeout=60)
        assert refusal.value.code() is REFUSED
        assert "enrolments are waiting for the operator" in (refusal.value.details() or "")
        # Approving one frees its place in the queue.
        assert main(["registry", "members", "approve", "--dir", str(directory), "queue-0"]) == 0
        assert enrol_outcomes(stub, [enrol_request("queue-next")]) == [OK]
        assert row_counts(registry)[:2] == (4, 3)


def test_expired_pending_enrolments_are_dropped_and_cannot_be_approved(tmp_path: Path) -> None:
    lifetime = 2.0  # seconds; waiting longer than this only makes the expiry surer
    directory = init_registry(
        tmp_path / "registry", public={"pending_enrolment_days": lifetime / 86400}
    )
    with running_registry(directory) as registry, public_stub(registry, directory) as stub:
        assert enrol_outcomes(stub, [enrol_request("stale")]) == [OK]
        enrolled_at = time.monotonic()
        while time.monotonic() - enrolled_at < lifetime + 0.5:
            time.sleep(0.1)
        # Expired but not yet dropped: the operator cannot approve it.
        config = load_config(directory)
        sessions = session_factory(registry.running.engine)
        with (
            pytest.raises(FailedPrecondition, match="expired unapproved"),
            sessions.begin() as session,
        ):
            membership.approve(
                session,
                "stale",
                config=config,
                keys=load_keys(config),
                scorecard=manifest_pb2.Scorecard(),
                now=datetime.now(UTC),
            )
        assert main(["registry", "members", "approve", "--dir", str(directory), "stale"]) != 0
        assert row_counts(registry)[:2] == (1, 1)
        # The next enrolment drops it; so does the registry's housekeeping.
        assert enrol_outcomes(stub, [enrol_request("fresh")]) == [OK]
        with sessions() as session:
            assert [m.member_id for m in member_rows.list_members(session)] == ["fresh"]
        # Its id is free again: the member may enrol anew.
        assert enrol_outcomes(stub, [enrol_request("stale")]) == [OK]


def _with_kinds(request: registry_pb2.EnrolRequest, kinds: list[str]) -> registry_pb2.EnrolRequest:
    request.record_kinds.extend(kinds)
    return request


@pytest.mark.parametrize(
    ("what", "request_", "code", "reason"),
    [
        (
            "10 MiB display name",
            enrol_request("huge-name", display_name="x" * (10 * 1024 * 1024)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
        (
            "100 KiB message",
            registry_pb2.EnrolRequest(member_id="huge-csr", csr_pem="A" * 100 * 1024),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
        (
            "201-character display name",
            enrol_request("long-name", display_name="x" * 201),
            grpc.StatusCode.INVALID_ARGUMENT,
            "display_name is 201 characters; at most 200 are allowed",
        ),
        (
            "display name with control characters",
            enrol_request("ctl-name", display_name="evil\x1b[2J"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "display_name holds control characters",
        ),
        (
            "10 KiB member id",
            registry_pb2.EnrolRequest(member_id="a" * 10_000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "member_id is 10000 characters; at most 64 are allowed",
        ),
        (
            "record kinds repeated",
            _with_kinds(enrol_request("many-kinds"), ["court_judgment"] * 1000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "record_kinds names 1000 kinds",
        ),
    ],
    ids=["10MiB-name", "100KiB-message", "long-name", "control-chars", "long-id", "kinds"],
)
def test_oversized_enrolments_are_refused_and_write_nothing(
    burst_registry: tuple[RegistryThread, Path],
    what: str,
    request_: registry_pb2.EnrolRequest,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    registry, directory = burst_registry
    before = row_counts(registry)
    with public_stub(registry, directory) as stub:
        with pytest.raises(grpc.RpcError) as refusal:
            stub.Enrol(request_, timeout=60)
        assert refusal.value.code() is code, (what, refusal.value.details())
        assert reason in (refusal.value.details() or "")
        # Neither a member nor a rate bucket: shape is checked before anything is written.
        assert row_counts(registry) == before
        # The port still serves a well-formed enrolment.
        assert enrol_outcomes(stub, [enrol_request("after")]) == [OK]


# --- many addresses: the overall bucket, on both backends ---------------------------

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = database.create_engine_for(database_url)
    database.upgrade_schema(engine)
    yield database.session_factory(engine)
    engine.dispose()


def _enrol_from(sessions: sessionmaker[Session], address: str, limits: PublicLimits) -> bool:
    try:
        with sessions.begin() as session:
            take_public_tokens(session, ENROL, address, limits, NOW)
    except ResourceExhausted:
        return False
    return True


def test_many_addresses_together_hit_the_overall_limit(sessions: sessionmaker[Session]) -> None:
    limits = PublicLimits(
        enrolments_per_second_per_address=0.001,
        enrolment_burst_per_address=2,
        enrolments_per_second=0.001,
        enrolment_burst=10,
    )
    # One address floods: refused after its own burst, without draining the overall bucket.
    flood = [_enrol_from(sessions, "192.0.2.1", limits) for _ in range(20)]
    assert flood == [True] * 2 + [False] * 18
    # Many addresses, two each: the overall bucket has 8 left, then refuses everyone.
    spread = [_enrol_from(sessions, f"198.51.100.{i}", limits) for i in range(12)]
    assert spread == [True] * 8 + [False] * 4
    assert not _enrol_from(sessions, "203.0.113.7", limits)
