"""How Credence serves its web pages (the operator's console, the subject's portal).

Both are Starlette apps under uvicorn, configured alike: HTTP/1.1 through
h11, no WebSockets, no lifespan events, no logging setup of uvicorn's own (the
process's stays), no access log (a request line could name a subject's page),
no ``Server`` header and no trust in proxy headers.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp

__all__ = ["uvicorn_config"]


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
