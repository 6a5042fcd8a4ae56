"""Import an agency's records from CSV or JSON Lines, all or nothing.

File format (``.csv`` with a header row, or ``.jsonl`` / ``.ndjson`` with one
JSON object per line), one record per row:

==============  ========  ====================================================
field           required  value
==============  ========  ====================================================
record_id       yes       the source system's key (natural key: a re-import
                          updates the record in place); 1 to 128 printable
identifier      yes       ``<scheme>:<value>`` (:mod:`credence.subjects`);
                          only its subject reference is stored
kind            yes       one of :data:`credence.record_kinds.KINDS`
category        yes       a category allowed for the kind
status          yes       one of :data:`credence.record_kinds.STATUSES`
occurred_at     yes       ISO 8601 date (midnight UTC) or date-time with a
                          UTC offset; not in the future
expires_at      no        as occurred_at; can only shorten the kind's period
amount          no        decimal, e.g. ``1234.56``; at most the currency's
                          minor-unit digits; stored in minor units
currency        with amt  ISO 4217 code from :data:`CURRENCY_EXPONENTS`
disputed        no        ``true`` or ``false`` (default false)
days_overdue    no        a non-negative integer
==============  ========  ====================================================

Optional CSV columns may be left out of the header or left empty; JSON fields
may be missing or null, and numbers and booleans may be JSON numbers and
booleans. Unknown columns are refused. "Row N" in an error is line N of the
file (the CSV header is line 1; a line break inside a quoted field counts), so
it is the line an editor shows (:mod:`agency_node.import_readers`).

Hard limits, each refused with one line naming the limit and the row: at most
:data:`MAX_COLUMNS` columns, :data:`MAX_LINE_BYTES` bytes a line,
:data:`MAX_FIELD_CHARS` characters a field, JSON nested at most
:data:`MAX_JSON_DEPTH` deep. Every check is linear in the file's size. An
error lists the first :data:`MAX_LISTED_ERRORS` problems, each at most
:data:`MAX_ERROR_CHARS` characters, and the total.

With ``strict``, an identifier or record id that begins with a character a
spreadsheet runs as a formula (``= + - @``, tab, CR) is refused; otherwise
data is kept as given.

An import never blocks the node's answers: the whole file is read, checked
and staged in a scratch database first, without the node's write lock, and
only a file with no error is applied, in short transactions that keep
all-or-nothing through an undo journal (:mod:`agency_node.import_staging`).
Re-importing a file changes nothing: rows are upserted on ``record_id`` and an
unchanged row (same SHA-256 of its normalised content) is not rewritten.
Rows are checked in worker processes on a machine with more than one CPU
(:mod:`agency_node.import_workers`); they die with the importer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from agency_node.database import bump_record_generation
from agency_node.import_progress import clear_import_progress, write_import_progress
from agency_node.import_readers import (
    MAX_COLUMNS,
    MAX_FIELD_CHARS,
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    RawRow,
    StopReading,
    reader_for,
)
from agency_node.import_rows import (
    CURRENCY_EXPONENTS,
    FORMULA_PREFIXES,
    MAX_ERROR_CHARS,
    MAX_LISTED_ERRORS,
    ImportRefused,
    ImportReport,
    RowError,
    _RowChecker,
    postgres_hash_time,
    stage_time,
)
from agency_node.import_staging import Staging, apply, out_of_space, recover, staging_files
from agency_node.import_workers import Checked, check_chunk, check_in_worker, worker_pool
from agency_node.models import Record
from credence.encoding import require_utc
from credence.errors import FailedPrecondition, InvalidInput
from credence.storage import immediate_writer
from credence.subjects import PseudonymisationKey

__all__ = [
    "CURRENCY_EXPONENTS",
    "FORMULA_PREFIXES",
    "MAX_COLUMNS",
    "MAX_ERROR_CHARS",
    "MAX_FIELD_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_LINE_BYTES",
    "MAX_LISTED_ERRORS",
    "STAGING_DIR_NAME",
    "ImportRefused",
    "ImportReport",
    "RowError",
    "import_records",
    "purge_expired",
    "recover_interrupted_import",
]

# Errors are sorted and trimmed to the listed ones whenever this many pile up.
_ERROR_BUFFER = 1000
# Below this file size a worker process costs more to start than it saves.
_PARALLEL_MIN_BYTES = 4 * 1024 * 1024
_STAGING_DB = "staging.db"
#: The staging directory's name in the node's data directory.
STAGING_DIR_NAME = "import-staging"


class _Errors:
    """The first :data:`MAX_LISTED_ERRORS` errors by row, and how many there were."""

    def __init__(self) -> None:
        self.listed: list[RowError] = []
        self.total = 0

    def add(self, error: RowError) -> None:
        self.listed.append(error)
        self.total += 1

    def extend(self, errors: list[RowError]) -> None:
        self.listed.extend(errors)
        self.total += len(errors)

    def trim(self) -> None:
        # What is dropped sorts after everything kept, so keeping the first
        # ones of (kept + new) stays right whatever order errors come in.
        if len(self.listed) > _ERROR_BUFFER:
            self.listed.sort(key=_by_row)
            del self.listed[MAX_LISTED_ERRORS:]

    def refused(self) -> ImportRefused:
        self.listed.sort(key=_by_row)
        return ImportRefused(self.listed[:MAX_LISTED_ERRORS], self.total)


def _by_row(error: RowError) -> int:
    return error.row


def _chunks(rows: Iterator[RawRow], chunk_size: int, errors: _Errors) -> Iterator[list[RawRow]]:
    chunk: list[RawRow] = []
    try:
        for item in rows:
            chunk.append(item)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    except StopReading as stop:
        errors.add(stop.error)
    yield chunk


class _Validation:
    """Checks chunks (here or in worker processes) and stages them in file order."""

    def __init__(self, staging: Staging, errors: _Errors, on_chunk: Callable[[], None]) -> None:
        self._staging = staging
        self._errors = errors
        self._on_chunk = on_chunk
        self.rows = 0

    @contextlib.contextmanager
    def _staging_space(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            if out_of_space(exc):
                raise FailedPrecondition(
                    f"no space left on the disk of {self._staging.path.parent} while staging; "
                    "nothing was imported: free space there and retry"
                ) from None
            raise

    def _store(self, checked: Checked, first_seq: int) -> None:
        errors = self._errors
        errors.extend(checked.errors)
        # After the first error no row is staged: the file will be refused.
        values = checked.values if errors.total == 0 else []
        with self._staging_space():
            errors.extend(self._staging.write(values, checked.marks, first_seq))
        errors.trim()
        self._on_chunk()

    def here(self, chunks: Iterator[list[RawRow]], checker: _RowChecker) -> None:
        for chunk in chunks:
            first_seq = self.rows + 1
            self.rows += len(chunk)
            self._store(check_chunk(checker, chunk), first_seq)

    def in_workers(
        self, chunks: Iterator[list[RawRow]], pool: ProcessPoolExecutor, workers: int
    ) -> None:
        # Each worker has a chunk queued behind the one it is checking, while
        # this process reads the file and stages the chunk before. This
        # process does not check chunks itself when the workers fall behind:
        # on a node the CPU it would take is the one answering queries.
        # A chunk's rows are staged by its worker: only record ids and errors come back.
        in_flight: deque[tuple[Future[Checked], int]] = deque()
        depth = 2 * workers
        for chunk in chunks:
            first_seq = self.rows + 1
            self.rows += len(chunk)
            in_flight.append((pool.submit(check_in_worker, chunk, first_seq), first_seq))
            if len(in_flight) > depth:
                self._finish(*in_flight.popleft())
        while in_flight:
            self._finish(*in_flight.popleft())

    def _finish(self, checking: Future[Checked], first_seq: int) -> None:
        with self._staging_space():  # the worker's staging may have filled the disk
            checked = checking.result()
        self._store(checked, first_seq)


@contextlib.contextmanager
def _staging_area(staging_dir: Path | None) -> Iterator[Path]:
    if staging_dir is None:
        with tempfile.TemporaryDirectory(prefix="credence-import-") as scratch:
            yield Path(scratch)
        return
    staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (staging_dir / "import.lock").open("a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPrecondition(
                f"another import is running (it holds {staging_dir / 'import.lock'}); "
                "wait for it to finish"
            ) from None
        # Released when the file closes, also when this process is killed.
        yield staging_dir


def _remove_staging(path: Path) -> None:
    for leftover in staging_files(path):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _finish_earlier(path: Path, engine: Engine) -> bool:
    # An earlier import was stopped: undo what it applied, drop what it staged.
    if not path.exists():
        return False
    staging = Staging(path)
    try:
        undone = recover(staging, engine)
    finally:
        staging.close()
    _remove_staging(path)
    return undone


def _engine_of(session_factory: sessionmaker[Session]) -> Engine:
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise InvalidInput("import needs a sessionmaker bound to an Engine")
    return bind


def recover_interrupted_import(engine: Engine, staging_dir: Path) -> bool:
    """Undo an import that was killed while applying, if ``staging_dir`` holds one.

    The node calls this as it starts, so it never serves a half-applied
    import; ``credence node import`` does the same before it stages a file.
    An import running right now owns its staging area and undoes its own
    failure, so then nothing is done.

    Args:
        engine: the node database.
        staging_dir: the staging directory imports are given
            (:data:`STAGING_DIR_NAME` in the node's data directory).

    Returns:
        Whether an interrupted import was found and undone.
    """
    staged = staging_dir / _STAGING_DB
    if not staged.exists():
        return False
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_staging_area(staging_dir))
        except FailedPrecondition:
            return False  # an import is running: it finishes or undoes itself
        # Read-then-write transactions: take SQLite's write lock up front.
        return _finish_earlier(staged, immediate_writer(engine))


def import_records(
    session_factory: sessionmaker[Session],
    path: Path,
    pseudonymisation_key: PseudonymisationKey,
    *,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 5000,
    workers: int | None = None,
    strict: bool = False,
    staging_dir: Path | None = None,
) -> ImportReport:
    """Validate every row of ``path``, then upsert them all: all or nothing.

    Args:
        session_factory: sessions on the node's database (schema current).
        path: a ``.csv``, ``.jsonl`` or ``.ndjson`` file (module docstring).
        pseudonymisation_key: the federation key that turns identifiers
            into subject references.
        now: the import time: no ``occurred_at`` may be later, and it is the
            ``updated_at`` of every row written. Defaults to the clock.
        progress: called after each staged chunk with (bytes read, file size).
        chunk_size: rows per checked chunk.
        workers: processes that check rows while this one reads and stages;
            0 checks here. By default one when the machine has more than
            one CPU and the file is large enough to repay starting it.
        strict: refuse identifiers and record ids that begin like a
            spreadsheet formula (:data:`FORMULA_PREFIXES`).
        staging_dir: where the file is staged and the undo journal kept
            (the node's data directory in the CLI); an import killed while
            applying is undone by the next import given the same directory.
            Defaults to a fresh temporary directory.

    Returns:
        How many rows the file had and what happened to them.

    Raises:
        ImportRefused: a row (or the header) is invalid or a limit is broken;
            the database is unchanged and the error lists the first 20 problems.
        FailedPrecondition: a disk filled up (nothing was imported), or
            another import is running in ``staging_dir``.
        InvalidInput: the file name has an unknown extension, or the
            database is neither SQLite nor PostgreSQL.
        OSError: the file cannot be read.
    """
    read = reader_for(path)
    now = require_utc(now) if now is not None else datetime.now(UTC)
    engine = _engine_of(session_factory)
    dialect = engine.dialect.name
    if dialect not in {"sqlite", "postgresql"}:
        raise InvalidInput(f"import supports SQLite and PostgreSQL databases, not {dialect}")
    hash_time = stage_time if dialect == "sqlite" else postgres_hash_time
    total_bytes = path.stat().st_size
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) > 1 and total_bytes >= _PARALLEL_MIN_BYTES else 0
    errors = _Errors()
    with _staging_area(staging_dir) as area:
        staged = area / _STAGING_DB
        _finish_earlier(staged, engine)
        staging = Staging(staged)
        try:
            with path.open("rb") as stream:

                def on_chunk() -> None:
                    if progress is not None:
                        progress(stream.tell(), total_bytes)
                    if staging_dir is not None:  # the node's /metrics reads it
                        write_import_progress(
                            area, bytes_done=stream.tell(), bytes_total=total_bytes,
                            rows_done=validation.rows,
                        )  # fmt: skip

                validation = _Validation(staging, errors, on_chunk)
                rows = read(stream)
                try:
                    chunks = _chunks(rows, chunk_size, errors)
                    if workers:
                        with worker_pool(
                            workers,
                            pseudonymisation_key,
                            now,
                            hash_time,
                            strict=strict,
                            staged=staged,
                        ) as pool:
                            validation.in_workers(chunks, pool, workers)
                    else:
                        checker = _RowChecker(pseudonymisation_key, now, hash_time, strict=strict)
                        validation.here(chunks, checker)
                finally:
                    # Close the reader while its file is still open, also on error.
                    rows.close()
            if errors.total:
                raise errors.refused()
            inserted, updated = apply(staging, engine)
        finally:
            keep = staging.state == "applying"  # an undo that failed: the next import ends it
            staging.close()
            clear_import_progress(area)
            if not keep:
                _remove_staging(staged)
    rows_read = validation.rows
    return ImportReport(rows_read, inserted, updated, rows_read - inserted - updated)


# --- maintenance --------------------------------------------------------------


def purge_expired(session: Session, now: datetime) -> int:
    """Delete every record past its rehabilitation end; their disputes cascade.

    Returns:
        How many records were deleted.
    """
    result = session.execute(
        delete(Record)
        .where(Record.expires_at <= require_utc(now))
        .execution_options(synchronize_session=False)
    )
    deleted = int(result.rowcount)  # type: ignore[attr-defined]
    if deleted:
        bump_record_generation(session)
    return deleted
