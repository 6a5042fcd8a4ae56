"""Decorators that turn servicer methods into grpc.aio handlers.

Every handler needs the same two things around its few lines of decode, call,
encode: domain errors mapped to gRPC statuses in one place
(:func:`credence.rpc.status.grpc_errors_async`), and blocking work (database,
signing) kept off the event loop. Pick the decorator by the method's shape:

- :func:`blocking` for a plain ``def`` handler: the whole call, admission checks
  included, runs in the servicer's :attr:`~BlockingServicer.executor`.
- :func:`unary` for an ``async def`` handler that awaits async work itself.
- :func:`stream` for an ``async def`` generator (a server-streaming reply).

A blocking handler may read its context in the worker thread: ``peer()`` and
``auth_context()`` read the call's state in gRPC core, which is thread-safe.
Aborting happens back on the event loop, in the error mapping.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

import grpc.aio

from credence.rpc.status import grpc_errors_async

Context = grpc.aio.ServicerContext[Any, Any]

_Request = TypeVar("_Request")
_Reply = TypeVar("_Reply")
_Servicer = TypeVar("_Servicer")


class BlockingServicer(Protocol):
    """A servicer with :func:`blocking` handlers: they run in its ``executor``."""

    @property
    def executor(self) -> Executor | None:
        """The pool blocking handlers run in; None is the event loop's default pool."""


_Pooled = TypeVar("_Pooled", bound=BlockingServicer)


def blocking(
    method: Callable[[_Pooled, _Request, Context], _Reply],
) -> Callable[[_Pooled, _Request, Context], Coroutine[Any, Any, _Reply]]:
    """A handler whose whole body is blocking work, run in the servicer's executor.

    Context variables travel with the call, as with :func:`asyncio.to_thread`.
    A caller that cancels stops waiting; the work in the thread runs to its end.
    """

    @functools.wraps(method)
    async def handler(servicer: _Pooled, request: _Request, context: Context) -> _Reply:
        async with grpc_errors_async(context):
            work = functools.partial(
                contextvars.copy_context().run, method, servicer, request, context
            )
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(servicer.executor, work)
        raise AssertionError("unreachable: grpc_errors_async aborts")  # pragma: no cover

    return handler


def unary(
    method: Callable[[_Servicer, _Request, Context], Awaitable[_Reply]],
) -> Callable[[_Servicer, _Request, Context], Coroutine[Any, Any, _Reply]]:
    """A handler that awaits its own async work; domain errors become statuses."""

    @functools.wraps(method)
    async def handler(servicer: _Servicer, request: _Request, context: Context) -> _Reply:
        async with grpc_errors_async(context):
            return await method(servicer, request, context)
        raise AssertionError("unreachable: grpc_errors_async aborts")  # pragma: no cover

    return handler


def stream(
    method: Callable[[_Servicer, _Request, Context], AsyncGenerator[_Reply, None]],
) -> Callable[[_Servicer, _Request, Context], AsyncIterator[_Reply]]:
    """A server-streaming handler; an error mid-stream ends it with its status.

    The wrapped generator is closed with the stream, so its ``finally`` blocks
    run when the caller goes away, not when the garbage collector gets to them.
    """

    @functools.wraps(method)
    async def handler(
        servicer: _Servicer, request: _Request, context: Context
    ) -> AsyncIterator[_Reply]:
        replies = method(servicer, request, context)
        async with grpc_errors_async(context), aclosing(replies):
            async for reply in replies:
                yield reply

    return handler
