"""`credence dev up/status/down` through the real command line: restart, progress, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _credence(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "credence.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_up_into_a_stopped_federation_restarts_it_with_its_data(tmp_path: Path) -> None:
    directory = tmp_path / "fed"
    try:
        first = _credence("dev", "up", "--dir", directory, "--agencies", "1", "--subjects", "16")
        assert first.returncode == 0, first.stderr
        # Off a terminal: a line every few seconds, each with its elapsed time.
        assert "s] initialising the registry" in first.stderr, "no progress on stderr"
        assert (directory / "manifest.bin").stat().st_size > 0
        again = _credence("dev", "up", "--dir", directory)
        assert again.returncode == 1
        assert "already runs a federation" in again.stderr
        assert _credence("dev", "down", "--dir", directory).returncode == 0
        assert _credence("dev", "status", "--dir", directory).stdout.startswith("no federation")
        federation_before = (directory / "federation.json").read_text()

        restarted = _credence("dev", "up", "--dir", directory)

        assert restarted.returncode == 0, restarted.stderr
        assert "stopped federation restarted with its data" in restarted.stdout
        assert "restarting the stopped federation" in restarted.stderr
        assert (directory / "federation.json").read_text() == federation_before
        status = _credence("dev", "status", "--dir", directory)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 2  # the registry and the one agency
        listed = _credence("verify", "reg:CN:ORG000001", "--federation",
                           directory / "federation.json")  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "signature verified" in listed.stdout
    finally:
        _credence("dev", "down", "--dir", directory)
    assert _credence("dev", "status", "--dir", directory).stdout.startswith("no federation")


def test_an_unfinished_federation_is_refused_without_naming_an_internal_command(
    tmp_path: Path,
) -> None:
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "registry.toml").write_text("# left by a `dev up` that failed\n")

    result = _credence("dev", "up", "--dir", tmp_path, "--agencies", "1")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "never finished starting" in result.stderr
    assert "registry init" not in result.stderr
    assert "`credence registry" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["registry"], "nothing was added"
