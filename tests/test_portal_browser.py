"""A subject's portal in a real browser: Debian's Chromium driven by Playwright.

A registry, a court and a bank run in this process over mutual TLS; a lender
looks a person up with their consent. The person starts ``credence me
portal`` (the real command, its own process, their own key and binding
files), opens the link it prints, sees the lookup made moments before,
disputes the court's record and the lender's next verdict is marked disputed,
withdraws the consent and the lender's next lookup is refused, which the
lookups page then shows. Another person, whose bank history cost points, reads
the explanation of a credit score given moments before, asks for a person to
review it in the browser and sees the review open; the operator decides it
with ``credence registry reviews decide`` and the person sees the decision
signed by the registry. The pages' accessibility tree names every control,
keeps headings in order and has its landmarks; a phone-sized window shows
every page without sideways scrolling. Screenshots go under the test's
temporary directory. Chromium is Debian's (/usr/bin/chromium); without it the
test skips saying so, under CI (CI=true) it fails instead.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.browser import TIMEOUT_MS, chromium_page, require_browser
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation
from support.portal import running_portal
from support.registry import run

from credence.dev import synthetic
from credence.errors import PermissionDenied
from credence.keys import save_signing_key
from credence.v1 import registry_pb2

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]
LENDER = "lender"
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser_ready() -> None:
    require_browser("the portal")


@pytest.fixture(scope="module")
def fed(browser_ready: None, start_federation: StartFederation) -> InProcessFederation:
    federation = start_federation("portal-browser")
    federation.enrol_member("idp", "company", "--identity-verifier")
    federation.enrol_member(LENDER, "company")
    federation.add_agency(COURT)
    federation.add_agency(BANK)
    return federation


@dataclass
class Person:
    identifier: str
    consent: str
    grant_id: str
    key_file: Path
    binding_file: Path


def _listed_person(fed: InProcessFederation) -> str:
    """A person the court lists today, with no dispute yet."""
    today = datetime.now(UTC).date().isoformat()
    with (fed.node_dir(COURT.name) / "records.csv").open(newline="") as rows:
        for row in csv.DictReader(rows):
            if (
                not row["identifier"].startswith("reg:")
                and row["status"] == "active"
                and row["disputed"] == "false"
                and (not row["expires_at"] or row["expires_at"] > today)
            ):
                return row["identifier"]
    raise AssertionError("the synthetic court lists no person")


def _person(
    fed: InProcessFederation, identifier: str, tmp_path_factory: pytest.TempPathFactory
) -> Person:
    """``identifier`` with a consent for the lender and their own key and binding files."""
    consent, grant_id, key, binding = fed.consent(identifier, requester=LENDER, idp="idp")
    directory = tmp_path_factory.mktemp("person")
    key_file, binding_file = directory / "me.key", directory / "me.binding.jwt"
    save_signing_key(key_file, key)
    binding_file.write_text(binding)
    return Person(identifier, consent, grant_id, key_file, binding_file)


@pytest.fixture(scope="module")
def person(fed: InProcessFederation, tmp_path_factory: pytest.TempPathFactory) -> Person:
    return _person(fed, _listed_person(fed), tmp_path_factory)


@pytest.fixture(scope="module")
def scored(
    fed: InProcessFederation, person: Person, tmp_path_factory: pytest.TempPathFactory
) -> Person:
    """A person with a bank history (not the court's person): their score has reasons."""
    history = synthetic.expected([BANK], 60).persons_with_history
    return _person(fed, next(p for p in history if p != person.identifier), tmp_path_factory)


@contextmanager
def _portal(fed: InProcessFederation, person: Person) -> Iterator[str]:
    """``credence me portal`` as the person runs it; its printed login link."""
    with running_portal(
        ["me", "portal", "--key", person.key_file, "--binding", person.binding_file,
         "--federation", fed.federation_file(LENDER)],
        start_seconds=TIMEOUT_MS / 1000,
    ) as link:  # fmt: skip
        yield link


@pytest.fixture
def portal_link(fed: InProcessFederation, person: Person) -> Iterator[str]:
    with _portal(fed, person) as link:
        yield link


@pytest.fixture
def scored_link(fed: InProcessFederation, scored: Person) -> Iterator[str]:
    with _portal(fed, scored) as link:
        yield link


@pytest.fixture
def page(browser_ready: None, tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "chromium-profile") as page:
        yield page


def _verdict(fed: InProcessFederation, person: Person) -> registry_pb2.Verdict:
    return fed.credit_verdict(person.identifier, requester=LENDER, consent=person.consent).verdict


_CONTROL = re.compile(r"^\s*- (textbox|combobox|button|link|checkbox|radio|img)\b(.*)$")
_HEADING = re.compile(r'^\s*- heading "[^"]+" \[level=(\d)\]', re.MULTILINE)


def _accessible(page: Page, name: str) -> None:
    """Every control and image has a name, headings go in order, landmarks exist."""
    tree = page.locator("body").aria_snapshot()
    for line in tree.splitlines():
        if control := _CONTROL.match(line):
            assert control.group(2).lstrip().startswith('"'), f"{name}: unnamed {line.strip()}"
    levels = [int(level) for level in _HEADING.findall(tree)]
    assert levels, f"{name}: no headings"
    assert levels[0] == 1, f"{name}: the first heading is level {levels[0]}"
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels)), (name, levels)
    for landmark in ("banner", "navigation", "main", "contentinfo"):
        assert re.search(rf"^\s*- {landmark}\b", tree, re.MULTILINE), f"{name}: no {landmark}"


def _fits_a_phone(page: Page, base: str, names: tuple[str, ...], shots: Path) -> None:
    """Each page ``names`` fits a phone-sized window's width; a screenshot of each."""
    page.set_viewport_size(PHONE)
    for name in names:
        page.goto(f"{base}/{name}")
        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert fits, f"{name} scrolls sideways on a phone"
        page.screenshot(path=shots / f"phone-{name}.png", full_page=True)


def test_a_person_sees_revokes_and_disputes_in_the_browser(
    fed: InProcessFederation, person: Person, portal_link: str, page: Page, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    base = portal_link.split("/login/", maxsplit=1)[0]
    before = _verdict(fed, person)
    assert not before.blacklist.disputed

    # The lookup made moments before, in words.
    page.goto(portal_link)
    page.wait_for_url(f"{base}/lookups")
    row = page.locator("tbody tr").first
    assert LENDER in row.inner_text()
    assert "deciding on a loan or credit" in row.inner_text()
    assert "Answered" in row.inner_text()
    assert f"your permission {person.grant_id}" in row.inner_text()
    _accessible(page, "lookups")
    page.screenshot(path=shots / "lookups.png", full_page=True)

    # The court's records, sealed to this page and opened here; dispute them.
    page.click("nav a[href='/records']")
    page.wait_for_url(f"{base}/records")
    court = page.locator(f"#agency-{COURT.name}")
    assert "court judgment" in court.inner_text()
    _accessible(page, "records")
    page.screenshot(path=shots / "records.png", full_page=True)
    court.locator(f"a[data-agency='{COURT.name}']").click()
    page.wait_for_url(re.compile(r"/contests\?agency="))
    _accessible(page, "contests")
    page.get_by_label("What is wrong, in your words").fill("This judgment was paid in March.")
    sent_between = datetime.now(UTC)
    page.get_by_role("button", name="Send the dispute").click()
    status = page.get_by_role("status")
    assert f"was sent to {COURT.name}" in status.inner_text()
    assert "Open: the agency is looking at it" in page.locator("tbody").inner_text()
    # The clock: the agency has the federation's 30 days from the filing to answer.
    due = page.locator("tbody tr").first.locator("td[data-label='Answer due by']").inner_text()
    deadline = timedelta(days=30)
    assert due in {
        f"{sent_between + deadline:%Y-%m-%d}",
        f"{datetime.now(UTC) + deadline:%Y-%m-%d}",
    }
    page.screenshot(path=shots / "contests.png", full_page=True)
    assert _verdict(fed, person).blacklist.disputed
    page.click("nav a[href='/records']")
    assert "Yes, you disputed it" in page.locator(f"#agency-{COURT.name}").inner_text()

    # Withdraw the consent: a click, then a confirmation.
    page.click("nav a[href='/grants']")
    page.wait_for_url(f"{base}/grants")
    _accessible(page, "grants")
    page.click(f"a[data-grant='{person.grant_id}']")
    _accessible(page, "confirm")
    page.screenshot(path=shots / "confirm.png", full_page=True)
    page.get_by_role("button", name="Yes, withdraw it").click()
    assert "was withdrawn on" in page.get_by_role("status").inner_text()
    assert "Withdrawn on" in page.locator(f"#grant-{person.grant_id}").inner_text()
    page.screenshot(path=shots / "grants.png", full_page=True)
    with pytest.raises(PermissionDenied, match="revoked"):
        _verdict(fed, person)

    # The refused lookup is on the lookups page too.
    page.click("nav a[href='/lookups']")
    refused = page.locator("tbody tr").first.inner_text()
    assert "Refused" in refused
    assert "revoked" in refused
    assert "PERMISSION_DENIED" not in refused

    # A phone-sized window: every page fits its width.
    _fits_a_phone(page, base, ("lookups", "grants", "records", "contests"), shots)
    saved = sorted(path.name for path in shots.iterdir())
    assert len(saved) == 9, saved
    assert all((shots / name).stat().st_size > 1000 for name in saved)


def test_a_person_reads_why_their_score_and_has_a_person_review_it(
    fed: InProcessFederation, scored: Person, scored_link: str, page: Page, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    base = scored_link.split("/login/", maxsplit=1)[0]
    verdict = _verdict(fed, scored)
    assert verdict.credit.reason_codes, "the bank's history should cost points"

    # The lookup made moments before links to a review of its verdict.
    page.goto(scored_link)
    page.wait_for_url(f"{base}/lookups")
    row = page.locator("tbody tr").first
    assert row.locator(f"a[data-verdict='{verdict.verdict_id}']").count() == 1

    # Its explanation: the score and band, the bands' edges, the reasons with what-ifs.
    page.click("nav a[href='/explanations']")
    page.wait_for_url(f"{base}/explanations")
    card = page.locator(f"#explanation-{verdict.verdict_id}")
    text = card.inner_text()
    assert LENDER in text
    assert "deciding on a loan or credit" in text
    assert f"{verdict.credit.score}, in the band “{verdict.credit.band}”" in text
    assert card.locator("tr.yours").count() == 1
    reasons = card.locator("ol.reasons li")
    assert 1 <= reasons.count() <= 4
    assert reasons.count() == len(verdict.credit.reason_codes)
    for code, item in zip(verdict.credit.reason_codes, reasons.all(), strict=True):
        assert f"(code {code})" in item.inner_text()
        assert re.search(r"Without this, your score would be \d+, in the band", item.inner_text())
    assert "Read the scorecard" in text
    _accessible(page, "explanations")
    page.screenshot(path=shots / "explanations.png", full_page=True)

    # Ask a person to review it, from the explanation; the review is open.
    statement = "The late payment was the bank's own error."
    card.get_by_label("Ask a person to review this score").fill(statement)
    card.get_by_role("button", name="Ask for the review").click()
    page.wait_for_url(re.compile(r"/reviews\?sent=\w+#review-\w+$"))
    assert "was asked for" in page.get_by_role("status").inner_text()
    [review] = page.locator("section[data-state]").all()
    review_id = (review.get_attribute("id") or "").removeprefix("review-")
    assert "Open: waiting for a person to decide" in review.inner_text()
    assert statement in review.inner_text()
    assert BANK.name in review.inner_text()  # the agency whose records the score counted
    _accessible(page, "reviews")
    page.screenshot(path=shots / "review-open.png", full_page=True)

    # The operator decides; the person sees the decision, signed by the registry.
    decision = "The bank confirmed the payment was late; the score stands."
    run("registry", "reviews", "decide", "--dir", fed.registry_dir, review_id,
        "--outcome", "upheld", "--statement", decision)  # fmt: skip
    page.reload()  # a GET: the request is not sent twice
    [review] = page.locator("section[data-state]").all()
    assert review.get_attribute("id") == f"review-{review_id}"
    decided = review.inner_text()
    assert "Decided: the answer stands" in decided
    assert decision in decided
    assert "This decision is signed by the registry." in decided
    _accessible(page, "reviews decided")
    page.screenshot(path=shots / "review-decided.png", full_page=True)

    _fits_a_phone(page, base, ("explanations", "reviews"), shots)
    saved = sorted(path.name for path in shots.iterdir())
    assert len(saved) == 5, saved
    assert all((shots / name).stat().st_size > 1000 for name in saved)
