"""The portal's web app: Starlette, Jinja2 templates, server-rendered, no script.

Pages: who looked me up, my permissions (withdraw one after a confirmation),
my records at each agency (sealed to this page, opened here), my disputes
(send one, see where each stands and by when the agency must answer), why
my credit scores are what they are (the registry's signed explanations), and
reviews by a person (ask for one, see its signed decision). Every page but the login link needs the
session (:mod:`.access`); every form carries its CSRF token; a request naming
another host is refused. Responses forbid framing, scripts, third-party
requests and caching. The subject's gRPC calls run in worker threads.

A page is a route, a template and catalogue keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from credence.errors import (
    CredenceError,
    InvalidInput,
)
from credence.portal import views
from credence.portal.access import COOKIE_NAME, PortalAccess
from credence.portal.desk import SubjectDesk
from credence.portal.strings import Catalogue
from credence.web import http_status

__all__ = ["MAX_FORM_BYTES", "MAX_STATEMENT_CHARS", "NAV", "Portal"]

_log = logging.getLogger(__name__)
_HERE = Path(__file__).parent
#: A portal form is a few short fields and a statement; a larger body is refused unread.
MAX_FORM_BYTES = 16_384
#: The longest statement a dispute may carry.
MAX_STATEMENT_CHARS = 2000
#: The sections, in order: (path, catalogue key).
NAV = (
    ("/lookups", "nav.lookups"),
    ("/grants", "nav.grants"),
    ("/records", "nav.records"),
    ("/contests", "nav.contests"),
    ("/explanations", "nav.explanations"),
    ("/reviews", "nav.reviews"),
)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}

Page = Callable[[Request, str], Awaitable[Response]]


def _status(exc: CredenceError) -> int:
    # Anything else went wrong at the registry, the portal's upstream.
    return http_status(exc, otherwise=HTTPStatus.BAD_GATEWAY)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form, one value per field.

    Raises:
        InvalidInput: not such a form, or larger than :data:`MAX_FORM_BYTES`.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("error.form")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidInput("error.form")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("error.form") from exc
    return {name: values[0] for name, values in fields.items()}


class Portal:
    """The portal's pages over a :class:`SubjectDesk`.

    Args:
        desk: the subject's calls.
        access: the login link, sessions and CSRF tokens.
        catalogue: the words shown.
    """

    def __init__(self, desk: SubjectDesk, access: PortalAccess, catalogue: Catalogue) -> None:
        self._desk = desk
        self._access = access
        self._t = catalogue
        self._templates = Jinja2Templates(directory=str(_HERE / "templates"))
        self._css = (_HERE / "static" / "portal.css").read_bytes()

    def app(self) -> ASGIApp:
        """The ASGI app."""
        routes: list[BaseRoute] = [
            Route("/", self._root),
            Route("/portal.css", self._stylesheet),
            Route("/login/{token}", self._login, methods=["GET"]),
            Route("/lookups", self._page(self._lookups), methods=["GET"]),
            Route("/grants", self._page(self._grants), methods=["GET"]),
            Route("/grants/revoke", self._page(self._confirm_revoke), methods=["GET"]),
            Route("/grants/revoke", self._page(self._revoke), methods=["POST"]),
            Route("/records", self._page(self._records), methods=["GET"]),
            Route("/contests", self._page(self._contests), methods=["GET"]),
            Route("/contests", self._page(self._contest), methods=["POST"]),
            Route("/explanations", self._page(self._explanations), methods=["GET"]),
            Route("/reviews", self._page(self._reviews), methods=["GET"]),
            Route("/reviews", self._page(self._review), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    # ------------------------------------------------------------------ frame

    def _render(
        self, request: Request, template: str, title_key: str, session: str = "", *,
        status: int = 200, **context: Any,
    ) -> Response:  # fmt: skip
        response = self._templates.TemplateResponse(
            request,
            template,
            {
                "t": self._t,
                "lang": self._t.language,
                "title": self._t(title_key),
                "nav": NAV if session else (),
                "here": request.url.path,
                "csrf": self._access.csrf_token(session) if session else "",
                **context,
            },
            status_code=status,
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    def _error(self, request: Request, exc: CredenceError, session: str = "") -> Response:
        key = str(exc)
        text = self._t(key) if self._t.has(key) else self._t("error.registry", reason=key)
        _log.debug("portal: refused %s %s (%s)", request.method, request.url.path, key)
        return self._render(
            request, "error.html", "error.title", session, status=_status(exc), error=text
        )

    def _page(self, build: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page for the logged-in subject; a form also needs its CSRF token."""

        async def page(request: Request) -> Response:
            try:
                self._access.check_host(request.headers.get("host"))
                session = self._access.check_session(request.cookies.get(COOKIE_NAME))
            except CredenceError as exc:
                return self._error(request, exc)
            try:
                return await build(request, session)
            except CredenceError as exc:
                return self._error(request, exc, session)

        return page

    async def _posted(self, request: Request, session: str) -> dict[str, str]:
        """The form of a POST, its CSRF token checked before anything else is read.

        Raises:
            InvalidInput: the form could not be read.
            PermissionDenied: its CSRF token is not this session's.
        """
        form = await _form(request)
        self._access.check_csrf(session, form.get("csrf"))
        return form

    async def _root(self, request: Request) -> Response:  # noqa: ARG002
        return RedirectResponse("/lookups", status_code=HTTPStatus.SEE_OTHER)

    async def _stylesheet(self, request: Request) -> Response:  # noqa: ARG002
        return Response(self._css, media_type="text/css", headers=SECURITY_HEADERS)

    async def _login(self, request: Request) -> Response:
        try:
            self._access.check_host(request.headers.get("host"))
            session = self._access.log_in(request.path_params["token"])
        except CredenceError as exc:
            return self._error(request, exc)
        response = RedirectResponse("/lookups", status_code=HTTPStatus.SEE_OTHER)
        response.headers.update(SECURITY_HEADERS)
        # No Secure flag: plain HTTP on loopback, which never leaves the machine.
        response.set_cookie(COOKIE_NAME, session, path="/", httponly=True, samesite="strict")
        return response

    # ------------------------------------------------------------------ pages

    async def _lookups(self, request: Request, session: str) -> Response:
        lookups = await run_in_threadpool(self._desk.lookups)
        rows = views.lookup_views(self._t, lookups)
        return self._render(request, "lookups.html", "lookups.title", session, lookups=rows)

    async def _grants_page(self, request: Request, session: str, message: str = "") -> Response:
        grants = await run_in_threadpool(self._desk.grants)
        rows = views.grant_views(self._t, grants)
        return self._render(
            request, "grants.html", "grants.title", session, grants=rows, message=message
        )

    async def _grants(self, request: Request, session: str) -> Response:
        return await self._grants_page(request, session)

    async def _grant(self, grant_id: str) -> views.GrantView | None:
        """The subject's grant ``grant_id``; None when no such grant names the subject."""
        for grant in await run_in_threadpool(self._desk.grants):
            if grant.grant_id == grant_id:
                return views.grant_view(self._t, grant)
        return None

    def _no_grant(self, request: Request, session: str, grant_id: str) -> Response:
        error = self._t("grants.unknown", grant_id=grant_id)
        return self._render(
            request, "error.html", "error.title", session, status=HTTPStatus.NOT_FOUND, error=error
        )

    async def _confirm_revoke(self, request: Request, session: str) -> Response:
        grant_id = request.query_params.get("grant", "")
        grant = await self._grant(grant_id)
        if grant is None:
            return self._no_grant(request, session, grant_id)
        return self._render(request, "revoke.html", "grants.confirm_title", session, grant=grant)

    async def _revoke(self, request: Request, session: str) -> Response:
        form = await self._posted(request, session)
        grant = await self._grant(form.get("grant_id", ""))
        if grant is None:
            return self._no_grant(request, session, form.get("grant_id", ""))
        if grant.revoked:
            # The registry keeps the first time; say so rather than report it as news.
            message = self._t("grants.already", grant_id=grant.grant_id, when=grant.revoked)
        else:
            at = await run_in_threadpool(self._desk.revoke, grant.grant_id)
            message = self._t(
                "grants.done", grant_id=grant.grant_id,
                when=self._t("time.at", day=f"{at:%Y-%m-%d}", time=f"{at:%H:%M}"),
            )  # fmt: skip
        return await self._grants_page(request, session, message)

    async def _records(self, request: Request, session: str) -> Response:
        answers = await run_in_threadpool(self._desk.records)
        rows = views.records_views(self._t, answers)
        return self._render(request, "records.html", "records.title", session, agencies=rows)

    async def _contests_page(
        self, request: Request, session: str, *, message: str = "", problem: str = "",
        form: dict[str, str] | None = None, status: int = 200,
    ) -> Response:  # fmt: skip
        contests = await run_in_threadpool(self._desk.contests)
        agencies = await run_in_threadpool(self._desk.agencies)
        chosen = dict(form or {})
        chosen.setdefault("agency", request.query_params.get("agency", ""))
        chosen.setdefault("kind", request.query_params.get("kind", ""))
        return self._render(
            request, "contests.html", "contests.title", session, status=status,
            contests=views.contest_views(self._t, contests), agencies=agencies,
            form=chosen, message=message, problem=problem, limit=MAX_STATEMENT_CHARS,
        )  # fmt: skip

    async def _contests(self, request: Request, session: str) -> Response:
        return await self._contests_page(request, session)

    async def _contest(self, request: Request, session: str) -> Response:
        form = await self._posted(request, session)
        agency, kind = form.get("agency", ""), form.get("kind", "")
        statement = form.get("statement", "").strip()
        problem = ""
        if not agency:
            problem = self._t("contests.agency_missing")
        elif not statement:
            problem = self._t("contests.statement_missing")
        elif len(statement) > MAX_STATEMENT_CHARS:
            problem = self._t("contests.statement_long", limit=MAX_STATEMENT_CHARS)
        if problem:
            return await self._contests_page(
                request, session, problem=problem, form=form, status=HTTPStatus.BAD_REQUEST
            )
        try:
            contest_id, flagged = await run_in_threadpool(
                self._desk.contest, agency, statement, kind
            )
        except CredenceError as exc:
            # The refusal says what to change (no record there, an unknown kind, try again):
            # shown beside the form, which keeps what the subject wrote.
            return await self._contests_page(
                request, session, problem=str(exc), form=form, status=_status(exc)
            )
        message = self._t("contests.filed", contest_id=contest_id, agency=agency, flagged=flagged)
        return await self._contests_page(request, session, message=message)

    async def _explanations(self, request: Request, session: str) -> Response:
        explanations = await run_in_threadpool(self._desk.explanations)
        rows = views.explanation_views(self._t, explanations)
        return self._render(
            request, "explanations.html", "explanations.title", session,
            explanations=rows, limit=MAX_STATEMENT_CHARS,
        )  # fmt: skip

    async def _reviews_page(
        self, request: Request, session: str, *, problem: str = "",
        form: dict[str, str] | None = None, status: int = 200,
    ) -> Response:  # fmt: skip
        reviews = await run_in_threadpool(self._desk.reviews)
        chosen = dict(form or {})
        chosen.setdefault("verdict_id", request.query_params.get("verdict", ""))
        # After a review was asked for (?sent=ID), say so in the words of the stored review.
        sent = request.query_params.get("sent")
        message = ""
        for record in (review.record for review in reviews if review.record.review_id == sent):
            told = ", ".join(record.agencies) or self._t("reviews.told_none")
            message = self._t("reviews.sent", review_id=record.review_id, agencies=told)
        return self._render(
            request, "reviews.html", "reviews.title", session, status=status,
            reviews=views.review_views(self._t, reviews), form=chosen, message=message,
            problem=problem, limit=MAX_STATEMENT_CHARS,
        )  # fmt: skip

    async def _reviews(self, request: Request, session: str) -> Response:
        return await self._reviews_page(request, session)

    async def _review(self, request: Request, session: str) -> Response:
        form = await self._posted(request, session)
        verdict_id = form.get("verdict_id", "").strip()
        statement = form.get("statement", "").strip()
        problem = ""
        if not verdict_id:
            problem = self._t("reviews.verdict_missing")
        elif not statement:
            problem = self._t("reviews.statement_missing")
        elif len(statement) > MAX_STATEMENT_CHARS:
            problem = self._t("reviews.statement_long", limit=MAX_STATEMENT_CHARS)
        if problem:
            return await self._reviews_page(
                request, session, problem=problem, form=form, status=HTTPStatus.BAD_REQUEST
            )
        try:
            review = await run_in_threadpool(self._desk.request_review, verdict_id, statement)
        except CredenceError as exc:
            # An unknown verdict, one not about this subject, a review already asked for:
            # the registry's words, beside the form, which keeps what the subject wrote.
            return await self._reviews_page(
                request, session, problem=str(exc), form=form, status=_status(exc)
            )
        # Post/redirect/get: reloading the page the subject lands on does not ask again.
        response = RedirectResponse(
            f"/reviews?sent={quote(review.review_id, safe='')}#review-{quote(review.review_id)}",
            status_code=HTTPStatus.SEE_OTHER,
        )
        response.headers.update(SECURITY_HEADERS)
        return response
