"""How Credence serves its web pages (the operator's console, the subject's portal).

Both are Starlette apps under uvicorn, configured alike: HTTP/1.1 through
h11, no WebSockets, no lifespan events, no logging setup of uvicorn's own (the
process's stays), no access log (a request line could name a subject's page),
no ``Server`` header and no trust in proxy headers.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from credence.errors import (
    AlreadyExists,
    CredenceError,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

__all__ = ["http_status", "uvicorn_config"]

#: Domain errors to the HTTP status a page answers them with, first match wins.
_HTTP_STATUS: tuple[tuple[type[CredenceError], HTTPStatus], ...] = (
    (Unauthenticated, HTTPStatus.UNAUTHORIZED),
    (PermissionDenied, HTTPStatus.FORBIDDEN),
    (NotFound, HTTPStatus.NOT_FOUND),
    (AlreadyExists, HTTPStatus.CONFLICT),
    (FailedPrecondition, HTTPStatus.CONFLICT),
    (InvalidInput, HTTPStatus.BAD_REQUEST),
    (ResourceExhausted, HTTPStatus.TOO_MANY_REQUESTS),
)


def http_status(exc: CredenceError, *, otherwise: HTTPStatus) -> int:
    """The HTTP status for a refused request: the one place web pages map domain errors.

    ``otherwise`` is the page's answer to any other error: the console's own
    failure (500), or the portal's upstream, the registry (502).
    """
    for kind, status in _HTTP_STATUS:
        if isinstance(exc, kind):
            return int(status)
    return int(otherwise)


def uvicorn_config(app: ASGIApp, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` with our defaults; ``options`` add or override."""
    return uvicorn.Config(
        app,
        **{
            "http": "h11",
            "ws": "none",
            "lifespan": "off",
            "log_config": None,
            "access_log": False,
            "server_header": False,
            "proxy_headers": False,
            **options,
        },
    )
