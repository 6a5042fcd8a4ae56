"""Checking rows in worker processes that never outlive the import.

Checking a row (normalising and keying its identifier above all) costs more
than reading it, so on a machine with more than one CPU a worker process
checks chunks while the importer reads the file. The worker stages the rows
it checked itself, straight into the staging database
(:func:`agency_node.import_staging.stage_rows`), and hands back only their
record ids and errors: checked rows never travel back through a pipe.

A worker holds the pseudonymisation key, so it must die with the importer,
also when the importer is killed with SIGKILL and gets no chance to stop it:
on Linux each worker asks the kernel for SIGKILL when its parent
dies (``PR_SET_PDEATHSIG``), and every worker, on any system, exits when it
finds it has been re-parented.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agency_node.import_readers import RawRow
from agency_node.import_rows import RowError, _RowChecker
from agency_node.import_staging import open_staged_rows, stage_rows
from credence.subjects import PseudonymisationKey

__all__ = ["Checked", "check_chunk", "check_in_worker", "worker_pool"]

_PR_SET_PDEATHSIG = 1
# How often a worker looks for its parent where the kernel cannot tell it.
_PARENT_POLL_SECONDS = 1.0


@dataclass(slots=True)
class Checked:
    """One chunk after checking: rows to stage (none once staged), ids to check, errors."""

    values: list[tuple[Any, ...]]
    marks: list[tuple[str, int]]
    errors: list[RowError]


def check_chunk(checker: _RowChecker, items: list[RawRow]) -> Checked:
    """Check every row of a chunk."""
    checked = Checked([], [], [])
    for row, raw in items:
        if isinstance(raw, str):
            checked.errors.append(RowError(row, "row", raw))
            continue
        record = checker.check(row, raw, checked.errors)
        if record is not None:
            checked.values.append(record)
            checked.marks.append((record[2], row))
        elif raw[0]:
            # An invalid row's id still counts for duplicates.
            checked.marks.append((raw[0], row))
    return checked


_worker_checker: _RowChecker | None = None
_worker_staging: sqlite3.Connection | None = None


def _die_with(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl: then this process was re-parented.
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(_PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True, slots=True)
class _Setup:
    """What a worker process needs, sent once as it starts."""

    secret: bytes
    now: datetime
    hash_time: Callable[[datetime], str]
    strict: bool
    staged: Path


def _init_worker(parent: int, setup: _Setup) -> None:
    _die_with(parent)
    # One checker and one staging connection per worker process, by design.
    global _worker_checker, _worker_staging  # noqa: PLW0603
    _worker_checker = _RowChecker(
        PseudonymisationKey.from_bytes(setup.secret),
        setup.now,
        setup.hash_time,
        strict=setup.strict,
    )
    _worker_staging = open_staged_rows(setup.staged)


def check_in_worker(items: list[RawRow], first_seq: int) -> Checked:
    """Check a chunk in a worker process started by :func:`worker_pool` and stage it.

    The rows are staged at ``seq`` ``first_seq`` on, unless the chunk has an
    error (then the file is refused and nothing needs staging); the result
    carries no rows.

    Raises:
        RuntimeError: called outside such a worker.
    """
    if _worker_checker is None or _worker_staging is None:
        raise RuntimeError("import worker was not initialised")
    checked = check_chunk(_worker_checker, items)
    if not checked.errors and checked.values:
        stage_rows(_worker_staging, first_seq, checked.values)
    checked.values = []
    return checked


def worker_pool(
    workers: int,
    key: PseudonymisationKey,
    now: datetime,
    hash_time: Callable[[datetime], str],
    *,
    strict: bool,
    staged: Path,
) -> ProcessPoolExecutor:
    """Worker processes that check rows, stage them in ``staged`` and die with this process."""
    # spawn, not fork: forking a process that may hold gRPC or database
    # threads is unsafe. The key goes to the child over its private pipe.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), _Setup(key.secret, now, hash_time, strict, staged)),
    )
