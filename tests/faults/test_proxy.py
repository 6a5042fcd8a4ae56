"""The fault proxy itself, against a plain TCP echo server on loopback.

Each fault is shown from the client's side: what it sees while the fault is on
and that the path works again once healed.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from support.fault_proxy import FaultProxy

# Generous: the machine is shared and slow; no test asserts a tight timing.
_PATIENCE_S = 10.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=_PATIENCE_S)


@pytest.fixture
def proxy(echo: str) -> Iterator[FaultProxy]:
    with FaultProxy(echo) as running:
        yield running


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=_PATIENCE_S)


def _echo(connection: socket.socket, data: bytes, held: bytes = b"") -> bytes:
    """Send ``data``; return what comes back, up to ``held + data`` (bytes held before)."""
    connection.sendall(data)
    received = b""
    while len(received) < len(held) + len(data):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _assert_closed(connection: socket.socket) -> None:
    """The peer sees the connection end (reset or end of stream), never an answer."""
    try:
        data = connection.recv(16)
    except ConnectionResetError:
        return
    assert data == b""


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1024
    with _connect(proxy) as connection:
        assert _echo(connection, payload) == payload
    assert proxy.stats.accepted == 1
    assert proxy.stats.forwarded_bytes >= 2 * len(payload)


def test_latency_delays_each_way(proxy: FaultProxy) -> None:
    proxy.set_latency(0.3)
    with _connect(proxy) as connection:
        started = time.monotonic()
        assert _echo(connection, b"ping") == b"ping"
        # A lower bound only: the round trip crosses the delay line twice.
        assert time.monotonic() - started >= 0.6
        proxy.set_latency(0)
        assert _echo(connection, b"pong") == b"pong"
    with pytest.raises(ValueError, match="zero or more"):
        proxy.set_latency(-1)


def test_stall_accepts_and_holds_then_releases_in_order(proxy: FaultProxy) -> None:
    with _connect(proxy) as before:
        assert _echo(before, b"a") == b"a"
        proxy.stall()
        with _connect(proxy) as during:  # accepted: the stall is not a refusal
            during.settimeout(0.5)
            during.sendall(b"held")
            before.sendall(b"b")
            before.settimeout(0.5)
            with pytest.raises(TimeoutError):
                during.recv(16)
            with pytest.raises(TimeoutError):
                before.recv(16)
            proxy.heal()
            during.settimeout(_PATIENCE_S)
            before.settimeout(_PATIENCE_S)
            assert _echo(during, b"!", held=b"held") == b"held!"
            assert _echo(before, b"c", held=b"b") == b"bc"


def test_refuse_resets_open_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    with _connect(proxy) as connection:
        assert _echo(connection, b"x") == b"x"
        proxy.refuse()
        # The open connection is reset (or reads end of stream), never answered.
        _assert_closed(connection)
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy)
    proxy.heal()
    with _connect(proxy) as connection:
        assert _echo(connection, b"back") == b"back"


def test_blackhole_resets_open_connections_and_holds_new_ones(proxy: FaultProxy) -> None:
    with _connect(proxy) as connection:
        assert _echo(connection, b"x") == b"x"
        proxy.blackhole()
        _assert_closed(connection)
    with _connect(proxy) as connection:
        connection.settimeout(0.5)
        connection.sendall(b"hello?")
        with pytest.raises(TimeoutError):
            connection.recv(16)
        proxy.heal()
        connection.settimeout(_PATIENCE_S)
        assert _echo(connection, b"!", held=b"hello?") == b"hello?!"


def test_drop_resets_once_and_keeps_forwarding(proxy: FaultProxy) -> None:
    with _connect(proxy) as connection:
        assert _echo(connection, b"x") == b"x"
        proxy.drop()
        _assert_closed(connection)
    with _connect(proxy) as connection:
        assert _echo(connection, b"again") == b"again"
    assert proxy.stats.accepted == 2


def test_upstream_can_move_and_a_dead_upstream_closes_the_client(echo: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening: refuses
        with FaultProxy(dead) as proxy:
            with _connect(proxy) as connection:
                _assert_closed(connection)
            proxy.set_upstream(echo)
            with _connect(proxy) as connection:
                assert _echo(connection, b"moved") == b"moved"
    with pytest.raises(ValueError, match="host:port"):
        FaultProxy("no-port")


def test_close_ends_every_connection(echo: str) -> None:
    proxy = FaultProxy(echo)
    connection = _connect(proxy)
    try:
        assert _echo(connection, b"x") == b"x"
        proxy.close()
        _assert_closed(connection)
        with pytest.raises(ConnectionRefusedError):
            _connect(proxy)
        proxy.close()  # idempotent
    finally:
        connection.close()
