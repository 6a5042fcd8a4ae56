"""Screening a CSV file of identifiers into a results file that survives interruption.

:func:`screen_file` reads ``identifier`` (and optionally ``row_key``) from a
CSV file, maps each identifier to its subject reference, streams the rows
through one ScreenBatch call (:meth:`credence.client.requester.Requester.screen`) and
appends one result line per row to a CSV or JSON Lines file as results arrive.
Rows that cannot be sent (an empty or malformed identifier, a repeated row
key) are written with the reason and never stop the run.

Resuming: with ``resume=True`` the row keys already in the output are skipped
and the rest appended, so no subject whose result was saved is looked up
again. Only a few messages are in flight at once (``window`` messages), and
setting ``stop`` (the command line does it on SIGINT and SIGTERM) stops
sending and waits for the results of what was sent, so an interrupted screen
resumed looks nobody up twice. After a SIGKILL the rows in flight (at most
``window * message_size``) are lost with the process and are looked up again
on resume.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc

from credence.client.requester import Requester, ScreenOutcome, ScreenRow
from credence.errors import CredenceError, InvalidIdentifier, InvalidInput
from credence.subjects import PseudonymisationKey, ref_for

__all__ = [
    "COLUMNS",
    "INVALID_ROW",
    "ScreenProgress",
    "ScreenSummary",
    "count_rows",
    "done_row_keys",
    "escape_cell",
    "screen_file",
    "unescape_cell",
]

#: The output columns, in order (CSV header; JSON Lines keys).
COLUMNS = (
    "row_key",
    "identifier",
    "status",
    "categories",
    "disputed",
    "coverage",
    "verdict_id",
    "refusal_code",
    "refusal_reason",
)
#: ``refusal_code`` of a row that was never sent (bad identifier, repeated key).
INVALID_ROW = "INVALID_ROW"

_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# Results are flushed at least this often, so a watcher (or a resume) sees them.
_FLUSH_SECONDS = 0.5
_PROGRESS_SECONDS = 0.2


@dataclass(frozen=True)
class ScreenProgress:
    """Where a screen stands: rows written this run out of the rows to do.

    Rates and time left are the reporter's to estimate
    (:class:`credence.cli.progress.Progress` smooths them).
    """

    done: int
    total: int
    skipped: int
    elapsed: float


@dataclass(frozen=True)
class ScreenSummary:
    """What one run wrote (``skipped`` rows were in the output already)."""

    written: int
    verdicts: int
    refused: int
    invalid: int
    skipped: int
    interrupted: bool


@dataclass(frozen=True)
class _Input:
    row_key: str
    identifier: str


def _read_input(path: Path) -> Iterator[_Input]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InvalidInput(f"{path} is empty; it needs a header line with 'identifier'")
        names = [name.strip().lower() for name in header]
        if "identifier" not in names:
            raise InvalidInput(
                f"{path} has no 'identifier' column (header: {','.join(header)}); "
                "add a header line such as 'row_key,identifier'"
            )
        id_column = names.index("identifier")
        key_column = names.index("row_key") if "row_key" in names else None
        for record in reader:
            if not record:
                continue
            identifier = record[id_column].strip() if id_column < len(record) else ""
            row_key = ""
            if key_column is not None and key_column < len(record):
                row_key = record[key_column].strip()
            yield _Input(row_key or str(reader.line_num), identifier)


def count_rows(path: Path) -> int:
    """The number of data rows in the input CSV (for progress and ETA).

    Raises:
        InvalidInput: unreadable, empty, or no ``identifier`` column.
    """
    return sum(1 for _ in _read_input(path))


def _truncate_partial_line(path: Path) -> None:
    # A process killed mid-write leaves half a line: drop it, that row is redone.
    with path.open("rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(max(0, size - 65536))
        tail = handle.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        handle.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)


def done_row_keys(path: Path) -> set[str]:
    """The row keys an existing results file holds (CSV or ``.jsonl``).

    Raises:
        InvalidInput: the file is not a results file written by :func:`screen_file`.
    """
    if not path.exists():
        return set()
    _truncate_partial_line(path)
    with path.open(newline="", encoding="utf-8") as handle:
        if _is_jsonl(path):
            keys = set()
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    keys.add(str(json.loads(line)["row_key"]))
                except (ValueError, KeyError, TypeError) as exc:
                    raise InvalidInput(
                        f"{path} line {number} is not a screening result; "
                        "pass another --out file or remove this one"
                    ) from exc
            return keys
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return set()
        if tuple(header) != COLUMNS:
            raise InvalidInput(
                f"{path} does not start with the results header {','.join(COLUMNS)}; "
                "pass another --out file or remove this one"
            )
        return {unescape_cell(record[0]) for record in reader if record}


# OWASP CSV injection: a cell that begins with one of these runs as a formula
# in a spreadsheet. A leading quote is escaped too, so unescaping is exact.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: a leading formula character gets a ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def unescape_cell(cell: str) -> str:
    """The value :func:`escape_cell` wrote."""
    return cell[1:] if cell.startswith("'") else cell


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in {".jsonl", ".ndjson"}


class _Writer:
    """Result lines to the output file, from both the sending and receiving threads."""

    def __init__(self, handle: IO[str], jsonl: bool, write_header: bool) -> None:
        self._handle = handle
        self.jsonl = jsonl
        # RFC 4180 line ends: with a bare "\n" terminator the csv module does
        # not quote a cell holding a lone CR, which then splits the row when read.
        self._csv = csv.writer(handle, lineterminator="\r\n")
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        self.written = 0
        self.verdicts = 0
        self.refused = 0
        self.invalid = 0
        if write_header and not jsonl:
            self._csv.writerow(COLUMNS)

    def write(self, values: Sequence[Any], kind: str) -> None:
        with self._lock:
            if self.jsonl:
                self._handle.write(json.dumps(dict(zip(COLUMNS, values, strict=True))) + "\n")
            else:
                self._csv.writerow([escape_cell(value) for value in values])
            self.written += 1
            if kind == "verdict":
                self.verdicts += 1
            elif kind == "refused":
                self.refused += 1
            else:
                self.invalid += 1
            now = time.monotonic()
            if now - self._flushed >= _FLUSH_SECONDS:
                self._handle.flush()
                self._flushed = now

    def flush(self) -> None:
        with self._lock:
            self._handle.flush()
            self._flushed = time.monotonic()


def _outcome_values(outcome: ScreenOutcome, identifier: str, jsonl: bool) -> tuple[list[Any], str]:
    verified = outcome.verdict
    if verified is not None:
        verdict = verified.verdict
        categories: Any = list(verdict.blacklist.categories)
        if not jsonl:
            categories = ";".join(categories)
        disputed = verdict.blacklist.disputed or verdict.credit.disputed
        values = [
            outcome.row_key,
            identifier,
            verified.status or "",
            categories,
            disputed if jsonl else str(disputed).lower(),
            verified.coverage,
            verdict.verdict_id,
            "",
            "",
        ]
        return values, "verdict"
    code, reason = outcome.refusal or (grpc.StatusCode.UNKNOWN.value[0], "no outcome")
    empty: Any = [] if jsonl else ""
    values = [
        outcome.row_key,
        identifier,
        "refused",
        empty,
        "",
        "",
        "",
        _STATUS_NAMES.get(code, str(code)),
        reason,
    ]
    return values, "refused"


def _invalid_values(row: _Input, reason: str, jsonl: bool) -> list[Any]:
    return [row.row_key, row.identifier, "invalid", [] if jsonl else "", "", "", "", INVALID_ROW,
            reason]  # fmt: skip


class _Feed:
    """The rows to send, held back while ``window_rows`` rows await their results."""

    def __init__(
        self,
        source: Path,
        *,
        done_keys: set[str],
        pseudonymisation: PseudonymisationKey,
        writer: _Writer,
        stop: threading.Event,
        window_rows: int,
    ) -> None:
        self._source = source
        self._done_keys = done_keys
        self._pseudonymisation = pseudonymisation
        self._writer = writer
        self._stop = stop
        self._window_rows = window_rows
        self._flow = threading.Condition()
        self._in_flight = 0
        self.skipped = 0
        #: Row key -> identifier of every row sent and not yet answered.
        self.identifiers: dict[str, str] = {}

    def rows(self) -> Iterator[ScreenRow]:
        # Runs on gRPC's sending thread; blocking here holds back the next message.
        seen: set[str] = set()
        jsonl = self._writer.jsonl
        for row in _read_input(self._source):
            if row.row_key in self._done_keys:
                self.skipped += 1
                continue
            if self._stop.is_set():
                return
            reason = ""
            if row.row_key in seen:
                reason = f"row_key {row.row_key!r} repeats an earlier row; make row keys unique"
            elif not row.identifier:
                reason = "identifier is empty"
            else:
                seen.add(row.row_key)
                try:
                    subject = ref_for(self._pseudonymisation, row.identifier)
                except InvalidIdentifier as exc:
                    reason = str(exc)
            if reason:
                self._writer.write(_invalid_values(row, reason, jsonl), "invalid")
                continue
            with self._flow:
                while self._in_flight >= self._window_rows:
                    if self._stop.is_set():
                        return
                    self._flow.wait(0.05)
                self._in_flight += 1
            self.identifiers[row.row_key] = row.identifier
            yield ScreenRow(row.row_key, subject)

    def answered(self, outcome: ScreenOutcome) -> None:
        identifier = self.identifiers.pop(outcome.row_key, "")
        values, kind = _outcome_values(outcome, identifier, self._writer.jsonl)
        self._writer.write(values, kind)
        with self._flow:
            self._in_flight -= 1
            self._flow.notify()


def screen_file(
    requester: Requester,
    pseudonymisation: PseudonymisationKey,
    source: Path,
    out: Path,
    *,
    kinds: Sequence[str] = ("blacklist",),
    purpose: str = "counterparty_verification",
    resume: bool = False,
    message_size: int = 500,
    window: int = 4,
    stop: threading.Event | None = None,
    progress: Callable[[ScreenProgress], None] | None = None,
) -> ScreenSummary:
    """Screen every row of ``source`` and append one result line per row to ``out``.

    Args:
        requester: the member's connection to the registry.
        pseudonymisation: the federation's key mapping identifiers to references.
        source: CSV with a header naming ``identifier`` and optionally ``row_key``
            (default: the row's line number in the file).
        out: the results file; ``.jsonl`` for JSON Lines, anything else CSV.
        kinds: verdict kinds asked for every row.
        purpose: the purpose of every row.
        resume: skip the row keys ``out`` holds already and append the rest;
            without it an existing ``out`` is refused.
        message_size: rows per request message.
        window: request messages in flight at most.
        stop: when set, no more rows are sent; results of rows sent are still
            written, then the function returns with ``interrupted`` set.
        progress: called now and then, and at the end, on the calling thread.

    Returns:
        What this run wrote.

    Raises:
        InvalidInput: an unreadable or headerless input, an existing output
            without ``resume``, an output that is not a results file, or
            ``message_size``/``window`` below 1.
        CredenceError: the registry refused the stream or a response did not
            verify (see :meth:`~credence.client.requester.Requester.screen`); the results
            written so far are kept, so the run can be resumed.
    """
    if message_size < 1 or window < 1:
        raise InvalidInput(
            f"message size and window must be at least 1, got {message_size} and {window}"
        )
    if out.exists() and out.stat().st_size > 0 and not resume:
        raise InvalidInput(f"{out} exists: pass --resume to continue it, or choose another --out")
    done_keys = done_row_keys(out) if resume else set()
    total = sum(1 for row in _read_input(source) if row.row_key not in done_keys)
    stop = stop or threading.Event()
    started = time.monotonic()
    with out.open("a", newline="", encoding="utf-8") as handle:
        writer = _Writer(handle, _is_jsonl(out), write_header=handle.tell() == 0)
        feed = _Feed(
            source,
            done_keys=done_keys,
            pseudonymisation=pseudonymisation,
            writer=writer,
            stop=stop,
            window_rows=window * message_size,
        )

        def report() -> None:
            if progress is not None:
                elapsed = time.monotonic() - started
                progress(ScreenProgress(writer.written, total, feed.skipped, elapsed))

        last_report = started
        try:
            for outcome in requester.screen(
                feed.rows(), kinds=kinds, purpose=purpose, message_size=message_size
            ):
                feed.answered(outcome)
                now = time.monotonic()
                if now - last_report >= _PROGRESS_SECONDS:
                    last_report = now
                    report()
        except CredenceError as exc:
            raise type(exc)(
                f"{exc}; the {writer.written} results of this run are saved in {out}: "
                "run again with --resume to continue"
            ) from exc
        finally:
            writer.flush()
        report()
    return ScreenSummary(
        written=writer.written,
        verdicts=writer.verdicts,
        refused=writer.refused,
        invalid=writer.invalid,
        skipped=len(done_keys),
        interrupted=stop.is_set() and writer.written < total,
    )
