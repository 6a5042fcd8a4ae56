"""The operator's console in a real browser: Debian's Chromium driven by Playwright.

An operator logs in with the admin token, approves a pending enrolment,
suspends a member, and that member's next call to the registry (gRPC over
mutual TLS) is refused; each page is saved as a screenshot under the test's
temporary directory. Chromium is Debian's (/usr/bin/chromium, installed by
.ci/run), never a Playwright download. Without it the test skips saying so;
under CI (CI=true) it fails instead.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from support.browser import chromium_page, require_browser
from support.console import TOKEN_FILE, console_federation, enrol
from support.inprocess import InProcessFederation

from central_registry import database
from central_registry.models import Member as MemberRow
from credence.errors import PermissionDenied
from credence.pki import load_certificate_pem
from credence.storage import session_factory

if TYPE_CHECKING:
    from playwright.sync_api import Page


@pytest.fixture(scope="module")
def browser_ready() -> None:
    require_browser("the console")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessFederation]:
    with console_federation(tmp_path_factory.mktemp("console-browser")) as federation:
        enrol(federation, "shop-9", "company", approve=False)
        yield federation


def _spki_pin(certificate_pem: bytes) -> str:
    """Chromium's pin of a certificate's key (base64 SHA-256 of its SubjectPublicKeyInfo)."""
    spki = (
        load_certificate_pem(certificate_pem)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def page(browser_ready: None, fed: InProcessFederation, tmp_path: Path) -> Iterator[Page]:
    # The console's certificate comes from the federation CA, which Chromium does
    # not know: it trusts exactly this key, and no other certificate error.
    pin = _spki_pin((fed.registry_dir / "tls.crt").read_bytes())
    extra = [f"--ignore-certificate-errors-spki-list={pin}"]
    with chromium_page(tmp_path / "chromium-profile", extra) as page:
        yield page


def _state(fed: InProcessFederation, member_id: str) -> str | None:
    engine = database.create_engine_for(database.sqlite_url_for(fed.registry_dir))
    try:
        with session_factory(engine)() as session:
            member = session.get(MemberRow, member_id)
            return None if member is None else member.state
    finally:
        engine.dispose()


def test_an_operator_approves_and_suspends_in_the_browser(
    fed: InProcessFederation, page: Page, tmp_path: Path
) -> None:
    console = f"https://127.0.0.1:{fed.registry.console_port}"
    shots = tmp_path / "screenshots"

    page.goto(f"{console}/members")
    assert page.url == f"{console}/login"
    page.screenshot(path=shots / "login.png", full_page=True)
    page.fill("#token", (fed.root / TOKEN_FILE).read_text())
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(f"{console}/members")
    assert page.is_visible("#pending-shop-9")
    page.screenshot(path=shots / "members-pending.png", full_page=True)

    page.click("button[data-member='shop-9'][data-action='approve']")
    page.wait_for_url(f"{console}/members?done=approve&member=shop-9")
    assert not page.is_visible("#pending-shop-9")
    assert "active" in page.inner_text("#member-shop-9")
    assert _state(fed, "shop-9") == "active"

    with fed.requester("bank-a") as bank:
        bank.refresh_manifest()  # an active member is served
        page.click("button[data-member='bank-a'][data-action='suspend']")
        page.wait_for_url(f"{console}/members?done=suspend&member=bank-a")
        assert "suspended" in page.inner_text("#member-bank-a")
        page.screenshot(path=shots / "members-after.png", full_page=True)
        with pytest.raises(PermissionDenied, match="suspended"):
            bank.refresh_manifest()
    assert _state(fed, "bank-a") == "suspended"

    for name in ("agencies", "log", "alarms", "contests"):
        page.click(f"header a[href='/{name}']")
        page.wait_for_url(f"{console}/{name}")
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    assert "court-1" in page.goto(f"{console}/agencies").text()  # type: ignore[union-attr]
    saved = sorted(path.name for path in shots.iterdir())
    assert saved == sorted(
        ["login.png", "members-pending.png", "members-after.png", "agencies.png", "log.png",
         "alarms.png", "contests.png"]
    )  # fmt: skip
    assert all((shots / name).stat().st_size > 1000 for name in saved)
