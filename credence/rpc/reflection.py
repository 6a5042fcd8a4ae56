"""gRPC server reflection under both service names: v1 and v1alpha.

grpcio-reflection serves only ``grpc.reflection.v1alpha.ServerReflection``,
while current clients (grpcurl, grpcui, Postman) ask for
``grpc.reflection.v1.ServerReflection`` first. The v1 messages are the v1alpha
messages field for field (only the package differs), so the v1 service is the
library's servicer registered under the v1 name, with the v1alpha message
classes doing the (identical) wire encoding. The v1 file descriptor, v1alpha's
renamed, joins the default pool so that a client can describe the v1 service
it found by listing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = ["SERVICE_NAMES", "V1_SERVICE_NAME", "enable_reflection"]

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
#: The reflection services every server lists.
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)

_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


@functools.cache
def _add_v1_descriptor() -> None:
    """Add grpc/reflection/v1/reflection.proto to the default pool, once."""
    file_proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file_proto)
    file_proto.name = "grpc/reflection/v1/reflection.proto"
    file_proto.package = _V1_PACKAGE
    old, new = f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}."
    for message in file_proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in file_proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    descriptor_pool.Default().Add(file_proto)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names``.

    The reflection services list themselves and the services named; nothing
    else is reflected.

    Raises:
        TypeError: the pool refuses the v1 descriptor (a conflicting file of
            the same name was added elsewhere).
    """
    _add_v1_descriptor()
    names = (*service_names, *SERVICE_NAMES)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    method: Any = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": method}),)
    )
