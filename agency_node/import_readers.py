"""Reading an import file: CSV or JSON Lines into raw rows, with hard limits.

Every check here is linear in the file's size. Rows are numbered by physical
line: "row N" is line N of the file, counting from 1 at the first line (the
CSV header) and counting every newline, also one inside a quoted CSV field, so
a row number always points at the line an editor shows. A CSV record that
spans lines is numbered by the line it begins on.

A limit that is broken (line length, field size, columns) stops the reading
at once: the rest of such a file cannot be trusted to split into rows.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

from agency_node.import_rows import ImportRefused, RowError, _Bad, _shown
from credence.errors import InvalidInput
from credence.import_format import FIELDS, REQUIRED_FIELDS

__all__ = [
    "MAX_COLUMNS",
    "MAX_FIELD_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_LINE_BYTES",
    "RawRow",
    "StopReading",
    "reader_for",
]

#: Columns in the header: room for a few mistakes (named one by one), not a flood.
MAX_COLUMNS = 64
#: Bytes on one line, its line break not counted.
MAX_LINE_BYTES = 8192
#: Characters in one field (a CSV field may span lines when quoted).
MAX_FIELD_CHARS = 1024
#: Nesting of JSON arrays and objects on one line; a row is one flat object.
MAX_JSON_DEPTH = 8

#: A row as read: (line number, every field of FIELDS in order) or
#: (line number, the reason the row is unreadable).
RawRow = tuple[int, "tuple[str, ...] | str"]


class StopReading(Exception):
    """A hard limit was broken; the one error says which and where."""

    def __init__(self, error: RowError) -> None:
        super().__init__(str(error))
        self.error = error


def _header_error(reason: str) -> ImportRefused:
    return ImportRefused([RowError(1, "header", reason)], 1)


def _lines(stream: BinaryIO, bad: list[RowError]) -> Iterator[str]:
    """The file's lines as text, one per physical line.

    A line that is not UTF-8 is noted in ``bad`` and read as empty, so that
    the line count stays exact.

    Raises:
        StopReading: a line is longer than :data:`MAX_LINE_BYTES`.
    """
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 3)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # spreadsheets often write a byte order mark
        # rstrip copies the line: only a long one is measured without its break.
        if len(raw) > MAX_LINE_BYTES and len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise StopReading(
                RowError(
                    number, "row", f"line is longer than {MAX_LINE_BYTES} bytes (MAX_LINE_BYTES)"
                )
            )
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(
                RowError(number, "row", f"is not UTF-8 text (byte {exc.start + 1}: {exc.reason})")
            )
            yield "\n"


def _check_header(header: list[str]) -> list[int]:
    if not header:
        raise _header_error(f"the file is empty; the first line must name the columns: {FIELDS}")
    if len(header) > MAX_COLUMNS:
        raise _header_error(f"has {len(header)} columns, at most {MAX_COLUMNS} (MAX_COLUMNS)")
    names = [name.strip() for name in header]
    unknown = [name for name in names if name not in FIELDS]
    if unknown:
        raise _header_error(
            f"unknown column(s) {', '.join(map(_shown, unknown))} (known: {', '.join(FIELDS)})"
        )
    counts = Counter(names)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise _header_error(f"column(s) {', '.join(repeated)} appear more than once")
    missing = [name for name in FIELDS if name in REQUIRED_FIELDS and name not in counts]
    if missing:
        raise _header_error(f"required column(s) missing: {', '.join(missing)}")
    # Where each of FIELDS sits in the file's rows (-1: column left out).
    return [names.index(name) if name in counts else -1 for name in FIELDS]


def csv_rows(stream: BinaryIO) -> Generator[RawRow]:
    """Raw rows of a CSV file with a header line.

    Raises:
        ImportRefused: the header is missing or wrong.
        StopReading: a hard limit was broken.
    """
    bad: list[RowError] = []
    previous_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        reader = csv.reader(_lines(stream, bad), strict=True)
        try:
            header = next(reader, None)
        except csv.Error:
            header = None
        for error in bad:
            raise StopReading(error)
        positions = _check_header(header or [])
        width = len(positions) - positions.count(-1)
        in_order = positions == list(range(len(FIELDS)))
        line = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield from _take(bad)
                if "field limit" in str(exc):
                    raise StopReading(
                        RowError(
                            line + 1,
                            "row",
                            f"a field is longer than {MAX_FIELD_CHARS} characters "
                            "(MAX_FIELD_CHARS); is a quote left open?",
                        )
                    ) from None
                yield line + 1, f"is not valid CSV ({exc})"
                line = reader.line_num
                continue
            start, line = line + 1, reader.line_num
            if bad:
                yield from _take(bad)
            if not fields:
                continue
            if len(fields) != width:
                yield start, f"has {len(fields)} fields, the header has {width}"
            elif in_order:
                yield start, tuple(map(str.strip, fields))
            else:
                yield start, tuple([fields[i].strip() if i >= 0 else "" for i in positions])
        yield from _take(bad)
    finally:
        csv.field_size_limit(previous_limit)


def _take(bad: list[RowError]) -> Iterator[RawRow]:
    for error in bad:
        yield error.row, error.reason
    bad.clear()


def _json_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        if len(value) > MAX_FIELD_CHARS:
            raise _Bad(f"is longer than {MAX_FIELD_CHARS} characters (MAX_FIELD_CHARS)")
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    raise _Bad(f"is a JSON {type(value).__name__}, expected a string, number or boolean")


def _json_depth(line: str) -> int:
    # Linear; only called when the line has enough brackets to be too deep.
    depth = deepest = 0
    in_string = escaped = False
    for char in line:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def jsonl_rows(stream: BinaryIO) -> Generator[RawRow]:
    """Raw rows of a JSON Lines file, one object per line.

    Raises:
        StopReading: a hard limit was broken.
    """
    bad: list[RowError] = []
    for number, line in enumerate(_lines(stream, bad), start=1):
        if bad:
            yield from _take(bad)
            continue
        if not line.strip():
            continue
        if line.count("[") + line.count("{") > MAX_JSON_DEPTH:
            depth = _json_depth(line)
            if depth > MAX_JSON_DEPTH:
                yield (
                    number,
                    f"JSON is nested {depth} deep, at most {MAX_JSON_DEPTH} (MAX_JSON_DEPTH)",
                )
                continue
        try:
            # Decimal keeps an amount written as a JSON number exact.
            document = json.loads(line, parse_float=Decimal)
        except (ValueError, RecursionError) as exc:
            yield number, f"is not valid JSON ({exc})"
            continue
        if not isinstance(document, dict):
            yield number, "is not a JSON object"
            continue
        unknown = [name for name in document if name not in FIELDS]
        if unknown:
            yield number, f"has unknown field(s) {', '.join(map(_shown, unknown[:5]))}"
            continue
        try:
            yield number, tuple([_json_value(document.get(name)) for name in FIELDS])
        except _Bad as exc:
            yield number, f"a field {exc.args[0]}"


def reader_for(path: Path) -> Callable[[BinaryIO], Generator[RawRow]]:
    """The reader for the file's format, told by its extension.

    Raises:
        InvalidInput: the extension is not ``.csv``, ``.jsonl`` or ``.ndjson``.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return csv_rows
    if suffix in {".jsonl", ".ndjson"}:
        return jsonl_rows
    raise InvalidInput(f"cannot tell the format of {path.name}: name it .csv, .jsonl or .ndjson")
