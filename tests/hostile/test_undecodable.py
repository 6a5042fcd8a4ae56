"""Bytes that are no message, sent to every RPC of every service, over real gRPC.

Before issue 10 the registry answered UNKNOWN and nodes INTERNAL, and each bad
``ScreenBatch`` logged a traceback and an asyncio "Task was destroyed"
warning. Now every port (the registry's members' and public ports, a node)
answers INVALID_ARGUMENT with a one-line reason, and the server logs one line
per refused call, never a traceback.
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from support.inprocess import InProcessFederation, start

from credence.dev import synthetic
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2, registry_pb2

#: Every message type refuses these: a truncated varint tag, a length-delimited
#: field shorter than its length, and a tag with field number 0.
FIXED_GARBAGE = (b"\xff", b"\x0a\x05ab", b"\x00\x01")
SHARED: tuple[Any, ...] = (
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
PORTS: dict[str, tuple[Any, ...]] = {
    "members": (registry_pb2.DESCRIPTOR.services_by_name["RegistryService"], *SHARED),
    "public": tuple(
        registry_pb2.DESCRIPTOR.services_by_name[name]
        for name in ("EnrolmentService", "SubjectAccessService", "TransparencyLogService")
    )
    + SHARED,
    "node": (agency_pb2.DESCRIPTOR.services_by_name["AgencyNodeService"], *SHARED),
}


def undecodable(method: MethodDescriptor, data: bytes) -> bool:
    """Whether this method's request type refuses ``data`` here, in the client."""
    try:
        message_factory.GetMessageClass(method.input_type).FromString(data)
    except Exception:
        return True
    return False


def garbage(method: MethodDescriptor, rng: random.Random) -> list[bytes]:
    """The fixed garbage this method's type refuses, and random bytes it refuses."""
    chosen = [data for data in FIXED_GARBAGE if undecodable(method, data)]
    while len(chosen) < len(FIXED_GARBAGE) + 1:
        data = rng.randbytes(rng.randint(1, 200))
        if undecodable(method, data):
            chosen.append(data)
    return chosen


@dataclass
class Ports:
    federation: InProcessFederation
    channels: dict[str, grpc.Channel]


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ports]:
    federation = start(tmp_path_factory.mktemp("undecodable"))
    try:
        node = federation.add_agency(synthetic.AGENCY_PROFILES[0], subjects=5)
        # An approved member: handlers that check the caller first (ScreenBatch) then read.
        company = federation.enrol_member("acme", "company").credentials
        registry_dir = federation.registry_dir
        ca = federation.ca_pem
        # The registry's own identity: the one peer a node lets call its service.
        identity = channel_credentials(
            (registry_dir / "tls.key").read_bytes(), (registry_dir / "tls.crt").read_bytes(), ca
        )
        channels = {
            "members": grpc.secure_channel(
                federation.address,
                channel_credentials(company.key_pem, company.cert_pem, ca),
            ),
            "public": grpc.secure_channel(
                federation.public, grpc.ssl_channel_credentials(root_certificates=ca)
            ),
            "node": grpc.secure_channel(f"127.0.0.1:{node.port}", identity),
        }
        try:
            for channel in channels.values():
                grpc.channel_ready_future(channel).result(timeout=60)
            yield Ports(federation, channels)
        finally:
            for channel in channels.values():
                channel.close()
    finally:
        federation.stop()


def call_raw(
    channel: grpc.Channel, path: str, method: MethodDescriptor, data: bytes
) -> grpc.RpcError:
    """Send ``data`` as the request (the only message of a stream); the refusal."""
    timeout = 60
    # No serializers: the bytes go out as they are.
    call: Any
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path)
            list(call(iter([data]), timeout=timeout))
        elif method.client_streaming:
            call = channel.stream_unary(path)
            call(iter([data]), timeout=timeout)
        elif method.server_streaming:
            call = channel.unary_stream(path)
            list(call(data, timeout=timeout))
        else:
            call = channel.unary_unary(path)
            call(data, timeout=timeout)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{path} accepted {len(data)} undecodable bytes")


def _server_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [
        r
        for r in records
        if r.name.split(".")[0]
        in {"grpc", "asyncio", "credence", "central_registry", "agency_node"}
    ]


def test_every_rpc_of_every_service_refuses_undecodable_bytes_quietly(
    ports: Ports, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(10)
    caplog.set_level(logging.INFO)
    sent = 0
    for port, services in PORTS.items():
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                for data in garbage(method, rng):
                    refusal = call_raw(ports.channels[port], path, method, data)
                    sent += 1
                    assert refusal.code() is grpc.StatusCode.INVALID_ARGUMENT, (
                        port, path, data, refusal.code(), refusal.details()
                    )  # fmt: skip
                    reason = refusal.details() or ""
                    assert "\n" not in reason
                    assert f"cannot decode the {len(data)}-byte request to {path}" in reason
                    assert method.input_type.full_name in reason
    gc.collect()  # an abandoned task's "Task was destroyed" is logged when collected
    records = caplog.records
    refused = [r for r in records if r.name == "credence.rpc.decoding"]
    assert len(refused) == sent, "one log line per refused call"
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in refused)
    noisy = [
        r
        for r in _server_records(records)
        if r.exc_info is not None
        or "Traceback" in r.getMessage()
        or "Task was destroyed" in r.getMessage()
        or "Exception" in r.getMessage()
    ]
    assert not noisy, [r.getMessage()[:300] for r in noisy]
    print(f"undecodable requests: {sent} calls, {sent} INVALID_ARGUMENT, {len(refused)} log lines")


def test_a_stream_refuses_an_undecodable_message_mid_stream(ports: Ports) -> None:
    # Reflection is a bidirectional stream on every port: one good request, then garbage.
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    for port, channel in ports.channels.items():
        call: Any = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        responses = call(iter([good, b"\x0a\x05ab"]), timeout=60)
        first = reflection_pb2.ServerReflectionResponse.FromString(next(responses))
        assert first.list_services_response.service, port
        with pytest.raises(grpc.RpcError) as refusal:
            next(responses)
        assert refusal.value.code() is grpc.StatusCode.INVALID_ARGUMENT, port
        assert "ServerReflectionRequest" in (refusal.value.details() or "")


def test_decodable_requests_still_reach_their_handlers(ports: Ports) -> None:
    # The decoding moved into the handler; a good request must still decode.
    health = ports.channels["node"].unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    assert health(health_pb2.HealthCheckRequest(), timeout=60).status == (
        health_pb2.HealthCheckResponse.SERVING
    )
    head = ports.channels["public"].unary_unary(
        "/credence.v1.TransparencyLogService/GetTreeHead",
        request_serializer=registry_pb2.GetTreeHeadRequest.SerializeToString,
        response_deserializer=registry_pb2.GetTreeHeadResponse.FromString,
    )
    assert head(registry_pb2.GetTreeHeadRequest(), timeout=60).ByteSize() > 0
