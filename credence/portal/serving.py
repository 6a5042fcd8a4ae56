"""Serving the portal: uvicorn on a loopback socket this module binds.

The socket is bound before the app is built, so the app knows the one
address it answers at (:class:`credence.portal.access.PortalAccess` refuses any
other ``Host``). Plain HTTP: the connection never leaves the machine, and a
certificate of our own making would only teach the subject to click through
a browser warning.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from credence.errors import FailedPrecondition, InvalidInput
from credence.portal.access import PortalAccess
from credence.portal.app import Portal
from credence.portal.desk import SubjectDesk
from credence.portal.strings import Catalogue
from credence.web import uvicorn_config

__all__ = ["PortalServer", "bind_loopback", "host_names", "serve_portal"]

LOOPBACK = "127.0.0.1"
#: How long a test may wait for the server to accept connections.
START_TIMEOUT_SECONDS = 30.0


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one).

    Raises:
        InvalidInput: the port is out of range or already taken.
    """
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--port must be 0..65535, got {port}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(
            f"cannot listen on {LOOPBACK}:{port} ({exc.strerror}): "
            "pick another --port, or leave it out for a free one"
        ) from exc
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def host_names(port: int) -> frozenset[str]:
    """The ``Host`` values a browser sends for the portal's address."""
    return frozenset({f"{LOOPBACK}:{port}", f"localhost:{port}"})


class PortalServer:
    """uvicorn serving ``app`` on ``sock``; :meth:`run` blocks, :meth:`start` uses a thread."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        self._server = uvicorn.Server(uvicorn_config(app))
        self._socket = sock
        self._thread: threading.Thread | None = None
        self.port: int = sock.getsockname()[1]

    @property
    def url(self) -> str:
        """The portal's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C or SIGTERM)."""
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        """Serve on a thread; return once connections are accepted.

        Raises:
            FailedPrecondition: the server did not start in time.
        """
        self._thread = threading.Thread(target=self.run, name="portal", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise FailedPrecondition("the portal did not start: see the log above")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=START_TIMEOUT_SECONDS)
        self._socket.close()


def serve_portal(
    desk: SubjectDesk, *, port: int = 0, catalogue: Catalogue | None = None
) -> tuple[PortalServer, str]:
    """The portal over ``desk``, bound to loopback, and its one-time login link.

    Raises:
        InvalidInput: the port is out of range or already taken.
    """
    sock = bind_loopback(port)
    bound = int(sock.getsockname()[1])
    access = PortalAccess(host_names(bound))
    server = PortalServer(Portal(desk, access, catalogue or Catalogue()).app(), sock)
    return server, f"{server.url}/login/{access.login_token}"
