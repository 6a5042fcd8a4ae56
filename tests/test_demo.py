"""`make demo`'s story, end to end, as a user sees it (own processes, real mTLS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from credence.dev import demo

pytestmark = pytest.mark.slow


def test_demo_tells_the_whole_story_and_cleans_up(tmp_path: Path) -> None:
    # Its temporary directory goes under tmp_path, where the test can look for it.
    result = subprocess.run(
        [sys.executable, "-m", "credence.dev.demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in (
        "CLEAR",
        "LISTED",
        "dishonest_debtor",
        "signatures verified",
        "the registry's signed explanation, checked against the verdict",
        "without them the score would be",
        "refused  a person is never looked up on the public-register basis",
        "10,000/10,000",
        "the refused attempt is in the log too",
        "every process stopped",
    ):
        assert expected in out, f"{expected!r} missing from the demo's output"
    assert list(tmp_path.iterdir()) == [], "the demo left its directory (root.key, ca.key)"
    assert _processes_mentioning(tmp_path) == [], "dev down left a process behind"


def test_lookup_table_wraps_a_long_reason_at_words(capsys: pytest.CaptureFixture[str]) -> None:
    reason = (
        "a person is never looked up on the public-register basis: ask for the person's "
        "consent (credence consent request) or use a logged legal mandate"
    )
    demo.Story().table(["when", "who", "purpose", "outcome"],
                       [["10:00:00", "demo-company", "credit assessment", reason]])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 2, "the long reason was not wrapped"
    assert all(len(line) <= demo.WIDTH for line in lines)
    column = lines[0].index("outcome")
    pieces = [line[column:] for line in lines[1:]]
    assert all(line[:column].strip() == "" for line in lines[2:]), "continuations align"
    assert " ".join(pieces) == reason, "every word kept whole and in order"


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
