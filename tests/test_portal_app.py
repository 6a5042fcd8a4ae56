"""The subject's portal over real HTTP on loopback, with an in-memory desk.

From the attacker's side: another local user or a web page without the login
link, a second use of the link, a request naming another host (DNS
rebinding) and a form without its CSRF token are refused, and the desk saw no
call that changes anything. Then each page in words, the withdraw-with-
confirmation flow, a dispute and its clock, an explanation of a score, a
review asked for and its signed decision, markup in a requester's name shown
as text, and every string a page uses coming from the one catalogue.
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

from credence.client.subject import ReviewView
from credence.client.subject_records import AgencyAnswer
from credence.errors import AlreadyExists, CredenceError, InvalidInput, NotFound
from credence.portal import app as portal_app
from credence.portal import views
from credence.portal.access import COOKIE_NAME
from credence.portal.serving import PortalServer, bind_loopback, serve_portal
from credence.portal.strings import CATALOGUES, ENGLISH, Catalogue
from credence.v1 import common_pb2, manifest_pb2, registry_pb2, subject_records_pb2

NOW = datetime(2026, 12, 2, 1, 30, tzinfo=UTC)
PORTAL = Path(portal_app.__file__).parent
SCORECARD = "https://registry.example:8443/scorecard"


def _at(message: object, name: str, when: datetime) -> None:
    getattr(message, name).FromDatetime(when)


def _explanation(verdict_id: str, requester: str, scorecard_url: str) -> registry_pb2.Explanation:
    """A credit verdict: 600 base, -180 in all, 420 in band C; two reasons cost, one gave."""
    explanation = registry_pb2.Explanation(
        verdict_id=verdict_id, query_id="q1", requester=requester,
        purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT, scorecard_version="sc-2026.1",
        manifest_version=7, scorecard_url=scorecard_url, base_points=600, points_total=-180,
        min_score=300, max_score=850, score=420, band="C",
        bands=[manifest_pb2.ScoreBand(lower=600, upper=850, name="A"),
               manifest_pb2.ScoreBand(lower=300, upper=449, name="C"),
               manifest_pb2.ScoreBand(lower=450, upper=599, name="B")],
        reasons=[
            registry_pb2.ExplainedReason(
                reason_code="D01", text="Court judgment on record", characteristic="judgments",
                points=-120, score_without=540, band_without="B",
            ),
            registry_pb2.ExplainedReason(
                reason_code="L02", text="", characteristic="late_payments", points=-60,
                score_without=480, band_without="B",
            ),
            registry_pb2.ExplainedReason(
                reason_code="H01", text="Years of paying on time.", points=15, score_without=405,
                band_without="C",
            ),
        ],
        provisional=True, disputed=True, credit_answering=1, credit_expected=2,
    )  # fmt: skip
    _at(explanation, "issued_at", NOW - timedelta(minutes=5))
    return explanation


@dataclass
class MemoryDesk:
    """A subject's data in memory; records each call that changes something."""

    requester: str = "demo-company"
    changes: list[tuple[str, ...]] = field(default_factory=list)
    revoked: dict[str, datetime] = field(default_factory=dict)
    filed: list[registry_pb2.ContestRecord] = field(default_factory=list)
    refuse_contest: str = ""
    asked: list[ReviewView] = field(default_factory=list)
    refuse_review: CredenceError | None = None
    scorecard_url: str = SCORECARD

    def lookups(self) -> list[registry_pb2.LookupRecord]:
        served = registry_pb2.LookupRecord(
            query_id="q1", requester=self.requester, outcome="served", basis="consent g1",
            purpose=common_pb2.PURPOSE_CREDIT_ASSESSMENT, verdict_id="v1",
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

    def explanations(self) -> list[registry_pb2.Explanation]:
        return [_explanation("v1", self.requester, self.scorecard_url)]

    def request_review(self, verdict_id: str, statement: str) -> registry_pb2.ReviewRecord:
        if verdict_id != "v1":
            raise NotFound(f"no verdict {verdict_id} about you: name one from your lookups")
        if self.refuse_review is not None:
            raise self.refuse_review
        self.changes.append(("review", verdict_id, statement))
        record = registry_pb2.ReviewRecord(
            review_id=f"r{len(self.asked) + 1}", verdict_id=verdict_id, query_id="q1",
            statement=statement, state="open", agencies=["bank-1", "court-1"],
        )  # fmt: skip
        _at(record, "requested_at", NOW)
        self.asked.append(ReviewView(record, None))
        return record

    def reviews(self) -> list[ReviewView]:
        return list(self.asked)

    def decide(self, outcome: str, statement: str) -> None:
        """The operator's decision on the first review, signed (here: only built)."""
        record = registry_pb2.ReviewRecord()
        record.CopyFrom(self.asked[0].record)
        record.state = outcome
        decided = registry_pb2.ReviewOutcome(
            review_id=record.review_id, verdict_id=record.verdict_id, outcome=outcome,
            statement=statement, reviewer="ops-anna",
        )  # fmt: skip
        _at(decided, "decided_at", NOW + timedelta(days=2))
        self.asked[0] = ReviewView(record, decided)


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


@contextmanager
def serving(desk: MemoryDesk) -> Iterator[Running]:
    """The portal over ``desk`` on loopback, stopped on leaving."""
    server, link = serve_portal(desk)
    server.start()
    try:
        yield Running(desk, server, link)
    finally:
        server.stop()


@pytest.fixture
def portal() -> Iterator[Running]:
    with serving(MemoryDesk()) as running:
        yield running


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)


PAGES = [
    "/lookups", "/grants", "/records", "/contests", "/grants/revoke?grant=g1", "/explanations",
    "/reviews", "/reviews?verdict=v1",
]  # fmt: skip


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
        review = {"verdict_id": "v1", "statement": "look again"}
        assert client.post("/reviews", data=review).status_code == 403
        assert client.post("/reviews", data={**review, "csrf": "f" * 64}).status_code == 403
        not_a_form = client.post(
            "/grants/revoke", content=b'{"grant_id": "g1"}', headers={"content-type": "text/json"}
        )
        assert not_a_form.status_code == 400
        too_big = client.post("/contests", data={"statement": "x" * 20_000})
        assert too_big.status_code == 400
    assert portal.desk.changes == []
    assert portal.desk.revoked == {}
    assert portal.desk.asked == []


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
            # Nothing is fetched from elsewhere: every stylesheet, image and form is local;
            # the one link away is the registry's published scorecard, for the person to open.
            local = page.text.replace(f'<a href="{SCORECARD}" rel="noreferrer">', "<a>")
            assert not re.search(r'(?:src|href|action)="(?!/|#)', local), path
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
    with serving(desk) as running, running.logged_in() as client:
        for path in ("/lookups", "/grants", "/explanations"):
            page = client.get(path).text
            assert "<img" not in page
            assert "&lt;img src=x" in page
        # A link's verdict reference cannot break out of the form field it fills.
        form = client.get("/reviews", params={"verdict": '"><img src=x>'}).text
        assert "<img" not in form
        assert 'value="&#34;&gt;&lt;img src=x&gt;"' in form


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


def test_an_explanation_shows_the_sums_the_bands_and_what_each_reason_cost(
    portal: Running,
) -> None:
    with portal.logged_in() as client:
        page = client.get("/explanations")
    assert page.status_code == 200
    text = page.text
    assert "Score for demo-company, 2026-12-02 at 01:25 UTC" in text
    assert "deciding on a loan or credit" in text
    assert "420, in the band “C”" in text
    assert '<meter min="300" max="850" value="420"' in text
    assert "Score 420 on a scale from 300 to 850" in text
    # The band edges, lowest first, the subject's own marked.
    bands = re.findall(
        r'<tr( class="yours")?><th scope="row">(\w)</th><td>(\d+)</td><td>(\d+)</td>', text
    )
    assert bands == [(' class="yours"', "C", "300", "449"), ("", "B", "450", "599"),
                     ("", "A", "600", "850")]  # fmt: skip
    assert "600 points" in text  # where every score starts
    assert "-180 points" in text  # what the records changed, in total
    # Each reason in words (the characteristic when the scorecard gives no text), what it
    # cost and the what-if.
    first = text.index("Court judgment on record (code D01)")
    assert text.index("late payments (code L02)") > first
    assert "It took 120 points off your score." in text
    assert "Without this, your score would be 540, in the band “B”." in text
    assert "Without this, your score would be 480, in the band “B”." in text
    # A reason that gave points says so; the scorecard's full stop is not doubled.
    assert "Years of paying on time (code H01)" in text
    assert "It added 15 points to your score." in text
    assert "provisional: 1 of the 2 credit agencies answered" in text
    assert ENGLISH["explanations.disputed"] in text
    assert "version sc-2026.1 (published in federation manifest 7)" in text
    assert f'<a href="{SCORECARD}" rel="noreferrer">Read the scorecard</a>' in text
    # Its own review form: the verdict named, the statement labelled.
    assert '<input type="hidden" name="verdict_id" value="v1">' in text
    assert '<label for="statement-v1">Ask a person to review this score</label>' in text


def test_a_scorecard_address_that_is_not_a_web_page_is_not_a_link() -> None:
    desk = MemoryDesk(scorecard_url="javascript:alert(1)")
    [view] = views.explanation_views(Catalogue(), desk.explanations())
    assert view.scorecard_url == ""
    with serving(desk) as running, running.logged_in() as client:
        page = client.get("/explanations").text
    assert "javascript:" not in page
    assert "Read the scorecard" not in page
    assert "version sc-2026.1" in page


def test_without_credit_scores_the_explanations_page_says_so() -> None:
    assert views.explanation_views(Catalogue(), []) == []
    empty = registry_pb2.Explanation(verdict_id="v9", score=700, band="A")
    [view] = views.explanation_views(Catalogue(), [empty])
    assert view.reasons == []
    assert view.notes == []


def test_a_review_is_asked_for_from_a_lookup_and_its_signed_decision_shown(
    portal: Running,
) -> None:
    with portal.logged_in() as client:
        lookups = client.get("/lookups").text
        # The served lookup links to the review form with its verdict; the refused one does not.
        assert lookups.count('href="/reviews?verdict=') == 1
        assert 'href="/reviews?verdict=v1#new"' in lookups
        form = client.get("/reviews?verdict=v1")
        assert 'name="verdict_id" value="v1"' in form.text
        assert ENGLISH["reviews.next"] in form.text
        assert ENGLISH["reviews.none"] in form.text
        csrf = _csrf(form.text)
        for data, problem in (
            ({"verdict_id": " ", "statement": "Look again."}, ENGLISH["reviews.verdict_missing"]),
            ({"verdict_id": "v1", "statement": " "}, ENGLISH["reviews.statement_missing"]),
            ({"verdict_id": "v1", "statement": "x" * 2001}, "under 2000 characters"),
        ):
            refused = client.post("/reviews", data={**data, "csrf": csrf})
            assert refused.status_code == 400, data
            assert problem in refused.text
        unknown = client.post(
            "/reviews", data={"verdict_id": "v-nope", "statement": "Not mine.", "csrf": csrf}
        )
        assert unknown.status_code == 404
        assert "no verdict v-nope about you: name one from your lookups" in unknown.text
        assert "Not mine." in unknown.text  # what the subject wrote is kept
        assert "Traceback" not in unknown.text
        assert portal.desk.changes == []
        asked = client.post(
            "/reviews",
            data={"verdict_id": "v1", "statement": "The late payment was the bank's error.",
                  "csrf": csrf},
        )  # fmt: skip
        # Sent, then shown by a GET: reloading that page does not ask again.
        assert asked.status_code == 303
        assert asked.headers["location"] == "/reviews?sent=r1#review-r1"
        sent = client.get("/reviews?sent=r1")
        assert "Your review r1 was asked for. Agencies told: bank-1, court-1." in sent.text
        assert "was asked for" not in client.get("/reviews?sent=r9").text
        assert ENGLISH["review.open"] in sent.text
        assert "The late payment was the bank&#39;s error." in sent.text
        assert ENGLISH["reviews.signed"] not in sent.text
        portal.desk.decide("corrected", "The bank confirmed the error; the score was redone.")
        decided = client.get("/reviews").text
    assert ENGLISH["review.corrected"] in decided
    assert ENGLISH["review.open"] not in decided
    assert "The bank confirmed the error; the score was redone." in decided
    assert "ops-anna" in decided
    assert "2026-12-04 at 01:30 UTC" in decided
    assert ENGLISH["reviews.signed"] in decided
    assert portal.desk.changes == [("review", "v1", "The late payment was the bank's error.")]


def test_a_second_review_of_the_same_verdict_is_refused_beside_the_form(portal: Running) -> None:
    portal.desk.refuse_review = AlreadyExists("a review of verdict v1 is already open (r1)")
    with portal.logged_in() as client:
        page = client.get("/reviews?verdict=v1").text
        again = client.post(
            "/reviews", data={"verdict_id": "v1", "statement": "Again.", "csrf": _csrf(page)}
        )
    assert again.status_code == 409
    assert "a review of verdict v1 is already open (r1)" in again.text
    assert 'id="problem"' in again.text
    assert "Again." in again.text
    assert portal.desk.changes == []


def test_the_review_form_of_an_explanation_asks_for_that_verdict(portal: Running) -> None:
    with portal.logged_in() as client:
        page = client.get("/explanations").text
        asked = client.post(
            "/reviews", data={"verdict_id": "v1", "statement": "Why band C?", "csrf": _csrf(page)}
        )
        sent = client.get(asked.headers["location"])
    assert "Your review r1 was asked for" in sent.text
    assert portal.desk.changes == [("review", "v1", "Why band C?")]


def test_a_dispute_past_its_due_date_says_the_record_no_longer_counts() -> None:
    t = Catalogue()
    due = registry_pb2.ContestRecord(contest_id="c1", agency="court-1", state="open")
    _at(due, "filed_at", NOW - timedelta(days=31))
    _at(due, "due_at", NOW - timedelta(days=1))
    due.overdue = True
    waiting = registry_pb2.ContestRecord(contest_id="c2", agency="bank-1", state="open")
    _at(waiting, "filed_at", NOW)
    _at(waiting, "due_at", NOW + timedelta(days=30))
    older = registry_pb2.ContestRecord(contest_id="c0", agency="bank-1", state="upheld")
    rows = {row.contest_id: row for row in views.contest_views(t, [due, waiting, older])}
    assert rows["c1"].due == "2026-12-01"
    assert rows["c1"].overdue == (
        "The agency did not answer by 2026-12-01. Until it does, this record does not count "
        "in any verdict."
    )
    assert rows["c2"].due == "2027-01-01"
    assert rows["c2"].overdue == ""
    assert rows["c0"].due == "no date"
    with serving(MemoryDesk(filed=[due, waiting])) as running, running.logged_in() as client:
        page = client.get("/contests").text
    assert page.count("The agency did not answer by 2026-12-01.") == 1
    assert "2027-01-01" in page
