"""The console's web app (Starlette, Jinja2 templates, server-rendered, no script).

Every page but the login form needs a session cookie from an admin token
(:mod:`.sessions`, :mod:`.admin_tokens`), re-checked on each request; every
form carries the session's CSRF token and a POST without it changes nothing.
Responses forbid framing, scripts and caching (a strict Content-Security-Policy).
Database work runs in worker threads, off the registry's event loop.
"""

from __future__ import annotations

import importlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central_registry.agency_stats import AgencyStats
from central_registry.console import admin_tokens, sessions, views
from central_registry.console.actions import ConsoleActions
from central_registry.console.admin_tokens import Admin
from central_registry.console.chart import latency_chart
from central_registry.console.sessions import COOKIE_NAME, ConsoleSession
from central_registry.reviews import OUTCOMES
from credence.clock import Clock
from credence.errors import (
    CredenceError,
    InvalidInput,
    Unauthenticated,
)
from credence.manifest import TrustedManifest
from credence.statements import MAX_STATEMENT
from credence.storage import session_factory
from credence.web import http_status as web_status

_log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
#: A console form is a few short fields and at most one statement; a larger body
#: is refused unread. A decision's statement of MAX_STATEMENT characters in any
#: script, UTF-8 and percent-encoded, takes up to 9 bytes a character.
MAX_FORM_BYTES = 40_000
NAV = (
    ("/members", "Members"),
    ("/agencies", "Agencies"),
    ("/log", "Log"),
    ("/alarms", "Alarms"),
    ("/contests", "Contests"),
    ("/reviews", "Reviews"),
)
#: What the members page says after each action.
DONE = {
    "approve": "Approved",
    "refuse": "Refused the enrolment of",
    "suspend": "Suspended",
    "reinstate": "Reinstated",
}
SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
)  # fmt: skip


def http_status(exc: CredenceError) -> int:
    """The HTTP status the console answers a refused request with."""
    return web_status(exc, otherwise=HTTPStatus.INTERNAL_SERVER_ERROR)


def metrics_app() -> ASGIApp | None:
    """Prometheus's ``/metrics`` app when prometheus-client is installed, else None.

    The console's listener is the registry's operations listener (loopback by
    default): Prometheus scrapes it without a login, and no metric names a subject.
    """
    try:
        prometheus = importlib.import_module("prometheus_client")
    except ImportError:
        return None
    return cast("ASGIApp", prometheus.make_asgi_app())


class _RawApp:
    """An ASGI app as an object: Starlette routes an object's calls as raw ASGI, not requests."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, with_headers)


@dataclass(frozen=True)
class ConsoleSources:
    """What the console reads and changes, handed in by the registry."""

    engine: Engine
    federation_id: str
    manifest: Callable[[], TrustedManifest]
    #: The latest quorum-cosigned checkpoint (empty before the first).
    cosigned: Callable[[], bytes]
    stats: AgencyStats
    actions: ConsoleActions
    clock: Clock


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form, one value per field.

    Raises:
        InvalidInput: not a form, or larger than :data:`MAX_FORM_BYTES`.
    """
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        raise InvalidInput("send the console's forms as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidInput(f"a console form is at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("this form could not be read: reload the page and try again") from exc
    return {name: values[0] for name, values in fields.items()}


class Console:
    """The console's pages and actions over :class:`ConsoleSources`."""

    def __init__(self, sources: ConsoleSources) -> None:
        self._sources = sources
        self._sessions = session_factory(sources.engine)
        # Sessions end with the process: nothing to rotate, nothing on disk.
        self._key = secrets.token_bytes(32)
        self._templates = Jinja2Templates(directory=str(_HERE / "templates"))
        self._css = (_HERE / "static" / "console.css").read_bytes()

    def app(self) -> ASGIApp:
        """The ASGI app."""
        routes: list[BaseRoute] = [
            Route("/", self._root),
            Route("/console.css", self._stylesheet),
            Route("/login", self._login_form, methods=["GET"]),
            Route("/login", self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
            Route("/members", self._page(self._members), methods=["GET"]),
            Route("/members/action", self._member_action, methods=["POST"]),
            Route("/agencies", self._page(self._agencies), methods=["GET"]),
            Route("/log", self._page(self._log), methods=["GET"]),
            Route("/alarms", self._page(self._alarms), methods=["GET"]),
            Route("/contests", self._page(self._contests), methods=["GET"]),
            Route("/reviews", self._page(self._reviews), methods=["GET"]),
            Route("/reviews/decide", self._decide_review, methods=["POST"]),
        ]
        if (metrics := metrics_app()) is not None:
            routes.append(Route("/metrics", _RawApp(metrics)))
        return _SecurityHeaders(Starlette(routes=routes))

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        return self._sources.clock()

    def _ago(self, when: datetime | None) -> str:
        if when is None:
            return "—"
        seconds = int((self._now() - when).total_seconds())
        if seconds < 0:
            return "just now"
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"{seconds // size} {unit} ago"
        return f"{seconds} s ago"

    @staticmethod
    def _day(when: datetime | None) -> str:
        return "—" if when is None else when.strftime("%Y-%m-%d")

    @staticmethod
    def _ms(seconds: float | None) -> str:
        return "—" if seconds is None else f"{seconds * 1000:.0f} ms"

    def _render(self, request: Request, template: str, title: str, *, status: int = 200,
                admin: Admin | None = None, session: ConsoleSession | None = None,
                **context: Any) -> Response:  # fmt: skip
        return self._templates.TemplateResponse(
            request,
            template,
            {
                "title": title,
                "federation": self._sources.federation_id,
                "nav": NAV,
                "here": request.url.path,
                "admin": admin,
                "now": self._now(),
                "csrf": "" if session is None else sessions.csrf_token(self._key, session),
                "ago": self._ago,
                "day": self._day,
                "ms": self._ms,
                **context,
            },
            status_code=status,
        )

    def _admin(self, request: Request) -> tuple[Admin, ConsoleSession]:
        """The admin behind this request's session (blocking: run in a worker thread).

        Raises:
            Unauthenticated: no valid session, or its token expired or was revoked.
        """
        now = self._now()
        session = sessions.open_session(self._key, request.cookies.get(COOKIE_NAME), now)
        if not session.logged_in:
            raise Unauthenticated("not logged in: paste your admin token on the login page")
        with self._sessions() as db:
            return admin_tokens.admin_for_hash(db, session.token_hash, now), session

    def _set_cookie(self, response: Response, session: ConsoleSession) -> None:
        response.set_cookie(
            COOKIE_NAME, sessions.seal(self._key, session),
            max_age=max(1, int((session.expires_at - self._now()).total_seconds())),
            path="/", secure=True, httponly=True, samesite="strict",
        )  # fmt: skip

    def _to_login(self, exc: CredenceError) -> Response:
        _log.debug("console: sent to the login page (%s)", exc)
        return RedirectResponse("/login", status_code=HTTPStatus.SEE_OTHER)

    def _page(
        self, build: Callable[[Request, Admin, ConsoleSession], Response]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A GET page for a logged-in admin; anyone else goes to the login page."""

        async def page(request: Request) -> Response:
            try:
                admin, session = await run_in_threadpool(self._admin, request)
            except Unauthenticated as exc:
                return self._to_login(exc)
            return await run_in_threadpool(build, request, admin, session)

        return page

    # -------------------------------------------------------------------- login

    async def _root(self, request: Request) -> Response:  # noqa: ARG002
        return RedirectResponse("/members", status_code=HTTPStatus.SEE_OTHER)

    async def _stylesheet(self, request: Request) -> Response:  # noqa: ARG002
        return Response(self._css, media_type="text/css")

    def _login_page(self, request: Request, *, error: str = "", status: int = 200) -> Response:
        # A fresh pre-login session carries the login form's CSRF token.
        session = sessions.new_session("", self._now(), sessions.LOGIN_LIFETIME)
        response = self._render(
            request, "login.html", "Log in", session=session, error=error, status=status
        )
        self._set_cookie(response, session)
        return response

    async def _login_form(self, request: Request) -> Response:
        return self._login_page(request)

    async def _login(self, request: Request) -> Response:
        try:
            form = await _form(request)
            pre = sessions.open_session(self._key, request.cookies.get(COOKIE_NAME), self._now())
            sessions.check_csrf(self._key, pre, form.get("csrf"))
            admin = await run_in_threadpool(self._check_token, form.get("token", ""))
        except CredenceError as exc:
            _log.warning("console: login refused: %s", exc)
            return self._login_page(request, error=str(exc), status=http_status(exc))
        await run_in_threadpool(self._sources.actions.login, admin.name)
        lifetime = min(sessions.LIFETIME, admin.expires_at - self._now())
        response = RedirectResponse("/members", status_code=HTTPStatus.SEE_OTHER)
        self._set_cookie(response, sessions.new_session(admin.token_hash, self._now(), lifetime))
        return response

    def _check_token(self, token: str) -> Admin:
        with self._sessions() as db:
            return admin_tokens.admin_for_token(db, token, self._now())

    async def _logout(self, request: Request) -> Response:
        try:
            form = await _form(request)
            _, session = await run_in_threadpool(self._admin, request)
            sessions.check_csrf(self._key, session, form.get("csrf"))
        except CredenceError as exc:
            return Response(str(exc), status_code=http_status(exc), media_type="text/plain")
        response = RedirectResponse("/login", status_code=HTTPStatus.SEE_OTHER)
        response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True,
                               samesite="strict")  # fmt: skip
        return response

    # -------------------------------------------------------------------- pages

    def _members(self, request: Request, admin: Admin, session: ConsoleSession,
                 *, error: str = "", status: int = 200) -> Response:  # fmt: skip
        now = self._now()
        with self._sessions() as db:
            rows = views.members(db)
            actions = views.admin_actions(db)
        done, member = request.query_params.get("done", ""), request.query_params.get("member", "")
        message = f"{DONE[done]} {member}" if done in DONE and member else ""
        return self._render(
            request, "members.html", "Members", admin=admin, session=session, status=status,
            message=message, error=error,
            pending=[row for row in rows if row.state == "pending"],
            current=[row for row in rows if row.state != "pending"],
            expiring=[row for row in rows if row.state != "pending" and row.expires_within(now)],
            warning_days=views.EXPIRY_WARNING.days, actions=actions,
        )  # fmt: skip

    async def _member_action(self, request: Request) -> Response:
        try:
            form = await _form(request)
            admin, session = await run_in_threadpool(self._admin, request)
        except CredenceError as exc:
            _log.warning("console: member action refused: %s", exc)
            return Response(str(exc), status_code=http_status(exc), media_type="text/plain")
        try:
            sessions.check_csrf(self._key, session, form.get("csrf"))
        except CredenceError as exc:
            _log.warning("console: admin %s: member action refused: %s", admin.name, exc)
            return Response(str(exc), status_code=http_status(exc), media_type="text/plain")
        action, member_id = form.get("action", ""), form.get("member_id", "")
        try:
            await run_in_threadpool(
                self._sources.actions.member_action, admin.name, action, member_id
            )
        except CredenceError as exc:
            return await run_in_threadpool(
                self._members, request, admin, session, error=str(exc), status=http_status(exc)
            )
        query = urlencode({"done": action, "member": member_id})
        return RedirectResponse(f"/members?{query}", status_code=HTTPStatus.SEE_OTHER)

    def _agencies(self, request: Request, admin: Admin, session: ConsoleSession) -> Response:
        now = self._now()
        rows = views.agencies(self._sources.manifest(), self._sources.stats, now)
        chart = latency_chart(
            {row.agency_id: self._sources.stats.latency_series(row.agency_id, now) for row in rows}
        )
        return self._render(request, "agencies.html", "Agencies", admin=admin, session=session,
                            rows=rows, chart=chart)  # fmt: skip

    def _log(self, request: Request, admin: Admin, session: ConsoleSession) -> Response:
        with self._sessions() as db:
            view = views.log_view(db, self._sources.manifest(), self._sources.cosigned())
        return self._render(request, "log.html", "Transparency log", admin=admin,
                            session=session, view=view)  # fmt: skip

    def _alarms(self, request: Request, admin: Admin, session: ConsoleSession) -> Response:
        with self._sessions() as db:
            alarms = list(views.alarms(db))
        return self._render(request, "alarms.html", "Alarms", admin=admin, session=session,
                            alarms=alarms)  # fmt: skip

    def _contests(self, request: Request, admin: Admin, session: ConsoleSession) -> Response:
        now = self._now()
        with self._sessions() as db:
            contests, ages = views.open_contests(db, now), views.contests_by_age(db, now)
        return self._render(request, "contests.html", "Open contests", admin=admin,
                            session=session, contests=contests, ages=ages)  # fmt: skip

    def _reviews(self, request: Request, admin: Admin, session: ConsoleSession,
                 *, error: str = "", status: int = 200) -> Response:  # fmt: skip
        with self._sessions() as db:
            queue = views.open_reviews(db)
        done, review = request.query_params.get("done", ""), request.query_params.get("review", "")
        message = f"Review {review} {done}: the subject sees the signed outcome" if (
            done in OUTCOMES and review.isalnum()
        ) else ""  # fmt: skip
        return self._render(request, "reviews.html", "Reviews", admin=admin, session=session,
                            status=status, reviews=queue, message=message, error=error,
                            max_statement=MAX_STATEMENT)  # fmt: skip

    async def _decide_review(self, request: Request) -> Response:
        try:
            form = await _form(request)
            admin, session = await run_in_threadpool(self._admin, request)
            sessions.check_csrf(self._key, session, form.get("csrf"))
        except CredenceError as exc:
            _log.warning("console: review decision refused: %s", exc)
            return Response(str(exc), status_code=http_status(exc), media_type="text/plain")
        review_id, outcome = form.get("review_id", ""), form.get("outcome", "")
        try:
            await run_in_threadpool(
                self._sources.actions.decide_review, admin.name, review_id, outcome,
                form.get("statement", ""),
            )  # fmt: skip
        except CredenceError as exc:
            return await run_in_threadpool(
                self._reviews, request, admin, session, error=str(exc), status=http_status(exc)
            )
        query = urlencode({"done": outcome, "review": review_id})
        return RedirectResponse(f"/reviews?{query}", status_code=HTTPStatus.SEE_OTHER)
