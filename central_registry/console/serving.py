"""Serving the console: uvicorn over TLS as a task on the registry's own event loop.

The registry runs on grpc.aio; the console runs beside it on the same loop
(``uvicorn.Server.serve``), so it starts and stops with the registry and needs
no thread of its own. uvicorn's signal handling is turned off (the registry
owns SIGTERM) and so is its logging setup (the registry's stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from credence.errors import FailedPrecondition
from credence.web import uvicorn_config

_log = logging.getLogger(__name__)

#: How long the console may take to bind its port.
START_TIMEOUT_SECONDS = 30.0


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone and sleeps when idle.

    uvicorn's own main loop wakes ten times a second to look for a shutdown
    (about 2 ms of the registry's CPU per second, measured); this one waits for
    :meth:`ConsoleServer.stop`.
    """

    stopping: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        if self.stopping is not None:
            await self.stopping.wait()


class ConsoleServer:
    """The console's HTTPS listener."""

    def __init__(
        self, app: ASGIApp, listen: str, *, tls_cert: Path, tls_key: Path, grace_seconds: float
    ) -> None:
        host, _, port = listen.rpartition(":")
        config = uvicorn_config(
            app,
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            ssl_certfile=str(tls_cert),
            ssl_keyfile=str(tls_key),
            # Nothing refreshes a Date header between requests (see _EmbeddedServer).
            date_header=False,
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.listen = listen

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._socket is None:
            raise FailedPrecondition("the console is not started")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in a task on the running loop.

        The socket is bound here, not by uvicorn, which would exit the process
        on a port that is taken.

        Raises:
            FailedPrecondition: the port cannot be bound, or the TLS files not read.
        """
        config = self._server.config
        try:
            config.load()
        except (OSError, ssl.SSLError) as exc:
            raise FailedPrecondition(
                f"the console cannot load its TLS certificate and key: {exc}"
            ) from exc
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        try:
            self._socket = socket.create_server((config.host, config.port), family=family)
        except OSError as exc:
            raise FailedPrecondition(
                f"the console cannot listen on {self.listen} ({exc.strerror}): choose another "
                "console_listen in registry.toml, or leave it empty to turn the console off"
            ) from exc
        self._server.stopping = asyncio.Event()
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise FailedPrecondition(f"the console on {self.listen} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish within the grace period, end the task."""
        if self._task is None:
            return
        self._server.should_exit = True
        if self._server.stopping is not None:
            self._server.stopping.set()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task
        self._task = None
        if self._socket is not None:
            self._socket.close()
