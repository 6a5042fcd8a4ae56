"""`credence me portal` run as a person runs it, for tests: its printed login link, then Ctrl+C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["running_portal"]


@contextmanager
def running_portal(arguments: Sequence[str | Path], *, start_seconds: float) -> Iterator[str]:
    """Run ``credence ARGUMENTS`` (a ``me portal`` command) and yield the one link it prints.

    On leaving, the portal is stopped with SIGINT (Ctrl+C) and must exit 0; a
    portal that prints no link within ``start_seconds`` fails with its output.
    """
    command = [sys.executable, "-m", "credence.cli", *map(str, arguments)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            printed.append(line)
            if "/login/" in line:
                found.set()
        found.set()  # the command ended: say what it printed

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(start_seconds), "".join(printed)
        links = re.findall(r"http://127\.0\.0\.1:\d+/login/\S+", "".join(printed))
        assert len(links) == 1, "".join(printed)
        yield str(links[0])
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C, as the person stops it
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == 0, "".join(printed)
