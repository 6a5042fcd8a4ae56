"""Running the ``credence`` command line in-process, as a test reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from credence.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run ``credence ARGS`` in-process: exit code, stdout, stderr (what it printed alone)."""
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
