"""A running import's progress, in a file beside its staging database.

An import runs in the ``credence node import`` process, not in the node
server; it replaces :data:`IMPORT_PROGRESS_FILE` after each checked chunk and
removes it when done, and the server's ``/metrics`` reads it
(:mod:`agency_node.metrics`). The file holds counts only, never a row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "IMPORT_PROGRESS_FILE",
    "clear_import_progress",
    "running_import",
    "write_import_progress",
]

#: The running import's progress in its staging directory (JSON, replaced per chunk).
IMPORT_PROGRESS_FILE = "progress.json"


def write_import_progress(staging_dir: Path, **progress: int | str) -> None:
    """Replace the progress file with ``progress`` and this process's id (atomically)."""
    path = staging_dir / IMPORT_PROGRESS_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({"pid": os.getpid(), **progress}))
    partial.replace(path)


def clear_import_progress(staging_dir: Path) -> None:
    """Remove the progress file: the import is over."""
    (staging_dir / IMPORT_PROGRESS_FILE).unlink(missing_ok=True)


def running_import(staging_dir: Path) -> dict[str, Any] | None:
    """The progress of an import whose process still runs, or None."""
    try:
        progress = json.loads((staging_dir / IMPORT_PROGRESS_FILE).read_text())
        os.kill(int(progress["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return progress if isinstance(progress, dict) else None
