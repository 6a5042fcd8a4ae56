"""``make demo`` ends with how to open the portal as its person, and those steps work.

The steps are run as printed, on a federation the demo kept: start it again
(``credence dev up``), start ``credence me portal`` (its own process), open the
link it prints and read the person's own lookups and records.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import httpx
import pytest
from support.portal import running_portal

from credence.cli import main
from credence.dev import demo
from credence.dev import federation as dev_federation

pytestmark = pytest.mark.slow

#: Generous: a command starting on a busy two-core machine.
START_SECONDS = 60.0


def test_steps_for_a_removed_federation_keep_the_next_one_at_the_same_paths() -> None:
    person = {"id": "x", "subject_key": "/tmp/d/subjects/p.key",
              "binding": "/tmp/d/subjects/p.binding.jwt"}  # fmt: skip
    steps = demo.portal_steps(person, Path("/tmp/d"), kept=False)
    keep = demo.KEEP_SUGGESTED
    assert steps == [
        f"python -m credence.dev.demo --keep {keep}",
        f"credence dev up --dir {keep}",
        f"credence me portal --key {keep}/subjects/p.key --binding "
        f"{keep}/subjects/p.binding.jwt --federation {keep}/federation.json",
    ]
    kept = demo.portal_steps(person, Path("/tmp/d"), kept=True)
    assert kept[0] == "credence dev up --dir /tmp/d"
    assert "--key /tmp/d/subjects/p.key " in kept[1]


def test_the_printed_steps_open_the_persons_portal(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    try:
        # The demo's three agencies: the bank holds the persons with a history.
        federation = dev_federation.up(directory, agencies=3, subjects=40)
        person = federation["samples"]["person_with_consent"][0]
        assert dev_federation.down(directory) == []
        up, portal = demo.portal_steps(person, directory.resolve(), kept=True)
        assert main(shlex.split(up)[1:]) == 0
        with (
            running_portal(shlex.split(portal)[1:], start_seconds=START_SECONDS) as link,
            httpx.Client(timeout=START_SECONDS, follow_redirects=True) as browser,
        ):
            grants = browser.get(link).url.copy_with(path="/grants")
            page = browser.get(grants)
            assert page.status_code == 200
            assert person["grant_id"] in page.text
            assert "Permission for demo-company" in page.text
            # The explanations and reviews pages read the registry-signed lists.
            for path, heading in (("/explanations", "Why my scores"),
                                  ("/reviews", "Reviews by a person")):  # fmt: skip
                page = browser.get(grants.copy_with(path=path))
                assert page.status_code == 200, page.text
                assert f"<h1>{heading}</h1>" in page.text
    finally:
        assert dev_federation.down(directory) == []
