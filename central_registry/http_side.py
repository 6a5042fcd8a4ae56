"""The registry's small HTTP side over TLS: the manifest and the JWKS, read-only.

``GET /manifest`` returns the current signed manifest as a DSSE JSON envelope;
``GET /.well-known/jwks.json`` the registry keys that sign verdicts, so any JOSE
library can check a verdict credential; ``GET /healthz`` says whether the
registry is serving; ``GET /status-list`` the signed revocation list of grants
(``application/statuslist+jwt``, draft-ietf-oauth-status-list: a bit per grant
index, which alone names no subject). Nothing here accepts input or reveals
anything about a subject.

The transparency log is served as C2SP tiles (c2sp.org/tlog-tiles):
``GET /checkpoint`` the latest checkpoint (``text/plain; charset=utf-8``),
``GET /tile/<L>/<N>[.p/<W>]`` hash tiles and ``GET /tile/entries/<N>[.p/<W>]``
entry bundles (the leaves' commitments).

``GET /scorecard`` is the published scorecard as JSON (the proto3 JSON form of
the manifest's ``Scorecard``, ``.proto`` field names): where an explanation of
a credit verdict (``Explanation.scorecard_url``) sends a person to read the
characteristics, bins, reason texts and bands applied. Full tiles never change and are
served as immutable; partial tiles and the checkpoint must be revalidated. A
malformed tile path is 400, a tile beyond the tree 404.

It is served over TLS only: by default with the registry's own certificate from
the federation CA (``tls.crt`` / ``tls.key``, the gRPC ports' identity), or the
operator's (``http_tls_cert`` / ``http_tls_key`` in ``registry.toml``). TLS
keeps the network from swapping the documents in transit; clients still verify
the manifest under the pinned root keys and match the JWKS to it
(:mod:`credence.client.pinned`). The handshake runs in each connection's own
thread under a timeout, so a client that stalls it holds up nobody else.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf import json_format

from credence.envelope import Envelope
from credence.errors import InvalidInput, NotFound
from credence.keys import KeySet
from credence.transparency.tiles import TILE_WIDTH, TileRef, parse_tile_path
from credence.v1 import manifest_pb2

_log = logging.getLogger(__name__)

#: How long a connection may take to finish its TLS handshake and send a request.
HANDSHAKE_TIMEOUT_SECONDS = 10.0
#: A full tile never changes: any cache may keep it for a year.
IMMUTABLE = "public, max-age=31536000, immutable"


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the certificate chain in ``cert`` and its ``key``.

    Raises:
        InvalidInput: a file cannot be read, or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise InvalidInput(
            f"HTTP side TLS: {exc.filename} not found; check http_tls_cert/http_tls_key"
        ) from exc
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"HTTP side TLS: cannot load certificate {cert} with key {key}: {exc}; "
            "http_tls_cert must hold the PEM chain and http_tls_key its PEM key"
        ) from exc
    return context


def scorecard_json(scorecard: manifest_pb2.Scorecard) -> bytes:
    """The scorecard in its published JSON form (as ``credence/data/scorecard-v1.json``)."""
    return json_format.MessageToJson(scorecard, preserving_proto_field_name=True).encode()


class _TlsHttpServer(ThreadingHTTPServer):
    """Wraps each accepted connection in TLS inside its own handler thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 context: ssl.SSLContext) -> None:  # fmt: skip
        self.tls = context
        super().__init__(address, handler)

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket],
                       client_address: object) -> None:  # fmt: skip
        if not isinstance(request, socket.socket):  # a TCP server's requests are sockets
            return
        request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        # Headers and body go out as separate writes: without this, Nagle holds the
        # body until the client's delayed ACK (~40 ms a response on a kept-alive
        # connection, which made reading tiles 30x slower).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            _log.debug("http: TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            # wrap_socket detached the plain socket: the server's own shutdown
            # of it is a no-op, so the TLS socket is closed here.
            wrapped.close()

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        # A client that hangs up mid-request is routine, not a traceback on stderr.
        _log.debug("http: connection from %s failed", client_address, exc_info=True)


class HttpSide:
    """A threaded HTTPS server over providers of the current documents."""

    def __init__(
        self,
        listen: str,
        *,
        tls_cert: Path,
        tls_key: Path,
        manifest: Callable[[], Envelope],
        jwks: Callable[[], KeySet],
        status_list: Callable[[], str] | None = None,
        checkpoint: Callable[[], bytes] | None = None,
        tile: Callable[[TileRef], bytes] | None = None,
        scorecard: Callable[[], bytes] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        side = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "credence-registry"
            # Keep-alive, so a reader fetches many tiles over one TLS connection
            # (TCP_NODELAY is set in finish_request); every response carries its
            # length, and an idle connection still ends at HANDSHAKE_TIMEOUT_SECONDS.
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                side._get(self)

            def log_message(self, format: str, *args: object) -> None:
                _log.debug("http %s", format % args)

        self._manifest = manifest
        self._jwks = jwks
        self._status_list = status_list
        self._checkpoint = checkpoint
        self._tile = tile
        self._scorecard = scorecard
        context = server_tls_context(tls_cert, tls_key)
        self._server = _TlsHttpServer(
            (host.strip("[]") or "127.0.0.1", int(port)), Handler, context
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="registry-http")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _get(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        cache = "no-cache"
        if path.startswith("/tile/") and self._tile is not None:
            try:
                ref = parse_tile_path(path[1:])
                body = self._tile(ref)
            except InvalidInput as exc:
                request.send_error(HTTPStatus.BAD_REQUEST, str(exc)[:200])
                return
            except NotFound as exc:
                request.send_error(HTTPStatus.NOT_FOUND, str(exc)[:200])
                return
            kind = "application/octet-stream"
            if ref.width == TILE_WIDTH:
                cache = IMMUTABLE
        elif path == "/checkpoint" and self._checkpoint is not None:
            body, kind = self._checkpoint(), "text/plain; charset=utf-8"
        elif path == "/manifest":
            body, kind = self._manifest().to_json().encode(), "application/json"
        elif path == "/.well-known/jwks.json":
            body, kind = json.dumps(self._jwks().to_jwks()).encode(), "application/jwk-set+json"
        elif path == "/status-list" and self._status_list is not None:
            body, kind = self._status_list().encode(), "application/statuslist+jwt"
        elif path == "/scorecard" and self._scorecard is not None:
            body, kind = self._scorecard(), "application/json"
        elif path == "/healthz":
            body, kind = b'{"status": "serving"}', "application/json"
        else:
            request.send_error(
                HTTPStatus.NOT_FOUND,
                "only /manifest, /scorecard, /status-list, /.well-known/jwks.json, /checkpoint "
                "and /tile/...",
            )
            return
        request.send_response(HTTPStatus.OK)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", cache)
        request.end_headers()
        request.wfile.write(body)
