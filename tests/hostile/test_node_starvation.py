"""A member tries to starve an agency node (issue 10, section 3), from the attacker's side.

The attacker is a company with a valid federation certificate. Before the
fix, the node answered on eight threads that its own ``Health/Watch``
streams could hold for ever: twelve streams made every verdict INCOMPLETE.
Here it opens a hundred watch streams and a hundred stalled connections,
and calls what only the registry may call; the registry's lookups still
get the node's answer, and the attacker's calls are refused with
RESOURCE_EXHAUSTED or PERMISSION_DENIED.

A registry and one node run in this process over loopback mutual TLS.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import func, select
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node import database as node_database
from agency_node.models import QueryLogEntry, SeenQuery
from credence.dev import synthetic
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2

pytestmark = pytest.mark.slow

COURT = synthetic.AGENCY_PROFILES[0]
ATTACKER = "mallory"
WATCH_STREAMS = 100
STALLED_CONNECTIONS = 100
# node.toml's default: Health/Watch streams one member may hold open.
WATCH_LIMIT = 4
_SETTLE_S = 60


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    fed = start_federation("starvation")
    fed.enrol_member("acme", "company", "--purposes", "counterparty_verification")
    fed.enrol_member(ATTACKER, "company", "--purposes", "counterparty_verification")
    fed.add_agency(COURT)
    return fed


def _node(fed: InProcessFederation) -> str:
    return f"127.0.0.1:{fed.nodes[COURT.name].port}"


def _as_member(fed: InProcessFederation, member_id: str) -> grpc.Channel:
    member = fed.members[member_id].credentials
    credentials = channel_credentials(member.key_pem, member.cert_pem, member.ca_pem)
    return grpc.secure_channel(_node(fed), credentials)


def _as_registry(fed: InProcessFederation) -> grpc.Channel:
    credentials = channel_credentials(
        (fed.registry_dir / "tls.key").read_bytes(),
        (fed.registry_dir / "tls.crt").read_bytes(),
        fed.ca_pem,
    )
    return grpc.secure_channel(_node(fed), credentials)


class _Watch:
    """One Health/Watch stream; a thread waits for its first reply or its refusal."""

    def __init__(self, channel: grpc.Channel) -> None:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        self.call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        self.outcome: str | None = None
        self.details = ""
        self._thread = threading.Thread(target=self._first, daemon=True)
        self._thread.start()

    def _first(self) -> None:
        try:
            reply = next(self.call)
            self.outcome = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            self.outcome = exc.code().name
            self.details = exc.details() or ""

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(timeout=10)


def _stall(address: str, count: int) -> list[socket.socket]:
    """Connections that never finish: half send nothing, half start a TLS record and stop."""
    host, port = address.rsplit(":", 1)
    sockets = []
    for index in range(count):
        sock = socket.create_connection((host, int(port)), timeout=10)
        if index % 2:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # a handshake record's header, no body
        sockets.append(sock)
    return sockets


def _wait_for(condition: Callable[[], bool], seconds: float = _SETTLE_S) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _settled(watches: list[_Watch]) -> bool:
    """Whether every stream was opened or refused (none left waiting), within a generous time."""
    return _wait_for(lambda: all(watch.outcome is not None for watch in watches))


def _node_rows(fed: InProcessFederation) -> tuple[int, int]:
    engine = node_database.create_engine_for(node_database.sqlite_url_for(fed.node_dir(COURT.name)))
    try:
        with node_database.session_factory(engine)() as session:
            logged = session.scalar(select(func.count()).select_from(QueryLogEntry)) or 0
            seen = session.scalar(select(func.count()).select_from(SeenQuery)) or 0
            return logged, seen
    finally:
        engine.dispose()


def test_watch_streams_and_stalled_connections_do_not_starve_the_node(
    federation: InProcessFederation,
) -> None:
    listed = federation.subject(synthetic.organisation(1))
    with federation.requester("acme") as acme:
        assert acme.verify_organisation(listed).status == "listed"  # warm: channels open

    with ExitStack() as stack:
        channels = [stack.enter_context(_as_member(federation, ATTACKER)) for _ in range(10)]
        watches = [_Watch(channels[index % len(channels)]) for index in range(WATCH_STREAMS)]
        for watch in watches:
            stack.callback(watch.close)
        stalled = _stall(_node(federation), STALLED_CONNECTIONS)
        for sock in stalled:
            stack.callback(sock.close)

        assert _wait_for(lambda: sum(w.outcome == "SERVING" for w in watches) >= WATCH_LIMIT)

        # With all of that held open, lookups still get the node's answer.
        with federation.requester("acme") as acme:
            for _ in range(3):
                verdict = acme.verify_organisation(listed)
                coverage = verdict.verdict.coverage
                assert verdict.status == "listed", coverage
                assert (coverage.answered, coverage.expected) == (1, 1), coverage

        # Every stream was either opened or refused; none is left waiting for a thread.
        assert _settled(watches), (
            f"{sum(w.outcome is None for w in watches)} of {WATCH_STREAMS} watch streams "
            "neither opened nor were refused"
        )
        outcomes = [watch.outcome for watch in watches]
        assert outcomes.count("SERVING") == WATCH_LIMIT
        assert outcomes.count("RESOURCE_EXHAUSTED") == WATCH_STREAMS - WATCH_LIMIT
        refusal = next(w.details for w in watches if w.outcome == "RESOURCE_EXHAUSTED")
        assert ATTACKER in refusal, refusal
        assert "Health/Watch streams" in refusal, refusal

        # Health/Check from the same member is still answered.
        stub: Any = health_pb2_grpc.HealthStub(channels[0])
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_member_may_check_health_but_not_call_the_registrys_methods(
    federation: InProcessFederation,
) -> None:
    with _as_member(federation, ATTACKER) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="credence.v1.AgencyNodeService"), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        before = _node_rows(federation)
        node = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            node.AnswerQuery(
                agency_pb2.AnswerQueryRequest(query=common_pb2.Envelope(payload=b"x")), timeout=10
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "only the registry" in (refused.value.details() or "")

        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "only the registry" in (refused.value.details() or "")
        assert _node_rows(federation) == before, "a refused call left a trace in the node"

    # The registry itself still lists the node's services.
    with _as_registry(federation) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
    services = {service.name for service in replies[0].list_services_response.service}
    assert "credence.v1.AgencyNodeService" in services


def test_the_registry_public_port_limits_watch_streams_per_address(
    federation: InProcessFederation,
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=federation.ca_pem)
    with grpc.secure_channel(federation.public, credentials) as channel:
        watches = [_Watch(channel) for _ in range(WATCH_LIMIT + 3)]
        try:
            assert _settled(watches)
            outcomes = [watch.outcome for watch in watches]
            assert outcomes.count("SERVING") == WATCH_LIMIT, outcomes
            assert outcomes.count("RESOURCE_EXHAUSTED") == 3, outcomes
        finally:
            for watch in watches:
                watch.close()
        # Closed streams give their places back.
        deadline = time.monotonic() + _SETTLE_S
        while True:
            again = _Watch(channel)
            try:
                while again.outcome is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if again.outcome == "SERVING" or time.monotonic() > deadline:
                    break
            finally:
                again.close()
        assert again.outcome == "SERVING", again.details
