"""Requests a server cannot decode are refused with INVALID_ARGUMENT, quietly.

gRPC decodes a request before the handler runs; when that fails, grpc.aio
answers UNKNOWN and the thread-pool server INTERNAL, each logging a traceback
(and, for a stream, an asyncio "Task was destroyed" warning). A malformed
message is the caller's mistake, not the server's. :class:`AsyncDecodingInterceptor`
(every Credence server runs on ``grpc.aio``) takes the decoding into the
handler: the handler is registered without a deserializer, and a wrapper
decodes each message (every message of a request stream, mid-stream too) with
the method's own deserializer. A message that does
not decode ends the call with INVALID_ARGUMENT and a one-line reason naming the
message type, and the server logs one line, never a traceback.

Put the interceptor last in ``interceptors=`` so that peer checks in front of
it still answer first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

__all__ = [
    "AsyncDecodingInterceptor",
    "UndecodableRequest",
    "decode_request",
]

_log = logging.getLogger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Behaviour = Callable[..., Any]
_Deserializer = Callable[[bytes], Any]

#: Longest reason sent back (the decoder's own message is short; this bounds it).
MAX_REASON_CHARS = 300


class UndecodableRequest(Exception):
    """A request's bytes are not a message of the method's request type."""


def _type_name(deserializer: _Deserializer) -> str:
    # Generated stubs register ``Message.FromString``, a bound classmethod.
    message_class = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the request type"))


def decode_request(deserializer: _Deserializer, data: bytes, method: str) -> Any:
    """Decode one request message, or say in one line why it cannot be.

    Raises:
        UndecodableRequest: ``data`` is not a valid message (truncated, a bad
            tag or wire type, invalid UTF-8 in a string, nested too deep...).
    """
    try:
        return deserializer(data)
    except Exception as exc:  # the decoder's own errors vary by backend
        detail = " ".join(str(exc).split()) or type(exc).__name__
        reason = (
            f"cannot decode the {len(data)}-byte request to {method} as "
            f"{_type_name(deserializer)} ({detail}); send a serialized message of that type"
        )
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        raise UndecodableRequest(reason) from None


def _refused(method: str, peer: str, reason: str) -> None:
    _log.warning("refused a call to %s from %s: %s", method, peer, reason)


def _raw_handler(
    handler: grpc.RpcMethodHandler[_Req, _Resp], behaviour: _Behaviour
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    """The same kind of handler with ``behaviour`` and no request deserializer."""
    factory: Callable[..., grpc.RpcMethodHandler[_Req, _Resp]]
    if handler.request_streaming and handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(behaviour, None, handler.response_serializer)


def _behaviour(handler: grpc.RpcMethodHandler[_Req, _Resp]) -> _Behaviour | None:
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream
    if handler.request_streaming:
        return handler.stream_unary
    if handler.response_streaming:
        return handler.unary_stream
    return handler.unary_unary


# --- grpc.aio.server ---------------------------------------------------------------


class AsyncDecodingInterceptor(grpc.aio.ServerInterceptor):
    """For ``grpc.aio.server``: undecodable requests get INVALID_ARGUMENT and one log line.

    Handlers may be coroutine functions (streaming ones writing with
    ``context.write``), async generator functions, or plain functions.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Register the method's handler without a deserializer and decode inside it."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        behaviour = _behaviour(handler)
        if behaviour is None:  # pragma: no cover - grpc always sets the matching one
            return handler
        method = handler_call_details.method
        deserializer: _Deserializer = handler.request_deserializer

        async def decode(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return decode_request(deserializer, data, method)
            except UndecodableRequest as exc:
                _refused(method, context.peer(), str(exc))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        if handler.request_streaming:

            async def requests(
                raw: AsyncIterable[bytes] | Iterable[bytes],
                context: grpc.aio.ServicerContext[Any, Any],
            ) -> AsyncIterator[Any]:
                if isinstance(raw, AsyncIterable):
                    async for data in raw:
                        yield await decode(data, context)
                else:
                    for data in raw:
                        yield await decode(data, context)

            def prepare_stream(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return requests(raw, context)

            return _raw_handler(handler, _wrap_async(behaviour, handler, prepare_stream))

        async def prepare_single(data: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await decode(data, context)

        return _raw_handler(handler, _wrap_async(behaviour, handler, prepare_single))


def _wrap_async(
    behaviour: _Behaviour,
    handler: grpc.RpcMethodHandler[Any, Any],
    prepare: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any],
) -> _Behaviour:
    # grpc.aio drives a response-streaming handler by the kind of function it
    # is: a coroutine function writes with context.write, anything else yields.
    # The wrapper must be of the same kind as the handler it stands in for.
    async def argument(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        prepared = prepare(raw, context)
        return await prepared if inspect.isawaitable(prepared) else prepared

    if not handler.response_streaming or inspect.iscoroutinefunction(behaviour):

        async def called(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            result = behaviour(await argument(raw, context), context)
            return await result if inspect.isawaitable(result) else result

        return called

    async def streamed(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        responses = behaviour(await argument(raw, context), context)
        if isinstance(responses, AsyncIterable):
            async for response in responses:
                yield response
        else:
            for response in responses:
                yield response

    return streamed
