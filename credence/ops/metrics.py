"""Prometheus metrics shared by the registry and the nodes.

:class:`RpcMetricsInterceptor` counts every call a grpc.aio server handles by
method and status code and times it per method; the registry's and the node's
servers put it first in their interceptor chain, so refusals by the other
interceptors (peer limits, revoked certificates, undecodable requests) are
counted too. :class:`MetricsListener` serves ``/metrics`` over plain HTTP on a
given address (the node's ``metrics_listen``; loopback by default) and stops
with the server that started it.

Labels hold only bounded values: a method the server registered, a status
code's name, a member's or agency's id, a fixed outcome. Never a subject
reference, an identifier, a grant id or a query id.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import grpc.aio
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from credence.errors import InvalidInput
from credence.rpc.tls import rebuild_handler

__all__ = [
    "LATENCY_BUCKETS",
    "RPC_DURATION",
    "RPC_REQUESTS",
    "LatestServer",
    "MetricsListener",
    "RpcMetricsInterceptor",
    "parse_listen",
]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Behaviour = Callable[..., Any]

#: Seconds: from a cached health check (~1 ms) to a screening stream's deadline.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

RPC_REQUESTS = Counter(
    "credence_rpc_requests",
    "gRPC calls handled, by full method name and status code name.",
    ["method", "code"],
)
RPC_DURATION = Histogram(
    "credence_rpc_duration_seconds",
    "Time from a call's handler starting to its end, by full method name.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)


def _code_name(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status a call ended with: what the handler set, else what its exception means."""
    code: object = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int) and code != 0:
        # grpc.aio reports an abort's code as the raw integer.
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if error is None:
        return grpc.StatusCode.OK.name
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name


class _MethodMetrics:
    """One method's histogram child and its per-code counters, looked up once."""

    __slots__ = ("_codes", "_method", "duration")

    def __init__(self, method: str) -> None:
        self._method = method
        self.duration = RPC_DURATION.labels(method)
        self._codes: dict[str, Any] = {}

    def observe(self, started: float, code: str) -> None:
        self.duration.observe(time.perf_counter() - started)
        counter = self._codes.get(code)
        if counter is None:
            counter = self._codes[code] = RPC_REQUESTS.labels(self._method, code)
        counter.inc()


def _timed(behaviour: _Behaviour, streaming: bool, metrics: _MethodMetrics) -> _Behaviour:
    # grpc.aio drives a response-streaming handler by the kind of function it
    # is (a coroutine function writes with context.write, anything else
    # yields): the wrapper is of the same kind as the handler it stands in for.
    if not streaming or inspect.iscoroutinefunction(behaviour):

        async def called(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                result = behaviour(request, context)
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as error:
                metrics.observe(started, _code_name(context, error))
                raise
            metrics.observe(started, _code_name(context, None))
            return result

        return called

    async def streamed(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            responses = behaviour(request, context)
            if isinstance(responses, AsyncIterable):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response
        except BaseException as error:
            metrics.observe(started, _code_name(context, error))
            raise
        metrics.observe(started, _code_name(context, None))

    return streamed


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """For ``grpc.aio.server``, first in the chain: counts and times every handled call.

    A method the server does not serve is not counted (its name is the
    caller's free text).
    """

    def __init__(self) -> None:
        self._methods: dict[str, _MethodMetrics] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler so that its end is counted and timed."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        found = self._methods.get(method)
        metrics = _MethodMetrics(method) if found is None else found
        self._methods[method] = metrics
        return rebuild_handler(
            handler, lambda behaviour, streaming: _timed(behaviour, streaming, metrics)
        )


class LatestServer(Collector):
    """Figures read when scraped, from the server started last in this process.

    A process runs one registry or one node; tests start several in one
    process, and the default registry holds one collector per name: each
    server attaches its collector here and detaches it when it stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: list[Collector] = []

    def attach(self, server: Collector) -> Callable[[], None]:
        """Collect from ``server`` until the returned function is called."""
        with self._lock:
            self._servers.append(server)

        def detach() -> None:
            with self._lock:
                if server in self._servers:
                    self._servers.remove(server)

        return detach

    def collect(self) -> Iterator[Metric]:
        """The latest attached server's figures (none without one)."""
        with self._lock:
            server = self._servers[-1] if self._servers else None
        if server is not None:
            yield from server.collect()


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port number.

    Raises:
        InvalidInput: the address has no port or the port is not a number 0-65535.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise InvalidInput(
            f"cannot listen on {address!r}: give host:port, e.g. 127.0.0.1:9464 or [::1]:9464"
        )
    return host.strip("[]"), int(port)


class MetricsListener:
    """``/metrics`` over plain HTTP on ``address`` (port 0: a free one), until :meth:`stop`.

    Raises:
        InvalidInput: ``address`` is not ``host:port``.
        OSError: the address cannot be listened on.
    """

    def __init__(self, address: str, registry: Collector = REGISTRY) -> None:
        host, port = parse_listen(address)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where Prometheus scrapes this listener."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and close the socket; returns when the serving thread has ended."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
