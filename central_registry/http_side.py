"""The registry's small HTTP side: the manifest and the JWKS, read-only.

``GET /manifest`` returns the current signed manifest as a DSSE JSON envelope;
``GET /.well-known/jwks.json`` the registry keys that sign verdicts, so any JOSE
library can check a verdict credential; ``GET /healthz`` says whether the
registry is serving; ``GET /status-list`` the signed revocation list of grants
(``application/statuslist+jwt``, draft-ietf-oauth-status-list: a bit per grant
index, which alone names no subject). Nothing here accepts input or reveals
anything about a subject.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from credence.envelope import Envelope
from credence.keys import KeySet

_log = logging.getLogger(__name__)


class HttpSide:
    """A threaded HTTP server over two providers of the current documents."""

    def __init__(
        self,
        listen: str,
        *,
        manifest: Callable[[], Envelope],
        jwks: Callable[[], KeySet],
        status_list: Callable[[], str] | None = None,
    ) -> None:
        host, _, port = listen.rpartition(":")
        side = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "credence-registry"

            def do_GET(self) -> None:
                side._get(self)

            def log_message(self, format: str, *args: object) -> None:
                _log.debug("http %s", format % args)

        self._manifest = manifest
        self._jwks = jwks
        self._status_list = status_list
        self._server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
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
        if path == "/manifest":
            body, kind = self._manifest().to_json().encode(), "application/json"
        elif path == "/.well-known/jwks.json":
            body, kind = json.dumps(self._jwks().to_jwks()).encode(), "application/jwk-set+json"
        elif path == "/status-list" and self._status_list is not None:
            body, kind = self._status_list().encode(), "application/statuslist+jwt"
        elif path == "/healthz":
            body, kind = b'{"status": "serving"}', "application/json"
        else:
            request.send_error(
                HTTPStatus.NOT_FOUND, "only /manifest, /status-list and /.well-known/jwks.json"
            )
            return
        request.send_response(HTTPStatus.OK)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Cache-Control", "no-cache")
        request.end_headers()
        request.wfile.write(body)
