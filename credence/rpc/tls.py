"""Mutual TLS for gRPC: credentials, the peer's member id, and revocation.

gRPC's TLS stack checks that a peer's certificate chains to the federation CA
and is within its validity by the machine's clock; it knows nothing of the
federation's revoked serials. So the server re-verifies the peer certificate
on every call: :func:`peer_member_id` in a handler, and
:class:`RevocationInterceptor` / :class:`AsyncRevocationInterceptor` in front
of every service (health checks and reflection included).

Server certificates carry the IP addresses and DNS names they are reached at
(see ``hosts`` in :func:`credence.pki.issue_member_certificate`), so clients
connect without ``grpc.ssl_target_name_override``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from credence.clock import Clock
from credence.errors import CredenceError, InvalidInput, Unauthenticated
from credence.keys import load_private_key_pem
from credence.pki import load_certificate_pem, verify_member_certificate
from credence.rpc.status import reason_for, status_for

_log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

PeerContext = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
_Behaviour = Callable[..., Any]


#: Channel options of a long-lived channel to a peer that may start after it:
#: gRPC's default reconnect backoff grows to 120 s, which would leave a node
#: unaware of a registry that came back for minutes (manifests, checkpoints,
#: the audit's proofs); these keep it under 5 s.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def _check_key_pair(key_pem: bytes, cert_pem: bytes) -> None:
    key = load_private_key_pem(key_pem)
    certificate = load_certificate_pem(cert_pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInput(
            f"TLS key is {type(key).__name__}; gRPC's TLS stack needs an ECDSA P-256 key"
        )
    if certificate.public_key() != key.public_key():
        raise InvalidInput("TLS certificate does not certify the TLS key it is paired with")


def server_credentials(
    key_pem: bytes, cert_pem: bytes, ca_cert_pem: bytes, *, require_client_auth: bool = True
) -> grpc.ServerCredentials:
    """Server credentials for a port, with or without mutual TLS.

    Works for ``grpc.server`` and ``grpc.aio.server`` alike. With
    ``require_client_auth=True`` (members' ports) the client must present a
    certificate from the federation CA. With ``False`` (the registry's public
    port for enrolment and subject access) grpc does not even ask for one, so
    no member-only service may be served on such a port.

    Raises:
        InvalidInput: the key or certificate is unreadable or encrypted, the
            key is not P-256, or the certificate is not for this key.
    """
    _check_key_pair(key_pem, cert_pem)
    load_certificate_pem(ca_cert_pem)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=ca_cert_pem,
        require_client_auth=require_client_auth,
    )


def channel_credentials(
    key_pem: bytes, cert_pem: bytes, ca_cert_pem: bytes
) -> grpc.ChannelCredentials:
    """Client credentials that present the member certificate and trust only the CA.

    Raises:
        InvalidInput: the key or certificate is unreadable or encrypted, the
            key is not P-256, or the certificate is not for this key.
    """
    _check_key_pair(key_pem, cert_pem)
    load_certificate_pem(ca_cert_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_cert_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def _first_bytes(value: object) -> bytes | None:
    # grpc hands each auth property as a list of bytes; the sync stubs claim bytes.
    if isinstance(value, bytes):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], bytes):
        return value[0]
    return None


def peer_certificate_pem(context: PeerContext) -> bytes:
    """The PEM certificate the peer presented in the TLS handshake.

    Raises:
        Unauthenticated: the call did not come over mutual TLS with a client
            certificate.
    """
    auth: Mapping[str, object] = context.auth_context()
    pem = _first_bytes(auth.get("x509_pem_cert"))
    if not pem:
        raise Unauthenticated(
            "the peer presented no client certificate: call over mutual TLS "
            "with a member certificate issued by the federation CA"
        )
    return pem


def peer_member_id(
    context: PeerContext,
    ca_cert: x509.Certificate,
    now: datetime,
    revoked_serials: Collection[int],
) -> str:
    """The member id of the peer of a call, from its re-verified certificate.

    Works with sync and grpc.aio servicer contexts.

    Raises:
        Unauthenticated: the peer presented no certificate.
        CertificateRefused: the certificate is not from the federation CA,
            outside its validity at ``now``, revoked, or names no member.
    """
    return verify_member_certificate(peer_certificate_pem(context), ca_cert, now, revoked_serials)


class _PeerCheck:
    def __init__(
        self,
        ca_cert: x509.Certificate,
        revoked_serials_provider: Callable[[], Collection[int]],
        clock: Clock,
        *,
        authorize: Callable[[str, str], None] | None = None,
    ) -> None:
        self._ca_cert = ca_cert
        self._revoked_serials = revoked_serials_provider
        self._clock = clock
        self._authorize = authorize

    def _refusal(self, context: PeerContext, method: str) -> CredenceError | None:
        try:
            member_id = peer_member_id(
                context, self._ca_cert, self._clock(), self._revoked_serials()
            )
            if self._authorize is not None:
                self._authorize(method, member_id)
        except CredenceError as exc:
            _log.warning("refused call to %s: %s", method, exc)
            return exc
        return None


def rebuild_handler(
    handler: grpc.RpcMethodHandler[_Req, _Resp], wrap: Callable[[_Behaviour, bool], _Behaviour]
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    """The same method handler with its behaviour replaced by ``wrap(behaviour, streaming)``.

    For server interceptors that must see the call's context (the peer), which
    ``intercept_service`` itself is not given.
    """
    factory: Callable[..., grpc.RpcMethodHandler[_Req, _Resp]]
    behaviour: _Behaviour | None
    if handler.request_streaming and handler.response_streaming:
        factory, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        factory, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        factory, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        factory, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    if behaviour is None:  # pragma: no cover - grpc always sets the matching behaviour
        return handler
    return factory(
        wrap(behaviour, handler.response_streaming),
        handler.request_deserializer,
        handler.response_serializer,
    )


class RevocationInterceptor(_PeerCheck, grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call whose client certificate fails verification.

    For ``grpc.server``. The revoked serials and the time are read on every
    call, so a revocation applies to the next call on an open connection.

    Args:
        ca_cert: the federation CA certificate.
        revoked_serials_provider: returns the currently revoked serials
            (e.g. from the federation manifest).
        clock: returns the current UTC time.
    """

    def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], grpc.RpcMethodHandler[_Req, _Resp] | None
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler so that it verifies the peer first."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def wrap(behaviour: _Behaviour, _streaming: bool) -> _Behaviour:
            def checked(request: object, context: grpc.ServicerContext) -> object:
                if refusal := self._refusal(context, method):
                    context.abort(status_for(refusal), reason_for(refusal))
                return behaviour(request, context)

            return checked

        return rebuild_handler(handler, wrap)


class AsyncRevocationInterceptor(_PeerCheck, grpc.aio.ServerInterceptor):
    """The :class:`RevocationInterceptor` for ``grpc.aio.server``, optionally per method.

    With ``authorize(method, member_id)``, which raises
    :class:`~credence.errors.PermissionDenied` for a member that may not call
    a method, such a call is refused before the service sees it.

    Handlers may be coroutine functions (streaming ones writing with
    ``context.write``) or async generator functions. Sync handlers work too
    but run on the event loop, even on a server with a migration thread pool.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler so that it verifies the peer first."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if refusal := self._refusal(context, method):
                await context.abort(status_for(refusal), reason_for(refusal))

        return rebuild_handler(
            handler, lambda behaviour, streaming: checked_async(behaviour, streaming, check)
        )


def checked_async(
    behaviour: _Behaviour,
    streaming: bool,
    check: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[None]],
) -> _Behaviour:
    """A grpc.aio behaviour that awaits ``check(context)`` first (it aborts to refuse)."""
    # grpc.aio drives a streaming handler by the kind of function it is: a
    # coroutine function writes with context.write, anything else yields. The
    # wrapper must be of the same kind as the handler it stands in for.
    if not streaming or inspect.iscoroutinefunction(behaviour):

        async def checked(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> object:
            await check(context)
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result

        return checked

    async def checked_stream(
        request: object, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterable[object]:
        await check(context)
        responses = behaviour(request, context)
        if isinstance(responses, AsyncIterable):
            async for response in responses:
                yield response
        else:
            for response in responses:
                yield response

    return checked_stream
