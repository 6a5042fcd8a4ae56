"""OpenTelemetry traces of a lookup: client -> registry -> each node, off by default.

A process turns tracing on once, at its edge (:func:`configure` from the
``--otlp``/``--trace-console`` flags or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
and ``OTEL_TRACES_EXPORTER`` variables; tests call :func:`use_provider`). Until
then :func:`span` hands back one shared do-nothing context manager, the servers
get no tracing interceptor and clients no metadata: no span object, no
OpenTelemetry import on the hot path.

The W3C ``traceparent`` travels in gRPC metadata: :class:`TracingServerInterceptor`
(grpc.aio servers) continues the caller's trace in a server span per call;
:class:`TracingClientInterceptor` (synchronous client channels) and
:func:`outgoing_metadata` (the registry's fan-out) carry the current span to
the next hop.

Span attributes hold only bounded, non-subject values, from :data:`ATTRIBUTES`
(an agency's member id, a count of rows); :func:`span` refuses any other
key, so no identifier, subject reference, grant id or query id can reach a span.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from credence.rpc.tls import rebuild_handler

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

__all__ = [
    "ATTRIBUTES",
    "TracingClientInterceptor",
    "TracingServerInterceptor",
    "configure",
    "current_trace_id",
    "enabled",
    "outgoing_metadata",
    "server_interceptors",
    "shutdown",
    "span",
    "traced_channel",
    "use_provider",
]

#: The only span attribute keys: none of them can hold subject data.
ATTRIBUTES = frozenset(
    {
        "credence.agency",  # an agency's member id (a member, not a subject)
        "credence.items",  # how many subjects a screening message or batch carries
    }
)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Behaviour = Callable[..., Any]

_OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


class _State:
    """This process's tracer and provider (None: tracing off)."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether this process records spans."""
    return _State.tracer is not None


def configure(
    service: str,
    *,
    otlp: str | None = None,
    console: bool = False,
    environ: dict[str, str] | None = None,
) -> bool:
    """Turn tracing on for this process if a flag or the environment asks for it.

    Args:
        service: the ``service.name`` resource attribute (``credence-registry``, ...).
        otlp: an OTLP/gRPC collector endpoint (``--otlp``); else ``OTEL_EXPORTER_OTLP_ENDPOINT``.
        console: print each span on stderr (``--trace-console``); also
            ``OTEL_TRACES_EXPORTER=console``.
        environ: the environment to read (``os.environ`` if not given).

    Returns:
        Whether tracing is on.
    """
    env = os.environ if environ is None else environ
    endpoint = otlp or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    exporters = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    console = console or "console" in exporters
    if "none" in exporters and otlp is None and not console:
        endpoint = None
    if endpoint is None and not console:
        return False
    # The SDK (and the exporter below) load only in a process that traces.
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    use_provider(provider)
    return True


def use_provider(provider: TracerProvider | None) -> None:
    """Record spans through ``provider`` (None: tracing off again; tests)."""
    _State.provider = provider
    _State.tracer = None if provider is None else provider.get_tracer("credence")


def shutdown() -> None:
    """Export the spans still buffered and turn tracing off (a server's exit)."""
    provider = _State.provider
    use_provider(None)
    if provider is not None:
        provider.shutdown()


def span(name: str, **attributes: str | int) -> contextlib.AbstractContextManager[Any]:
    """A span named ``name`` around a block, the current span its parent.

    Attribute keywords are :data:`ATTRIBUTES` keys without ``credence.``
    (``agency=...``). With tracing off: one shared do-nothing manager.

    Raises:
        ValueError: an attribute outside :data:`ATTRIBUTES` (it could carry subject data).
    """
    tracer = _State.tracer
    if tracer is None:
        return _OFF
    named = {f"credence.{key}": value for key, value in attributes.items()}
    unknown = set(named) - ATTRIBUTES
    if unknown:
        raise ValueError(
            f"span attributes {sorted(unknown)} are not allowed; use {sorted(ATTRIBUTES)}"
        )
    return tracer.start_as_current_span(name, attributes=named)


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, or None (tracing off, no span)."""
    if _State.tracer is None:
        return None
    from opentelemetry import trace  # noqa: PLC0415 - ~40 ms of imports a non-tracing process skips

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """The ``traceparent`` (and ``tracestate``) metadata for a call made now; None when off."""
    if _State.tracer is None:
        return None
    from opentelemetry.propagate import inject  # noqa: PLC0415 - as in current_trace_id

    carrier: dict[str, str] = {}
    inject(carrier)
    return tuple(carrier.items())


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The tracing interceptor for a grpc.aio server's chain, or nothing when off."""
    return [TracingServerInterceptor()] if _State.tracer is not None else []


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(
        self, details: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class TracingClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """For synchronous client channels: a client span per call, its ``traceparent`` sent along."""

    def _call(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        with span(details.method):
            metadata = (*(details.metadata or ()), *(outgoing_metadata() or ()))
            return continuation(_ClientCallDetails(details, metadata), request)

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Trace a unary call."""
        return self._call(continuation, client_call_details, request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Trace the start of a response stream."""
        return self._call(continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Trace a request stream."""
        return self._call(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Trace a bidirectional stream's start."""
        return self._call(continuation, client_call_details, request_iterator)


def traced_channel(channel: grpc.Channel) -> grpc.Channel:
    """``channel`` with :class:`TracingClientInterceptor` in front when tracing is on."""
    if _State.tracer is None:
        return channel
    return grpc.intercept_channel(channel, TracingClientInterceptor())


@contextlib.contextmanager
def _server_span(method: str, metadata: dict[str, str]) -> Iterator[None]:
    from opentelemetry.propagate import extract  # noqa: PLC0415 - as in current_trace_id
    from opentelemetry.trace import SpanKind  # noqa: PLC0415

    tracer = _State.tracer
    if tracer is None:  # turned off since the call arrived
        yield
        return
    with tracer.start_as_current_span(method, context=extract(metadata), kind=SpanKind.SERVER):
        yield


def _traced(
    behaviour: _Behaviour, streaming: bool, method: str, metadata: dict[str, str]
) -> _Behaviour:
    # As in credence.ops.metrics: grpc.aio drives a response-streaming handler
    # by its kind, so the wrapper is of the same kind as the handler.
    if not streaming or inspect.iscoroutinefunction(behaviour):

        async def called(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _server_span(method, metadata):
                result = behaviour(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result

        return called

    async def streamed(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        with _server_span(method, metadata):
            responses = behaviour(request, context)
            if isinstance(responses, AsyncIterable):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response

    return streamed


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """For ``grpc.aio.server``: each call runs in a server span continuing the caller's trace."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler in a span whose parent is the caller's ``traceparent``."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        metadata = {
            key: value
            for key, value in handler_call_details.invocation_metadata or ()
            if key in ("traceparent", "tracestate") and isinstance(value, str)
        }
        method = handler_call_details.method
        return rebuild_handler(
            handler, lambda behaviour, streaming: _traced(behaviour, streaming, method, metadata)
        )
