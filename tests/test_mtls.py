"""Mutual TLS over real gRPC servers on 127.0.0.1: identities, refusals, revocation.

The certificates here are issued at the real current time: gRPC's TLS stack
checks validity against the machine clock, not against a ``now`` we pass in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterator
from concurrent import futures
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from credence import pki
from credence.errors import InvalidInput
from credence.keys import private_key_pem
from credence.rpc.status import grpc_errors, grpc_errors_async
from credence.rpc.tls import (
    AsyncRevocationInterceptor,
    RevocationInterceptor,
    channel_credentials,
    peer_member_id,
    server_credentials,
)

SERVICE = "credence.test.Echo"
WHO_AM_I = f"/{SERVICE}/WhoAmI"
COUNT = f"/{SERVICE}/Count"
COUNT_ASYNC = f"/{SERVICE}/CountAsync"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
TIMEOUT = 5.0


@dataclass(frozen=True)
class Identity:
    key_pem: bytes
    cert_pem: bytes

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.cert_pem).serial_number


@dataclass(frozen=True)
class World:
    ca: pki.CertificateAuthority
    server: Identity
    client: Identity
    revoked_client: Identity
    foreign_ca: pki.CertificateAuthority
    foreign_server: Identity
    foreign_client: Identity

    def client_credentials(self, who: Identity) -> grpc.ChannelCredentials:
        return channel_credentials(who.key_pem, who.cert_pem, self.ca.certificate_pem)


def _member(
    ca: pki.CertificateAuthority, member_id: str, now: datetime, hosts: tuple[str, ...] = ()
) -> Identity:
    key = pki.generate_tls_key()
    csr = pki.make_csr(key, member_id)
    cert = pki.issue_member_certificate(ca, csr, member_id, now, hosts=hosts)
    return Identity(private_key_pem(key), cert)


def _ed25519_member(
    ca: pki.CertificateAuthority, member_id: str, now: datetime, hosts: tuple[str, ...] = ()
) -> Identity:
    """The same certificate profile as issue_member_certificate, with an Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(pki.member_uri(member_id))]
    names += [x509.IPAddress(ipaddress.ip_address(host)) for host in hosts]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    return Identity(private_key_pem(key), pki.certificate_pem(cert))


@pytest.fixture(scope="module")
def world() -> World:
    now = datetime.now(UTC)
    ca = pki.create_ca("Credence Test CA", now, timedelta(days=365))
    # Same name as the federation CA: only the key tells them apart.
    foreign = pki.create_ca("Credence Test CA", now, timedelta(days=365))
    hosts = ("127.0.0.1", "::1", "localhost")
    return World(
        ca=ca,
        server=_member(ca, "node-1", now, hosts),
        client=_member(ca, "bank-a", now),
        revoked_client=_member(ca, "bank-r", now),
        foreign_ca=foreign,
        foreign_server=_member(foreign, "node-1", now, hosts),
        foreign_client=_member(foreign, "bank-a", now),
    )


@pytest.fixture
def revoked(world: World) -> set[int]:
    return {world.revoked_client.serial}


def _raw(data: bytes) -> bytes:
    """The test service's messages are raw bytes: identity (de)serializers."""
    return data


def _now() -> datetime:
    return datetime.now(UTC)


# --- a tiny service -----------------------------------------------------------------


def _echo_handlers(ca_cert: x509.Certificate, revoked: Collection[int]) -> grpc.GenericRpcHandler:
    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        member = ""
        with grpc_errors(context):
            member = peer_member_id(context, ca_cert, _now(), revoked)
        return member.encode()

    def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        # Checks no identity itself: only an interceptor protects it.
        yield from (b"1", b"2", b"3")

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i, _raw, _raw),
            "Count": grpc.unary_stream_rpc_method_handler(count, _raw, _raw),
        },
    )


@pytest.fixture
def start_server(world: World) -> Iterator[Callable[..., int]]:
    """Start a thread-pool server on 127.0.0.1:0 and return its port."""
    servers: list[grpc.Server] = []

    def start(
        *,
        revoked: Collection[int],
        interceptor: bool = True,
        credentials: grpc.ServerCredentials | None = None,
        insecure: bool = False,
    ) -> int:
        interceptors: list[grpc.ServerInterceptor] = []
        if interceptor:
            interceptors.append(RevocationInterceptor(world.ca.certificate, lambda: revoked, _now))
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
        servers.append(server)
        server.add_generic_rpc_handlers([_echo_handlers(world.ca.certificate, revoked)])
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        if insecure:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            if credentials is None:
                credentials = server_credentials(
                    world.server.key_pem, world.server.cert_pem, world.ca.certificate_pem
                )
            port = server.add_secure_port("127.0.0.1:0", credentials)
        assert port != 0
        server.start()
        return port

    yield start
    for server in servers:
        server.stop(None).wait()


def _call(
    port: int, credentials: grpc.ChannelCredentials | None, method: str = WHO_AM_I
) -> list[bytes]:
    """Call a method with an empty request; the responses as a list."""
    target = f"127.0.0.1:{port}"
    with (
        grpc.secure_channel(target, credentials)
        if credentials
        else grpc.insecure_channel(target) as channel
    ):
        if method == COUNT:
            return list(
                channel.unary_stream(method, request_serializer=_raw, response_deserializer=_raw)(
                    b"", timeout=TIMEOUT
                )
            )
        if method == HEALTH_CHECK:
            check = channel.unary_unary(
                method,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            response: health_pb2.HealthCheckResponse = check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
            return [health_pb2.HealthCheckResponse.ServingStatus.Name(response.status).encode()]
        reply: bytes = channel.unary_unary(
            method, request_serializer=_raw, response_deserializer=_raw
        )(b"", timeout=TIMEOUT)
        return [reply]


def _refused(
    port: int, credentials: grpc.ChannelCredentials | None, method: str = WHO_AM_I
) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _call(port, credentials, method)
    return caught.value


def _assert_handshake_refused(
    port: int, credentials: grpc.ChannelCredentials, control: grpc.ChannelCredentials | None
) -> None:
    """The call fails to connect, while a good client gets through to the same server.

    The client only sees UNAVAILABLE; the details vary with which side broke
    off the handshake ("Socket closed", "Handshake read failed", ...), so the
    control call is what shows the refusal is about the certificate.
    """
    error = _refused(port, credentials)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert (error.details() or "").startswith("failed to connect to all addresses")
    if control is not None:
        assert _call(port, control) == [b"bank-a"]


# --- thread-pool server ---------------------------------------------------------------


def test_server_reads_the_client_member_id(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    port = start_server(revoked=revoked)
    credentials = world.client_credentials(world.client)
    assert _call(port, credentials) == [b"bank-a"]
    assert _call(port, credentials, COUNT) == [b"1", b"2", b"3"]
    assert _call(port, credentials, HEALTH_CHECK) == [b"SERVING"]


def test_client_from_a_foreign_ca_fails_the_handshake(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    port = start_server(revoked=revoked)
    good = world.client_credentials(world.client)
    _assert_handshake_refused(port, world.client_credentials(world.foreign_client), good)


def test_client_without_a_certificate_fails_the_handshake(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    port = start_server(revoked=revoked)
    no_cert = grpc.ssl_channel_credentials(root_certificates=world.ca.certificate_pem)
    _assert_handshake_refused(port, no_cert, world.client_credentials(world.client))


def test_client_refuses_a_server_from_a_foreign_ca(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    foreign = world.foreign_server
    port = start_server(
        revoked=revoked,
        credentials=grpc.ssl_server_credentials(
            [(foreign.key_pem, foreign.cert_pem)],
            root_certificates=world.ca.certificate_pem,
            require_client_auth=True,
        ),
    )
    _assert_handshake_refused(port, world.client_credentials(world.client), None)


@pytest.mark.parametrize("method", [WHO_AM_I, COUNT, HEALTH_CHECK])
def test_revoked_client_is_refused_on_every_method(
    world: World, start_server: Callable[..., int], revoked: set[int], method: str
) -> None:
    port = start_server(revoked=revoked)
    error = _refused(port, world.client_credentials(world.revoked_client), method)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    serial = f"{world.revoked_client.serial:#x}"
    assert error.details() == f"certificate of member 'bank-r' is revoked (serial {serial})"


def test_without_the_interceptor_only_checking_handlers_refuse(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    # The TLS stack knows nothing of revocation: this is why the interceptor exists.
    port = start_server(revoked=revoked, interceptor=False)
    credentials = world.client_credentials(world.revoked_client)
    assert _call(port, credentials, COUNT) == [b"1", b"2", b"3"]
    error = _refused(port, credentials, WHO_AM_I)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert re.fullmatch(
        r"certificate of member 'bank-r' is revoked \(serial 0x[0-9a-f]+\)", error.details() or ""
    )


def test_revocation_applies_to_an_open_connection(
    world: World, start_server: Callable[..., int], revoked: set[int]
) -> None:
    port = start_server(revoked=revoked)
    with grpc.secure_channel(
        f"127.0.0.1:{port}", world.client_credentials(world.client)
    ) as channel:
        count = channel.unary_stream(COUNT, request_serializer=_raw, response_deserializer=_raw)
        assert list(count(b"", timeout=TIMEOUT)) == [b"1", b"2", b"3"]
        revoked.add(world.client.serial)
        with pytest.raises(grpc.RpcError) as caught:
            list(count(b"", timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "member 'bank-a' is revoked" in (caught.value.details() or "")


@pytest.mark.parametrize("interceptor", [True, False])
def test_call_without_tls_is_unauthenticated(
    start_server: Callable[..., int], revoked: set[int], interceptor: bool
) -> None:
    port = start_server(revoked=revoked, insecure=True, interceptor=interceptor)
    # Count checks nothing itself, so with the interceptor it shows the interceptor refusing.
    error = _refused(port, None, COUNT if interceptor else WHO_AM_I)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (error.details() or "").startswith("the peer presented no client certificate")


# --- credentials ------------------------------------------------------------------


def test_credentials_refuse_a_key_grpc_cannot_use(world: World) -> None:
    ed = _ed25519_member(world.ca, "bank-e", datetime.now(UTC))
    ca_pem = world.ca.certificate_pem
    with pytest.raises(InvalidInput, match=r"TLS key is .*Ed25519.*needs an ECDSA P-256 key"):
        server_credentials(ed.key_pem, ed.cert_pem, ca_pem)
    with pytest.raises(InvalidInput, match=r"TLS key is .*Ed25519.*needs an ECDSA P-256 key"):
        channel_credentials(ed.key_pem, ed.cert_pem, ca_pem)


def test_credentials_refuse_a_certificate_of_another_key(world: World) -> None:
    ca_pem = world.ca.certificate_pem
    key, cert = world.client.key_pem, world.server.cert_pem
    with pytest.raises(InvalidInput, match="does not certify the TLS key"):
        server_credentials(key, cert, ca_pem)
    with pytest.raises(InvalidInput, match="does not certify the TLS key"):
        channel_credentials(key, cert, ca_pem)
    with pytest.raises(InvalidInput, match="not a readable PEM certificate"):
        channel_credentials(world.client.key_pem, world.client.cert_pem, b"not a cert")


# --- why P-256: gRPC's TLS stack refuses Ed25519 certificates -------------------------


@pytest.mark.parametrize(
    ("server_key", "client_key"),
    [("p256", "p256"), ("ed25519", "p256"), ("p256", "ed25519"), ("ed25519", "ed25519")],
)
def test_grpc_mutual_tls_accepts_p256_and_refuses_ed25519_certificates(
    world: World,
    start_server: Callable[..., int],
    revoked: set[int],
    server_key: str,
    client_key: str,
) -> None:
    """BoringSSL in grpcio 1.85 has no common signature algorithm for Ed25519 certificates.

    If this fails because an Ed25519 handshake now succeeds, grpcio has gained
    Ed25519 support: revisit the key type in credence.pki.
    """
    now = datetime.now(UTC)
    make = {"p256": _member, "ed25519": _ed25519_member}
    server = make[server_key](world.ca, "node-1", now, ("127.0.0.1",))
    client = make[client_key](world.ca, "bank-a", now)
    port = start_server(
        revoked=revoked,
        credentials=grpc.ssl_server_credentials(
            [(server.key_pem, server.cert_pem)],
            root_certificates=world.ca.certificate_pem,
            require_client_auth=True,
        ),
    )
    credentials = grpc.ssl_channel_credentials(
        world.ca.certificate_pem, client.key_pem, client.cert_pem
    )
    if server_key == client_key == "p256":
        assert _call(port, credentials) == [b"bank-a"]
        return
    # With a P-256 server, a P-256 client shows the server is up and only the key type failed.
    control = world.client_credentials(world.client) if server_key == "p256" else None
    _assert_handshake_refused(port, credentials, control)


# --- grpc.aio server and client -------------------------------------------------------


@asynccontextmanager
async def _aio_server(world: World, revoked: Collection[int]) -> AsyncIterator[int]:
    async def who_am_i(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        member = ""
        async with grpc_errors_async(context):
            member = peer_member_id(context, world.ca.certificate, _now(), revoked)
        return member.encode()

    async def count_async(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        for item in (b"1", b"2", b"3"):
            yield item

    def count(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[bytes]:
        yield from (b"1", b"2", b"3")

    server = grpc.aio.server(
        interceptors=[AsyncRevocationInterceptor(world.ca.certificate, lambda: revoked, _now)]
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i, _raw, _raw),
                    "CountAsync": grpc.unary_stream_rpc_method_handler(count_async, _raw, _raw),
                    "Count": grpc.unary_stream_rpc_method_handler(count, _raw, _raw),
                },
            )
        ]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    credentials = server_credentials(
        world.server.key_pem, world.server.cert_pem, world.ca.certificate_pem
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def _aio_calls(port: int, credentials: grpc.ChannelCredentials) -> dict[str, list[bytes]]:
    """Call every method once; each method's responses, or its status code name and details."""
    results: dict[str, list[bytes]] = {}
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        calls: dict[str, Callable[[], Any]] = {
            WHO_AM_I: lambda: channel.unary_unary(
                WHO_AM_I, request_serializer=_raw, response_deserializer=_raw
            )(b"", timeout=TIMEOUT),
            COUNT: lambda: _collect(
                channel.unary_stream(COUNT, request_serializer=_raw, response_deserializer=_raw)(
                    b"", timeout=TIMEOUT
                )
            ),
            COUNT_ASYNC: lambda: _collect(
                channel.unary_stream(
                    COUNT_ASYNC, request_serializer=_raw, response_deserializer=_raw
                )(b"", timeout=TIMEOUT)
            ),
            HEALTH_CHECK: lambda: channel.unary_unary(
                HEALTH_CHECK,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            )(health_pb2.HealthCheckRequest(), timeout=TIMEOUT),
            HEALTH_WATCH: lambda: _first(
                channel.unary_stream(
                    HEALTH_WATCH,
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                )(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            ),
        }
        for method, call in calls.items():
            try:
                result = await call()
            except grpc.aio.AioRpcError as exc:
                results[method] = [exc.code().name.encode(), (exc.details() or "").encode()]
            else:
                results[method] = result if isinstance(result, list) else [b"ok", result]
    return results


async def _collect(responses: AsyncIterable[bytes]) -> list[bytes]:
    return [response async for response in responses]


async def _first(responses: Any) -> bytes:
    async for response in responses:
        responses.cancel()
        return bytes(response)
    return b""


def test_aio_server_reads_the_client_member_id(world: World, revoked: set[int]) -> None:
    async def scenario() -> dict[str, list[bytes]]:
        async with _aio_server(world, revoked) as port:
            return await _aio_calls(port, world.client_credentials(world.client))

    results = asyncio.run(scenario())
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    assert results == {
        WHO_AM_I: [b"ok", b"bank-a"],
        COUNT: [b"1", b"2", b"3"],
        COUNT_ASYNC: [b"1", b"2", b"3"],
        HEALTH_CHECK: [b"ok", serving.SerializeToString()],
        HEALTH_WATCH: [b"ok", serving.SerializeToString()],
    }


def test_aio_revoked_client_is_refused_on_every_method(world: World, revoked: set[int]) -> None:
    async def scenario() -> dict[str, list[bytes]]:
        async with _aio_server(world, revoked) as port:
            return await _aio_calls(port, world.client_credentials(world.revoked_client))

    results = asyncio.run(scenario())
    reason = f"certificate of member 'bank-r' is revoked (serial {world.revoked_client.serial:#x})"
    refused = [b"UNAUTHENTICATED", reason.encode()]
    assert results == dict.fromkeys(
        (WHO_AM_I, COUNT, COUNT_ASYNC, HEALTH_CHECK, HEALTH_WATCH), refused
    )


def test_aio_client_from_a_foreign_ca_fails_the_handshake(world: World, revoked: set[int]) -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        async with _aio_server(world, revoked) as port:
            foreign = await _aio_calls(port, world.client_credentials(world.foreign_client))
            good = await _aio_calls(port, world.client_credentials(world.client))
        return foreign[WHO_AM_I], good[WHO_AM_I]

    (code, details), good = asyncio.run(scenario())
    assert code == b"UNAVAILABLE"
    assert details.startswith(b"failed to connect to all addresses")
    assert good == [b"ok", b"bank-a"]
