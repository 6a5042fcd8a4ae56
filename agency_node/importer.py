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
booleans. Unknown columns are refused. Row numbers in errors are line numbers
(the CSV header is line 1).

The whole file is one transaction. Rows are streamed and written in chunks
of Core ``INSERT ... ON CONFLICT (record_id) DO UPDATE ... WHERE the content
hash differs``, so an unchanged row is neither rewritten nor counted as
updated. Every row is validated even after the first error; if any row is
invalid the transaction rolls back and :class:`ImportRefused` lists the first
:data:`MAX_LISTED_ERRORS` errors and the total. A duplicate ``record_id`` is
caught through a temporary table keyed by it, so memory stays flat however
large the file.

Checking a row (normalising and keying its identifier above all) costs about
as much as writing it, so on a machine with more than one CPU a worker
process checks chunks while this one reads the file and writes the chunk
before; at most a few chunks are in flight.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from agency_node.database import bump_record_generation, record_count
from agency_node.models import Record
from credence.encoding import format_time, require_utc
from credence.errors import InvalidIdentifier, InvalidInput
from credence.record_kinds import KINDS, STATUSES
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for

__all__ = [
    "CURRENCY_EXPONENTS",
    "FIELDS",
    "MAX_LISTED_ERRORS",
    "ImportRefused",
    "ImportReport",
    "RowError",
    "import_records",
    "purge_expired",
]

#: Every field a row may carry, in the order of the documented CSV header.
FIELDS = (
    "record_id",
    "identifier",
    "kind",
    "category",
    "amount",
    "currency",
    "status",
    "occurred_at",
    "expires_at",
    "disputed",
    "days_overdue",
)
REQUIRED_FIELDS = frozenset(
    {"record_id", "identifier", "kind", "category", "status", "occurred_at"}
)
MAX_LISTED_ERRORS = 20
MAX_RECORD_ID = 128
_MAX_MINOR = 2**63 - 1
# SQLite page cache during an import, in KiB.
_IMPORT_CACHE_KIB = 32 * 1024
# Errors are sorted and trimmed to the listed ones whenever this many pile up.
_ERROR_BUFFER = 1000
# How much of a bad value an error message repeats.
_SHOWN = 40

#: ISO 4217 alphabetic codes accepted, with their minor-unit exponents.
CURRENCY_EXPONENTS: Mapping[str, int] = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MOP": 2, "MXN": 2,
    "MYR": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2, "RUB": 2, "SAR": 2,
    "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "USD": 2, "VND": 0,
    "ZAR": 2,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RowError:
    """One reason one row was refused."""

    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.reason}"


class ImportRefused(InvalidInput):
    """The file had invalid rows; nothing was imported.

    Attributes:
        errors: the first :data:`MAX_LISTED_ERRORS` errors, by row.
        total_errors: how many errors the file had in all.
    """

    def __init__(self, errors: list[RowError], total_errors: int) -> None:
        lines = [str(error) for error in errors[:MAX_LISTED_ERRORS]]
        if total_errors > len(lines):
            lines.append(f"and {total_errors - len(lines)} more")
        noun = "error" if total_errors == 1 else "errors"
        super().__init__(
            f"import refused, nothing was imported ({total_errors} {noun}):\n" + "\n".join(lines)
        )
        self.errors = errors
        self.total_errors = total_errors


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: ``rows == inserted + updated + unchanged``."""

    rows: int
    inserted: int
    updated: int
    unchanged: int


_T = TypeVar("_T")


# --- field parsers: each returns the value or raises _Bad(reason) ---------


class _Bad(Exception):
    """A field's value broke a rule; the argument is the reason."""


def _shown(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "...")


def _parse_time(text: str) -> datetime:
    if "T" not in text and " " not in text:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise _Bad(f"{_shown(text)} is not an ISO 8601 date or date-time") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{_shown(text)} is not an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        raise _Bad(f"{_shown(text)} has no UTC offset; add Z or one like +08:00")
    return when.astimezone(UTC)


def _parse_amount(text: str, currency: str) -> int:
    whole, dot, fraction = text.partition(".")
    if not (whole.isdigit() and whole.isascii()) or (
        dot and not (fraction.isdigit() and fraction.isascii())
    ):
        raise _Bad(f"{_shown(text)} is not a non-negative decimal like 1234.56")
    exponent = CURRENCY_EXPONENTS[currency]
    fraction = fraction.rstrip("0")
    if len(fraction) > exponent:
        raise _Bad(f"{_shown(text)} has {len(fraction)} decimal places, {currency} has {exponent}")
    # Whole digits then the fraction padded to the exponent: the minor units.
    digits = whole + fraction.ljust(exponent, "0")
    if len(digits) > 19 or int(digits) > _MAX_MINOR:
        raise _Bad(f"{_shown(text)} is too large")
    return int(digits)


def _parse_currency(text: str) -> str:
    code = text.upper()
    if code not in CURRENCY_EXPONENTS:
        raise _Bad(
            f"{_shown(text)} is not a supported ISO 4217 currency code"
            f" (supported: {', '.join(CURRENCY_EXPONENTS)})"
        )
    return code


def _parse_disputed(text: str) -> bool:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise _Bad(f"{_shown(text)} is not true or false")


def _parse_days(text: str) -> int:
    if not (text.isdigit() and text.isascii()) or len(text) > 9:
        raise _Bad(f"{_shown(text)} is not a non-negative whole number of days")
    return int(text)


# --- one row ----------------------------------------------------------------


#: A row as read: every field of :data:`FIELDS` in order, "" when absent.
_Raw = tuple[str, ...]
# Distinct timestamps repeat a lot (most records carry a date); the memo of
# parsed and formatted times is dropped when it grows past this.
_MEMO_LIMIT = 50_000


class _RowChecker:
    """Turns one row's raw fields into the column values of a ``records`` row.

    This is the hot path of an import: required fields are checked inline
    and parsed times are memoised.
    """

    def __init__(
        self, key: PseudonymisationKey, now: datetime, to_db: Callable[[datetime], Any]
    ) -> None:
        self._key = key
        self._now = now
        self._to_db = to_db
        self._stamp = to_db(now)
        self._times: dict[str, datetime] = {}
        self._db_times: dict[datetime, Any] = {}

    def check(self, row: int, raw: _Raw, errors: list[RowError]) -> tuple[Any, ...] | None:
        """The row's values in :data:`_COLUMNS` order, ready for the driver.

        Returns None after appending the row's errors to ``errors``.
        """
        (
            record_id,
            identifier,
            kind,
            category,
            amount_text,
            currency_text,
            status,
            occurred_text,
            expires_text,
            disputed_text,
            days_text,
        ) = raw
        problems: list[tuple[str, str]] = []
        if not record_id or len(record_id) > MAX_RECORD_ID or not record_id.isprintable():
            _field("record_id", record_id, _parse_record_id, problems)
        ref = self._subject(identifier, problems)
        rule = KINDS.get(kind)
        if rule is None:
            _field("kind", kind, _parse_kind, problems)
            if not category:
                problems.append(("category", "is required"))
        elif category not in rule.categories:
            _category(category, kind, problems)
        if status not in STATUSES:
            _field("status", status, _parse_status, problems)
        occurred_at = self._time("occurred_at", occurred_text, problems)
        if occurred_at is not None and occurred_at > self._now:
            now = format_time(self._now)
            problems.append(
                ("occurred_at", f"{format_time(occurred_at)} is in the future (now {now})")
            )
        explicit = self._time("expires_at", expires_text, problems) if expires_text else None
        if explicit is not None and occurred_at is not None and explicit < occurred_at:
            problems.append(("expires_at", f"{format_time(explicit)} is before occurred_at"))
        amount, currency = (
            _money(amount_text, currency_text, problems)
            if amount_text or currency_text
            else (None, None)
        )
        disputed = (
            bool(_field("disputed", disputed_text, _parse_disputed, problems))
            if disputed_text
            else False
        )
        days_overdue = (
            _field("days_overdue", days_text, _parse_days, problems) if days_text else None
        )
        if problems or ref is None or rule is None or occurred_at is None:
            errors.extend([RowError(row, name, reason) for name, reason in problems])
            return None
        # kinds.rehabilitation_end, inlined: its UTC checks cost more than the
        # rest of the row, and parsing already made these aware UTC.
        expires_at = occurred_at + rule.rehabilitation
        if explicit is not None and explicit < expires_at:
            expires_at = explicit
        subject_type = ref.subject_type.value
        occurred_db = self._db(occurred_at)
        expires_db = self._db(expires_at)
        # SHA-256 of the normalised row, not of the file's text: reformatting
        # a file (another date spelling, trailing zeros) is not a change. No
        # field can hold the separator (record ids are printable, the rest
        # come from fixed vocabularies or formats).
        digest = hashlib.sha256(
            ref.ref
            + f"{subject_type}\x1f{record_id}\x1f{kind}\x1f{category}\x1f{amount}\x1f"
            f"{currency}\x1f{status}\x1f{occurred_db}\x1f{expires_db}\x1f{days_overdue}\x1f"
            f"{disputed:d}".encode()
        ).digest()
        values = (
            ref.ref,
            subject_type,
            record_id,
            kind,
            category,
            amount,
            currency,
            status,
            occurred_db,
            expires_db,
            days_overdue,
            disputed,
        )
        return (*values, digest, self._stamp)

    def _subject(self, identifier: str, problems: list[tuple[str, str]]) -> SubjectRef | None:
        if not identifier:
            problems.append(("identifier", "is required"))
            return None
        try:
            return ref_for(self._key, identifier)
        except InvalidIdentifier as exc:
            # The message never repeats the identifier (credence.subjects).
            problems.append(("identifier", str(exc)))
            return None

    def _time(self, name: str, text: str, problems: list[tuple[str, str]]) -> datetime | None:
        when = self._times.get(text)
        if when is None:
            when = _field(name, text, _parse_time, problems)
            if when is None:
                return None
            if len(self._times) >= _MEMO_LIMIT:
                self._times.clear()
            self._times[text] = when
        return when

    def _db(self, when: datetime) -> Any:
        value = self._db_times.get(when)
        if value is None:
            value = self._to_db(when)
            if len(self._db_times) >= _MEMO_LIMIT:
                self._db_times.clear()
            self._db_times[when] = value
        return value


def _field(
    name: str, text: str, parse: Callable[[str], _T], problems: list[tuple[str, str]]
) -> _T | None:
    if not text:
        if name in REQUIRED_FIELDS:
            problems.append((name, "is required"))
        return None
    try:
        return parse(text)
    except _Bad as exc:
        problems.append((name, str(exc.args[0])))
        return None


def _category(text: str, kind: str, problems: list[tuple[str, str]]) -> str | None:
    if not text:
        problems.append(("category", "is required"))
        return None
    allowed = KINDS[kind].categories
    if text not in allowed:
        problems.append(
            (
                "category",
                f"{_shown(text)} is not a {kind} category (allowed: {', '.join(sorted(allowed))})",
            )
        )
        return None
    return text


def _money(
    amount_text: str, currency_text: str, problems: list[tuple[str, str]]
) -> tuple[int | None, str | None]:
    currency = _field("currency", currency_text, _parse_currency, problems)
    if not amount_text:
        if currency_text:
            problems.append(("amount", "is required when currency is given"))
        return None, currency
    if not currency_text:
        problems.append(("currency", "is required when amount is given"))
        return None, None
    if currency is None:
        return None, None  # the currency's own error says what to fix
    try:
        return _parse_amount(amount_text, currency), currency
    except _Bad as exc:
        problems.append(("amount", str(exc.args[0])))
        return None, currency


def _parse_record_id(text: str) -> str:
    if len(text) > MAX_RECORD_ID:
        raise _Bad(f"is {len(text)} characters, at most {MAX_RECORD_ID}")
    if not text.isprintable():
        raise _Bad("contains a control character")
    return text


def _parse_kind(text: str) -> str:
    if text not in KINDS:
        raise _Bad(f"{_shown(text)} is not a known kind (known: {', '.join(KINDS)})")
    return text


def _parse_status(text: str) -> str:
    if text not in STATUSES:
        raise _Bad(f"{_shown(text)} is not a status (known: {', '.join(sorted(STATUSES))})")
    return text


# --- reading the file -------------------------------------------------------

# Each row is (line number, fields) or (line number, reason the row is unreadable).
_RawRow = tuple[int, "_Raw | str"]


def _header_error(reason: str) -> ImportRefused:
    return ImportRefused([RowError(1, "header", reason)], 1)


def _csv_rows(stream: BinaryIO) -> Generator[_RawRow]:
    # utf-8-sig: spreadsheets often write a byte order mark.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        header = next(reader, None)
        if not header:
            raise _header_error(
                f"the file is empty; the first line must name the columns: {FIELDS}"
            )
        names = [name.strip() for name in header]
        unknown = [name for name in names if name not in FIELDS]
        if unknown:
            raise _header_error(
                f"unknown column(s) {', '.join(map(_shown, unknown))} (known: {', '.join(FIELDS)})"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise _header_error(f"column(s) {', '.join(repeated)} appear more than once")
        missing = [name for name in FIELDS if name in REQUIRED_FIELDS and name not in names]
        if missing:
            raise _header_error(f"required column(s) missing: {', '.join(missing)}")
        width = len(names)
        # Where each of FIELDS sits in the file's rows (-1: column left out).
        positions = [names.index(name) if name in names else -1 for name in FIELDS]
        in_order = positions == list(range(len(FIELDS)))
        line = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line + 1, f"is not valid CSV ({exc})"
                line = reader.line_num
                continue
            start, line = line + 1, reader.line_num
            if not fields:
                continue
            if len(fields) != width:
                yield start, f"has {len(fields)} fields, the header has {width}"
                continue
            if in_order:
                yield start, tuple([value.strip() for value in fields])
            else:
                yield start, tuple([fields[i].strip() if i >= 0 else "" for i in positions])
    finally:
        # Leave the caller's binary stream open for it to close; a dropped
        # wrapper would otherwise close it again and warn.
        text.detach()


def _json_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    raise _Bad(f"is a JSON {type(value).__name__}, expected a string, number or boolean")


def _jsonl_rows(stream: BinaryIO) -> Generator[_RawRow]:
    for number, line in enumerate(stream, start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # noqa: PLW2901 - a byte order mark is not JSON
        if not line.strip():
            continue
        try:
            # Decimal keeps an amount written as a JSON number exact.
            document = json.loads(line, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            yield number, f"is not valid JSON ({exc})"
            continue
        if not isinstance(document, dict):
            yield number, "is not a JSON object"
            continue
        unknown = [name for name in document if name not in FIELDS]
        if unknown:
            yield number, f"has unknown field(s) {', '.join(map(_shown, unknown))}"
            continue
        try:
            yield number, tuple([_json_value(document.get(name)) for name in FIELDS])
        except _Bad as exc:
            yield number, f"a field {exc.args[0]}"


def _reader_for(path: Path) -> Callable[[BinaryIO], Generator[_RawRow]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows
    if suffix in {".jsonl", ".ndjson"}:
        return _jsonl_rows
    raise InvalidInput(f"cannot tell the format of {path.name}: name it .csv, .jsonl or .ndjson")


# --- writing ------------------------------------------------------------------

#: The ``records`` columns an import writes, in the order :class:`_RowChecker` gives them.
_COLUMNS = (
    "subject_ref",
    "subject_type",
    "record_id",
    "kind",
    "category",
    "amount_minor",
    "currency",
    "status",
    "occurred_at",
    "expires_at",
    "days_overdue",
    "disputed",
    "content_hash",
    "updated_at",
)


def _records_table() -> Table:
    return Record.__table__  # type: ignore[return-value]


def _sqlite_time(when: datetime) -> str:
    # What SQLAlchemy's SQLite DATETIME stores (naive UTC, microseconds),
    # so that UTCDateTime reads it back; the input is already UTC.
    return when.isoformat(" ", "microseconds")[:26]


def _same_time(when: datetime) -> datetime:
    return when


def _dialect_insert(dialect_name: str, table: Table) -> Any:
    # The one place with dialect-specific SQL: ON CONFLICT is spelled the same
    # by SQLite and PostgreSQL, but SQLAlchemy builds it per dialect.
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    raise InvalidInput(f"import supports SQLite and PostgreSQL databases, not {dialect_name}")


def _upsert_statement(dialect_name: str) -> Insert:
    table = _records_table()
    insert = _dialect_insert(dialect_name, table)
    excluded = insert.excluded
    statement: Insert = insert.on_conflict_do_update(
        index_elements=[table.c.record_id],
        set_={name: excluded[name] for name in _COLUMNS if name != "record_id"},
        # An unchanged row is not rewritten, so it does not count as updated.
        where=table.c.content_hash != excluded.content_hash,
    )
    return statement


def _seen_table() -> Table:
    # Temporary: private to the connection and gone with the transaction.
    return Table(
        "import_seen_record_ids",
        MetaData(),
        # No length: invalid rows' ids (too long ones too) are marked for the
        # duplicate check, and PostgreSQL, unlike SQLite, enforces a length.
        Column("record_id", String(), primary_key=True),
        Column("row", Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )


class _Prepared:
    """A Core statement compiled once for the connection's dialect, run by the driver.

    SQLAlchemy's per-parameter processing cost more than SQLite's insert
    itself; rows arrive already in the driver's types, so it is skipped.
    """

    def __init__(self, connection: Connection, statement: Insert, keys: tuple[str, ...]) -> None:
        compiled = statement.compile(dialect=connection.dialect, column_keys=list(keys))
        self._connection = connection
        self._sql = str(compiled)
        self._keys = keys
        self._order: list[int] | None = None
        if compiled.positional:
            order = [keys.index(name) for name in compiled.positiontup or ()]
            self._order = None if order == list(range(len(keys))) else order
            self._named = False
        else:
            self._named = True

    def run(self, rows: list[tuple[Any, ...]]) -> int:
        """Execute for every row; the number of rows the database changed."""
        params: list[Any] = rows
        if self._named:
            params = [dict(zip(self._keys, row, strict=True)) for row in rows]
        elif self._order is not None:
            params = [tuple(row[i] for i in self._order) for row in rows]
        return self._connection.exec_driver_sql(self._sql, params).rowcount


class _Writer:
    """Writes chunks in the caller's transaction and finds duplicate record ids."""

    def __init__(self, session: Session) -> None:
        self._connection = session.connection()
        dialect = self._connection.dialect.name
        self.to_db: Callable[[datetime], Any] = _sqlite_time if dialect == "sqlite" else _same_time
        self._seen = _seen_table()
        self._seen.create(self._connection)
        self._mark = _Prepared(
            self._connection,
            _dialect_insert(dialect, self._seen).on_conflict_do_nothing(),
            ("record_id", "row"),
        )
        self._upsert = _Prepared(self._connection, _upsert_statement(dialect), _COLUMNS)
        self.changed = 0
        self._restore: list[str] = []
        if dialect == "sqlite":
            self._limit_sqlite_memory()

    def _limit_sqlite_memory(self) -> None:
        # The serving engine maps the database into memory and keeps a large
        # page cache; every page an import touches would then stay resident
        # and memory would grow with the file. Restored by restore_settings().
        for pragma, value in (("mmap_size", 0), ("cache_size", -_IMPORT_CACHE_KIB)):
            current = self._connection.exec_driver_sql(f"PRAGMA {pragma}").scalar()
            self._restore.append(f"PRAGMA {pragma}={int(current or 0)}")
            self._connection.exec_driver_sql(f"PRAGMA {pragma}={value}")

    def count_records(self) -> int:
        return record_count(self._connection)

    def write(
        self, values: list[tuple[Any, ...]], marks: list[tuple[str, int]], *, upsert: bool
    ) -> list[RowError]:
        """Remember the chunk's record ids, then upsert its rows if asked and no id repeats.

        Returns:
            An error for each record id seen on an earlier row.
        """
        duplicates = self._duplicates(marks)
        if upsert and values and not duplicates:
            self.changed += self._upsert.run(values)
        return duplicates

    def _duplicates(self, marks: list[tuple[str, int]]) -> list[RowError]:
        if not marks or self._mark.run(marks) == len(marks):
            return []
        seen = self._seen.c
        rows = self._connection.execute(
            select(seen.record_id, seen.row).where(seen.record_id.in_([m[0] for m in marks]))
        )
        first: dict[str, int] = {row[0]: row[1] for row in rows}
        return [
            RowError(row, "record_id", f"duplicate of the one on row {first[record_id]}")
            for record_id, row in marks
            if first[record_id] != row
        ]

    def drop_seen(self) -> None:
        """Drop the temporary table (a rollback drops it too)."""
        self._seen.drop(self._connection)

    def restore_settings(self) -> None:
        """Put back the connection settings an import changed."""
        # Best effort: a broken connection must not hide the original error.
        with contextlib.suppress(DBAPIError):
            for statement in self._restore:
                self._connection.exec_driver_sql(statement)


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


@dataclass(slots=True)
class _Checked:
    """One chunk after checking: rows to write, ids to check for repeats, errors."""

    values: list[tuple[Any, ...]]
    marks: list[tuple[str, int]]
    errors: list[RowError]


def _check_chunk(checker: _RowChecker, items: list[_RawRow]) -> _Checked:
    checked = _Checked([], [], [])
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


def _init_worker(secret: bytes, now: datetime, to_db: Callable[[datetime], Any]) -> None:
    global _worker_checker  # noqa: PLW0603 - one checker per worker process, by design
    _worker_checker = _RowChecker(PseudonymisationKey.from_bytes(secret), now, to_db)


def _check_in_worker(items: list[_RawRow]) -> _Checked:
    if _worker_checker is None:
        raise RuntimeError("import worker was not initialised")
    return _check_chunk(_worker_checker, items)


def _chunks(rows: Iterator[_RawRow], chunk_size: int, errors: _Errors) -> Iterator[list[_RawRow]]:
    chunk: list[_RawRow] = []
    last = 1
    try:
        for item in rows:
            chunk.append(item)
            last = item[0]
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    except UnicodeDecodeError as exc:
        errors.add(RowError(last + 1, "row", f"is not UTF-8 text ({exc.reason})"))
    yield chunk


class _Run:
    """Checks chunks (here or in worker processes) and writes them in file order."""

    def __init__(self, writer: _Writer, errors: _Errors, on_chunk: Callable[[], None]) -> None:
        self._writer = writer
        self._errors = errors
        self._on_chunk = on_chunk
        self.rows = 0

    def _store(self, checked: _Checked) -> None:
        errors = self._errors
        errors.extend(checked.errors)
        # After the first error nothing more is written: it will all roll back.
        errors.extend(self._writer.write(checked.values, checked.marks, upsert=errors.total == 0))
        errors.trim()
        self._on_chunk()

    def here(self, chunks: Iterator[list[_RawRow]], checker: _RowChecker) -> None:
        for chunk in chunks:
            self.rows += len(chunk)
            self._store(_check_chunk(checker, chunk))

    def in_workers(
        self, chunks: Iterator[list[_RawRow]], pool: ProcessPoolExecutor, workers: int
    ) -> None:
        # Each worker has a chunk queued behind the one it is checking, while
        # this process reads the file and writes the chunk before.
        in_flight: deque[Future[_Checked]] = deque()
        depth = 2 * workers
        for chunk in chunks:
            self.rows += len(chunk)
            in_flight.append(pool.submit(_check_in_worker, chunk))
            if len(in_flight) > depth:
                self._store(in_flight.popleft().result())
        while in_flight:
            self._store(in_flight.popleft().result())


# --- the import ---------------------------------------------------------------

# Below this file size a worker process costs more to start than it saves.
_PARALLEL_MIN_BYTES = 4 * 1024 * 1024


def _worker_pool(
    workers: int, key: PseudonymisationKey, now: datetime, to_db: Callable[[datetime], Any]
) -> ProcessPoolExecutor:
    # spawn, not fork: forking a process that may hold gRPC or database
    # threads is unsafe. The key goes to the child over its private pipe.
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(key.secret, now, to_db),
    )


def import_records(
    session_factory: sessionmaker[Session],
    path: Path,
    pseudonymisation_key: PseudonymisationKey,
    *,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 5000,
    workers: int | None = None,
) -> ImportReport:
    """Validate every row of ``path`` and upsert them all, in one transaction.

    Args:
        session_factory: sessions on the node's database (schema current).
        path: a ``.csv``, ``.jsonl`` or ``.ndjson`` file (module docstring).
        pseudonymisation_key: the federation key that turns identifiers
            into subject references.
        now: the import time: no ``occurred_at`` may be later, and it is the
            ``updated_at`` of every row written. Defaults to the clock.
        progress: called after each chunk with (bytes read, file size).
        chunk_size: rows per database round trip.
        workers: processes that check rows while this one reads and writes;
            0 checks here. By default one when the machine has more than
            one CPU and the file is large enough to repay starting it.

    Returns:
        How many rows the file had and what happened to them.

    Raises:
        ImportRefused: a row (or the header) is invalid; the database is
            unchanged and the error lists the first 20 problems.
        InvalidInput: the file name has an unknown extension, or the
            database is neither SQLite nor PostgreSQL.
        OSError: the file cannot be read.
    """
    read = _reader_for(path)
    now = require_utc(now) if now is not None else datetime.now(UTC)
    total_bytes = path.stat().st_size
    errors = _Errors()
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) > 1 and total_bytes >= _PARALLEL_MIN_BYTES else 0
    with path.open("rb") as stream, session_factory() as session, session.begin():
        writer = _Writer(session)
        before = writer.count_records()

        def on_chunk() -> None:
            if progress is not None:
                progress(stream.tell(), total_bytes)

        run = _Run(writer, errors, on_chunk)
        rows = read(stream)
        try:
            chunks = _chunks(rows, chunk_size, errors)
            if workers:
                with _worker_pool(workers, pseudonymisation_key, now, writer.to_db) as pool:
                    run.in_workers(chunks, pool, workers)
            else:
                run.here(chunks, _RowChecker(pseudonymisation_key, now, writer.to_db))
            if errors.total:
                # Leaving the `with` by exception rolls the transaction back.
                raise errors.refused()
            inserted = writer.count_records() - before
            writer.drop_seen()
            if writer.changed:
                bump_record_generation(session)
        finally:
            # Close the reader while its file is still open, also on error.
            rows.close()
            writer.restore_settings()
    updated = writer.changed - inserted
    return ImportReport(run.rows, inserted, updated, run.rows - inserted - updated)


# --- maintenance and reads ----------------------------------------------------


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
