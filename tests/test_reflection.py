"""Server reflection v1 (what grpcurl and grpcui ask for first) and v1alpha on every port.

The v1 and v1alpha reflection messages are identical on the wire (only the
package differs), so the v1alpha message classes encode the v1 calls here.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from support.inprocess import start

from credence.dev import synthetic
from credence.rpc.tls import channel_credentials

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
EXPECTED = {
    "members": {"credence.v1.RegistryService"},
    "public": {
        "credence.v1.EnrolmentService",
        "credence.v1.SubjectAccessService",
        "credence.v1.TransparencyLogService",
    },
    "node": {"credence.v1.AgencyNodeService", "credence.v1.WitnessService"},
}
REFLECTION = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, grpc.Channel]]:
    federation = start(tmp_path_factory.mktemp("reflection"))
    try:
        node = federation.add_agency(synthetic.AGENCY_PROFILES[0], subjects=2)
        company = federation.enrol_member("acme", "company").credentials
        ca = federation.ca_pem
        registry_dir = federation.registry_dir
        identity = channel_credentials(
            (registry_dir / "tls.key").read_bytes(), (registry_dir / "tls.crt").read_bytes(), ca
        )
        opened = {
            "members": grpc.secure_channel(
                federation.address, channel_credentials(company.key_pem, company.cert_pem, ca)
            ),
            "public": grpc.secure_channel(
                federation.public, grpc.ssl_channel_credentials(root_certificates=ca)
            ),
            "node": grpc.secure_channel(f"127.0.0.1:{node.port}", identity),
        }
        try:
            yield opened
        finally:
            for channel in opened.values():
                channel.close()
    finally:
        federation.stop()


def reflect(
    channel: grpc.Channel, path: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (reply,) = list(call(iter([request]), timeout=60))
    return reply


@pytest.mark.parametrize("port", sorted(EXPECTED))
def test_v1_and_v1alpha_list_the_same_services(
    channels: dict[str, grpc.Channel], port: str
) -> None:
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    by_path = {}
    for path in (V1, V1ALPHA):
        reply = reflect(channels[port], path, listing)
        by_path[path] = {service.name for service in reply.list_services_response.service}
    assert by_path[V1] == by_path[V1ALPHA]
    assert by_path[V1] == EXPECTED[port] | REFLECTION | {"grpc.health.v1.Health"}


@pytest.mark.parametrize("port", sorted(EXPECTED))
def test_v1_describes_the_services_it_lists(channels: dict[str, grpc.Channel], port: str) -> None:
    for symbol in (*EXPECTED[port], "grpc.reflection.v1.ServerReflection"):
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        reply = reflect(channels[port], V1, request)
        assert not reply.HasField("error_response"), reply.error_response.error_message
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        package, _, service = symbol.rpartition(".")
        assert any(
            f.package == package and service in {s.name for s in f.service} for f in files
        ), symbol


def test_v1_refuses_an_unknown_symbol(channels: dict[str, grpc.Channel]) -> None:
    reply = reflect(
        channels["public"],
        V1,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="credence.v1.Nothing"),
    )
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
