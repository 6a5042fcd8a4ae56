"""`make demo`'s story, end to end, as a user sees it (own processes, real mTLS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from credence.dev import federation as dev_federation

pytestmark = pytest.mark.slow


def test_demo_tells_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "credence.dev.demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in (
        "CLEAR",
        "LISTED",
        "dishonest_debtor",
        "signatures verified",
        "refused  a person is never looked up on the public-register basis",
        "10,000/10,000",
        "the refused attempt is in the log too",
        "every process stopped",
    ):
        assert expected in out, f"{expected!r} missing from the demo's output"
    assert dev_federation.status(tmp_path) == [], "dev down left its process file"
    assert _processes_mentioning(tmp_path) == [], "dev down left a process behind"


def _processes_mentioning(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in command:
                found.append(int(entry.name))
    return found
