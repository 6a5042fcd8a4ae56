"""A userspace TCP proxy that injects network faults between two loopback peers.

This kernel has no netem and no tc drop actions, so faults are injected one
level up: :class:`FaultProxy` listens on a loopback port, forwards every
accepted connection to an upstream ``host:port`` and, switched at run time
from the test's thread, can

- delay every chunk by a one-way latency, in both directions (a delay line:
  a chunk leaves ``latency`` seconds after it arrived, order kept);
- stall: accept connections and read their bytes, forward nothing (the held
  bytes flow again, in order, once healed; the peer's TCP sees a live but
  silent host, which is also what a blackhole partition looks like from a
  userspace proxy: it cannot drop SYNs);
- refuse: close its listening socket (connections are refused) and reset
  every open connection, as a host that is down or a partition that rejects;
- blackhole: reset every open connection, then hold every new one (a
  partition that answers nothing, not even a TLS handshake);
- drop: reset every open connection once, then go on forwarding (a flap).

The proxy runs its own asyncio loop in a daemon thread; every control method
returns once the fault is in effect. It is TLS-agnostic: bytes pass through
untouched, so mutual TLS stays end to end between the real peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

_T = TypeVar("_T")
_CHUNK = 64 * 1024
_CONTROL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy has seen since it started."""

    accepted: int
    forwarded_bytes: int
    open_connections: int


class _Connection:
    """One accepted connection and its upstream twin, pumped in both directions."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._proxy = proxy
        self._client = client
        self._writers: list[asyncio.StreamWriter] = [client[1]]
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        try:
            host, port = self._proxy.upstream
            upstream = await asyncio.open_connection(host, port)
        except OSError:
            self.abort()
            return
        self._writers.append(upstream[1])
        self._tasks = [
            asyncio.create_task(self._pump(self._client[0], upstream[1])),
            asyncio.create_task(self._pump(upstream[0], self._client[1])),
        ]
        # Either side closing ends the pair: half-open TCP is not a fault we model.
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        self.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(line, writer))
        try:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(_CHUNK):
                    line.put_nowait((loop.time(), chunk))
            # At the end of the stream the bytes read are still delivered, after
            # their delay; an abort (cancellation) skips this and drops them.
            await line.join()
        finally:
            sender.cancel()

    async def _send(
        self, line: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            arrived, chunk = await line.get()
            try:
                await self._proxy.flowing.wait()
                delay = arrived + self._proxy.latency - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._proxy.flowing.wait()
                writer.write(chunk)
                await writer.drain()
                self._proxy.forwarded_bytes += len(chunk)
            except OSError:
                pass
            finally:
                line.task_done()

    def abort(self) -> None:
        """Reset both sockets at once (RST, no orderly close) and stop pumping."""
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            with contextlib.suppress(OSError, RuntimeError):
                writer.transport.abort()


class FaultProxy:
    """A loopback TCP proxy in front of one upstream, with faults switched at run time.

    Use it as a context manager, or call :meth:`close` when done.

    Args:
        upstream: ``host:port`` to forward to; it may change later
            (:meth:`set_upstream`), e.g. to a restarted server on a new port.
        host: the loopback address to listen on.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        self.upstream = _split(upstream)
        self.latency = 0.0
        self.forwarded_bytes = 0
        self._host = host
        self._accepted = 0
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()
        self.flowing = self._call(self._make_event())
        try:
            self.port = self._call(self._listen(0))
        except BaseException:
            self._stop_loop()
            raise

    @property
    def address(self) -> str:
        """``host:port`` of the proxy, for peers to dial instead of the upstream."""
        return f"{self._host}:{self.port}"

    @property
    def stats(self) -> ProxyStats:
        """Connections accepted, bytes forwarded, connections open now."""
        return self._call(self._stats())

    def set_upstream(self, upstream: str) -> None:
        """Forward new connections to ``upstream`` from now on (open ones stay put)."""
        self.upstream = _split(upstream)

    def set_latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` each way, from now on.

        Raises:
            ValueError: a negative latency.
        """
        if seconds < 0:
            raise ValueError(f"latency must be zero or more seconds, got {seconds}")
        self.latency = float(seconds)

    def stall(self) -> None:
        """Accept and read, forward nothing, until :meth:`heal`."""
        self._call(self._set_flowing(False))

    def blackhole(self) -> None:
        """Reset open connections, then accept and hold every new one, until :meth:`heal`.

        A partition that answers nothing: peers must reconnect, and their
        handshakes go unanswered.
        """
        self._call(self._set_flowing(False))
        self._call(self._drop())

    def refuse(self) -> None:
        """Refuse new connections and reset open ones, until :meth:`heal`."""
        self._call(self._refuse())

    def drop(self) -> None:
        """Reset every open connection once; new connections are forwarded as usual."""
        self._call(self._drop())

    def heal(self) -> None:
        """End every fault: listen again, forward held bytes, no latency."""
        self.latency = 0.0
        self._call(self._heal())

    def close(self) -> None:
        """Stop listening, reset every connection and stop the proxy's thread."""
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- on the proxy's loop --------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=_CONTROL_TIMEOUT_S)

    async def _make_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _stats(self) -> ProxyStats:
        return ProxyStats(self._accepted, self.forwarded_bytes, len(self._connections))

    async def _listen(self, port: int) -> int:
        # reuse_address: after refuse(), heal() binds the same port again at once.
        self._server = await asyncio.start_server(
            self._accept, self._host, port, reuse_address=True, family=socket.AF_INET
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        connection = _Connection(self, (reader, writer))
        self._connections.add(connection)
        try:
            await connection.run()
        except asyncio.CancelledError:
            # Only close() cancels a connection's task: ending quietly is the point.
            connection.abort()
        finally:
            self._connections.discard(connection)

    async def _set_flowing(self, flowing: bool) -> None:
        if flowing:
            self.flowing.set()
        else:
            self.flowing.clear()

    async def _drop(self) -> None:
        for connection in list(self._connections):
            connection.abort()

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._drop()

    async def _heal(self) -> None:
        self.flowing.set()
        if self._server is None:
            await self._listen(self.port)

    async def _shutdown(self) -> None:
        await self._refuse()
        self.flowing.set()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CONTROL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()


def _split(address: str) -> tuple[str, int]:
    host, separator, port = address.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {address!r}")
    return host, int(port)
