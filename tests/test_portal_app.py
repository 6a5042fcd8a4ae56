"""The subject's portal over real HTTP on loopback, with an in-memory desk.

From the attacker's side: another local user or a web page without the login
link, a second use of the link, a request naming another host (DNS
rebinding) and a form without its CSRF token are refused, and the desk saw no
call that changes anything. Then each page in words, the withdraw-with-
confirmation flow, a dispute, markup in a requester's name shown as text,
and every string a page uses coming from the one catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from credence.client.subject_records import AgencyAnswer
from credence.errors import InvalidInput, NotFound
from credence.portal import app as portal_app
from credence.portal import views
from credence.portal.access import COOKIE_NAME
from credence.portal.serving import PortalServer, bind_loopback, serve_portal
from credence.portal.strings import CATALOGUES, ENGLISH, Catalogue
from credence.v1 import common_pb2, registry_pb2, subject_records_pb2

NOW = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
PORTAL = Path(portal_app.__file__).parent


def _at(message: object, name: str, when: datetime) -> None:
    getattr(message, name).FromDatetime(when)


@dataclass
class MemoryDesk:
    """A subject's data in memory; records each call that changes something."""

    requester: str = "demo-company"
    changes: list[tuple[str, ...]] = field(default_factory=list)
    revoked: dict[str, datetime] = field(default_factory=dict)
    filed: list[registry_pb2.ContestRecord] = field(default_factory=list)
    refuse_contest: str = ""

    def lookups(self) -> list[registry_pb2.LookupRecord]:
        served = registry_pb2.LookupRecord(
            query_id="q1", requester=self.requester, outcome="served", basis="consent g1",
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT,
            kinds=[common_pb2.VERDICT_KIND_BLACKLIST, common_pb2.VERDICT_KIND_CREDIT],
        )  # fmt: skip
        _at(served, "at", NOW - timedelta(minutes=5))
        refused = registry_pb2.LookupRecord(
            query_id="q2", requester="shop-9",
            outcome="refused: PERMISSION_DENIED: no consent covers this lookup",
            purpose=common_pb2.PURPOSE_TENANCY_SCREENING, kinds=[common_pb2.VERDICT_KIND_CREDIT],
        )  # fmt: skip
        _at(refused, "at", NOW - timedelta(minutes=1))
        return [served, refused]

    def grants(self) -> list[registry_pb2.GrantRecord]:
        grant = registry_pb2.GrantRecord(
            grant_id="g1", kind="consent", requester=self.requester, max_uses=3, uses=1,
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT, kinds=[common_pb2.VERDICT_KIND_CREDIT],
        )  # fmt: skip
        _at(grant, "expires_at", NOW + timedelta(days=10))
        if "g1" in self.revoked:
            _at(grant, "revoked_at", self.revoked["g1"])
        return [grant]

    def revoke(self, grant_id: str) -> datetime:
        self.changes.append(("revoke", grant_id))
        self.revoked.setdefault(grant_id, NOW)
        return self.revoked[grant_id]

    def contest(self, agency: str, statement: str, record_kind: str) -> tuple[str, int]:
        if self.refuse_contest:
            raise NotFound(self.refuse_contest)
        self.changes.append(("contest", agency, statement, record_kind))
        contest = registry_pb2.ContestRecord(
            contest_id=f"c{len(self.filed) + 1}", agency=agency, record_kind=record_kind,
            state="open",
        )  # fmt: skip
        _at(contest, "filed_at", NOW)
        self.filed.append(contest)
        return contest.contest_id, 2

    def contests(self) -> list[registry_pb2.ContestRecord]:
        return list(self.filed)

    def records(self) -> list[AgencyAnswer]:
        held = subject_records_pb2.HeldRecord(
            kind="court_judgment", category="dishonest_debtor", status="open",
            amount_band="1,000-9,999 EUR", disputed=bool(self.filed),
        )  # fmt: skip
        _at(held, "occurred_at", NOW - timedelta(days=300))
        _at(held, "expires_at", NOW + timedelta(days=700))
        court = subject_records_pb2.SubjectRecordList(
            agency="court-1", records=[held], total=1, how_to_contest="Write to the court."
        )
        return [AgencyAnswer("court-1", court), AgencyAnswer("bank-1", None, "no answer")]

    def agencies(self) -> dict[str, tuple[str, ...]]:
        return {"bank-1": ("loan_default", "late_payment"), "court-1": ("court_judgment",)}


@dataclass
class Running:
    desk: MemoryDesk
    server: PortalServer
    link: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30)

    @contextmanager
    def logged_in(self) -> Iterator[httpx.Client]:
        with self.client() as client:
            response = client.get(self.link.removeprefix(self.server.url))
            assert response.status_code == 303
            assert response.headers["location"] == "/lookups"
            yield client


@pytest.fixture
def portal() -> Iterator[Running]:
    desk = MemoryDesk()
    server, link = serve_portal(desk)
    server.start()
    try:
        yield Running(desk, server, link)
    finally:
        server.stop()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


PAGES = ["/lookups", "/grants", "/records", "/contests", "/grants/revoke?grant=g1"]


def test_without_the_login_link_every_page_is_refused(portal: Running) -> None:
    with portal.client() as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 401, path
            assert ENGLISH["error.login"] in response.text
        client.cookies.set(COOKIE_NAME, "made-up-session")
        assert client.get("/lookups").status_code == 401
        bad = client.post("/grants/revoke", data={"grant_id": "g1", "csrf": "0" * 64})
        assert bad.status_code == 401
        assert client.get("/login/not-the-token").status_code == 401
    assert portal.desk.changes == []


def test_the_login_link_works_once(portal: Running) -> None:
    with portal.logged_in() as first:
        assert first.get("/lookups").status_code == 200
        with portal.client() as second:
            again = second.get(portal.link.removeprefix(portal.server.url))
            assert again.status_code == 401
            assert ENGLISH["error.login_used"] in again.text
            assert COOKIE_NAME not in second.cookies
            assert second.get("/lookups").status_code == 401
        cookie = first.get(portal.link.removeprefix(portal.server.url)).headers.get("set-cookie")
        assert cookie is None


def test_the_session_cookie_is_httponly_and_same_site_strict(portal: Running) -> None:
    with portal.client() as client:
        response = client.get(portal.link.removeprefix(portal.server.url))
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


def test_a_request_for_another_host_is_refused_and_spends_nothing(portal: Running) -> None:
    path = portal.link.removeprefix(portal.server.url)
    with portal.client() as client:
        rebound = client.get(path, headers={"host": f"evil.example:{portal.server.port}"})
        assert rebound.status_code == 403
        assert ENGLISH["error.host"] in rebound.text
        assert COOKIE_NAME not in client.cookies
    # The link was not spent by the refused request.
    with portal.logged_in() as client:
        page = client.get("/grants", headers={"host": f"attacker.test:{portal.server.port}"})
        assert page.status_code == 403
        assert "g1" not in page.text


def test_a_form_without_its_csrf_token_changes_nothing(portal: Running) -> None:
    with portal.logged_in() as client:
        for data in ({"grant_id": "g1"}, {"grant_id": "g1", "csrf": "0" * 64}):
            response = client.post("/grants/revoke", data=data)
            assert response.status_code == 403
            assert ENGLISH["error.csrf"] in response.text
        contest = {"agency": "court-1", "statement": "paid", "csrf": "f" * 64}
        assert client.post("/contests", data=contest).status_code == 403
        not_a_form = client.post(
            "/grants/revoke", content=b'{"grant_id": "g1"}', headers={"content-type": "text/json"}
        )
        assert not_a_form.status_code == 400
        too_big = client.post("/contests", data={"statement": "x" * 20_000})
        assert too_big.status_code == 400
    assert portal.desk.changes == []
    assert portal.desk.revoked == {}


def test_pages_speak_in_words_and_forbid_scripts_and_framing(portal: Running) -> None:
    with portal.logged_in() as client:
        lookups = client.get("/lookups")
        assert "deciding on a loan or credit" in lookups.text
        assert "whether you are on a blacklist and your credit score" in lookups.text
        assert "Refused: no consent covers this lookup" in lookups.text
        assert "your permission g1" in lookups.text
        assert lookups.text.index("shop-9") < lookups.text.index("demo-company")  # newest first
        records = client.get("/records")
        assert "court judgment" in records.text
        assert "1,000-9,999 EUR" in records.text
        assert "The answer of bank-1 could not be read: no answer" in records.text
        for path in PAGES:
            page = client.get(path)
            assert page.status_code == 200, path
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "frame-ancestors 'none'" in csp
            assert page.headers["x-frame-options"] == "DENY"
            for machine in ("PURPOSE_", "VERDICT_KIND_", "<script"):
                assert machine not in page.text, (path, machine)
            # Nothing is fetched from elsewhere: every link and stylesheet is local.
            assert not re.search(r'(?:src|href|action)="(?!/|#)', page.text), path
            assert '<meta name="viewport"' in page.text
        assert client.get("/portal.css").headers["content-type"].startswith("text/css")


def test_withdrawing_a_permission_asks_first_then_says_when(portal: Running) -> None:
    with portal.logged_in() as client:
        grants = client.get("/grants")
        assert 'href="/grants/revoke?grant=g1"' in grants.text
        assert portal.desk.changes == []  # the first click only asks
        confirm = client.get("/grants/revoke?grant=g1")
        assert "Withdraw your permission g1 for demo-company?" in confirm.text
        done = client.post("/grants/revoke", data={"grant_id": "g1", "csrf": _csrf(confirm.text)})
        assert done.status_code == 200
        assert "Your permission g1 was withdrawn on 2026-12-02 at 01:30 UTC." in done.text
        assert 'href="/grants/revoke?grant=g1"' not in done.text
        again = client.post("/grants/revoke", data={"grant_id": "g1", "csrf": _csrf(confirm.text)})
        assert "was already withdrawn" in again.text
        unknown = client.get("/grants/revoke?grant=nope")
        assert unknown.status_code == 404
        assert "No permission nope names you" in unknown.text
    assert portal.desk.changes == [("revoke", "g1")]


def test_a_dispute_is_sent_and_its_state_shown(portal: Running) -> None:
    with portal.logged_in() as client:
        form = client.get("/contests?agency=court-1")
        assert '<option value="court-1" selected>' in form.text
        assert '<option value="loan_default">loan default</option>' in form.text
        csrf = _csrf(form.text)
        empty = client.post("/contests", data={"agency": "court-1", "statement": " ", "csrf": csrf})
        assert empty.status_code == 400
        assert ENGLISH["contests.statement_missing"] in empty.text
        sent = client.post(
            "/contests",
            data={"agency": "court-1", "kind": "court_judgment", "statement": "Paid in March.",
                  "csrf": csrf},
        )  # fmt: skip
        assert "Your dispute c1 was sent to court-1: 2 record(s)" in sent.text
        assert "Open: the agency is looking at it" in sent.text
        assert "Yes, you disputed it" in client.get("/records").text
        portal.desk.refuse_contest = "bank-1 holds no record of this subject"
        refused = client.post(
            "/contests", data={"agency": "bank-1", "statement": "Not mine.", "csrf": csrf}
        )
        assert refused.status_code == 404
        assert "bank-1 holds no record of this subject" in refused.text
        assert "Not mine." in refused.text  # what the subject wrote is kept
    assert portal.desk.changes == [("contest", "court-1", "Paid in March.", "court_judgment")]


def test_markup_in_a_name_is_shown_as_text() -> None:
    desk = MemoryDesk(requester='<img src=x onerror="alert(1)">')
    server, link = serve_portal(desk)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.get(link.removeprefix(server.url))
            for path in ("/lookups", "/grants"):
                page = client.get(path).text
                assert "<img" not in page
                assert "&lt;img src=x" in page
    finally:
        server.stop()


def test_every_string_shown_comes_from_the_catalogue() -> None:
    used: set[str] = set()
    for template in (PORTAL / "templates").glob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([\w.]+)["']""", template.read_text()))
    for module in PORTAL.glob("*.py"):
        used |= set(re.findall(r"""(?:\bt|\._t)\(\s*["']([\w.]+)["']""", module.read_text()))
    used |= {key for _, key in portal_app.NAV}
    assert used, "no catalogue keys found"
    assert sorted(used - set(ENGLISH)) == []
    for language, words in CATALOGUES.items():
        assert set(words) == set(ENGLISH), language


def test_unknown_enum_values_are_named_not_crashed() -> None:
    t = Catalogue()
    assert views.purpose_words(t, 99) == "a purpose not known to this page (99)"
    assert views.kinds_words(t, []) == "nothing"


def test_a_taken_port_is_refused_saying_what_to_do() -> None:
    taken = bind_loopback(0)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=rf"cannot listen on 127\.0\.0\.1:{port} .*--port"):
            bind_loopback(port)
    finally:
        taken.close()
    with pytest.raises(InvalidInput, match=r"--port must be 0\.\.65535, got 70000"):
        bind_loopback(70000)
