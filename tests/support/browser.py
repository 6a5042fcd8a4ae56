"""Debian's Chromium driven by Playwright, for the tests of pages a person sees.

Never a downloaded browser: Playwright starts ``/usr/bin/chromium`` through
``executable_path`` (`.ci/run` installs it). Without it, or without the
``playwright`` package, the browser tests skip saying why, except under CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
#: Chromium's flags: headless, no sandbox (CI runs as root), nothing fetched from the network.
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
#: Generous: a browser (and a command) starting on a busy two-core machine.
TIMEOUT_MS = 60_000


def missing() -> str:
    """Why the browser tests cannot run here, or "" when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed: pip install -e '.[dev]'"
    return ""


def require_browser(what: str) -> None:
    """Skip (or, under CI, fail) the tests of ``what`` when the browser cannot run."""
    reason = missing()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"{what}'s browser tests must run under CI: {reason}")
    if reason:
        pytest.skip(reason)


@contextmanager
def chromium_page(profile: Path, extra_args: Sequence[str] = ()) -> Iterator[Page]:
    """A page of a fresh Chromium profile in ``profile``, closed on leaving."""
    # Imported here: without playwright a test module still loads and says why it skips.
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
            timeout=TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
