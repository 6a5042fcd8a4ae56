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
kind            yes       one of :data:`agency_node.kinds.KINDS`
category        yes       a category allowed for the kind
status          yes       one of :data:`agency_node.kinds.STATUSES`
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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping
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
from sqlalchemy.orm import Session, sessionmaker

from agency_node.database import bump_record_generation, iter_all_subject_refs, record_count
from agency_node.kinds import KINDS, STATUSES
from agency_node.models import Record
from credence.encoding import format_time, require_utc
from credence.errors import InvalidIdentifier, InvalidInput
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for

__all__ = [
    "CURRENCY_EXPONENTS",
    "FIELDS",
    "MAX_LISTED_ERRORS",
    "ImportRefused",
    "ImportReport",
    "RowError",
    "import_records",
    "iter_subject_refs",
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


class _RowChecker:
    """Turns one row's raw fields into the column values of a ``records`` row."""

    def __init__(
        self, key: PseudonymisationKey, now: datetime, to_db: Callable[[datetime], Any]
    ) -> None:
        self._key = key
        self._now = now
        self._to_db = to_db
        self._stamp = to_db(now)

    def check(
        self, row: int, raw: Mapping[str, str | None], errors: list[RowError]
    ) -> tuple[Any, ...] | None:
        """The row's values in :data:`_COLUMNS` order, ready for the driver.

        Returns None after appending the row's errors to ``errors``.
        """
        problems: list[tuple[str, str]] = []
        get = raw.get
        record_id = _field("record_id", get("record_id"), _parse_record_id, problems)
        ref = self._subject(get("identifier"), problems)
        kind = _field("kind", get("kind"), _parse_kind, problems)
        category = _category(get("category"), kind, problems)
        status = _field("status", get("status"), _parse_status, problems)
        occurred_at = _field("occurred_at", get("occurred_at"), _parse_time, problems)
        if occurred_at is not None and occurred_at > self._now:
            now = format_time(self._now)
            problems.append(
                ("occurred_at", f"{format_time(occurred_at)} is in the future (now {now})")
            )
        explicit = _field("expires_at", get("expires_at"), _parse_time, problems)
        if explicit is not None and occurred_at is not None and explicit < occurred_at:
            problems.append(("expires_at", f"{format_time(explicit)} is before occurred_at"))
        amount, currency = _money(get("amount"), get("currency"), problems)
        disputed = _field("disputed", get("disputed"), _parse_disputed, problems) or False
        days_overdue = _field("days_overdue", get("days_overdue"), _parse_days, problems)
        if (
            problems
            or record_id is None
            or ref is None
            or kind is None
            or category is None
            or status is None
            or occurred_at is None
        ):
            errors.extend(RowError(row, name, reason) for name, reason in problems)
            return None
        # kinds.rehabilitation_end, inlined: its UTC checks cost more than
        # the rest of the row, and parsing already made these aware UTC.
        expires_at = occurred_at + KINDS[kind].rehabilitation
        if explicit is not None and explicit < expires_at:
            expires_at = explicit
        subject_type = ref.subject_type.value
        to_db = self._to_db
        values = (
            ref.ref,
            subject_type,
            record_id,
            kind,
            category,
            amount,
            currency,
            status,
            to_db(occurred_at),
            to_db(expires_at),
            days_overdue,
            disputed,
        )
        # The normalised row, not the file's text: reformatting a file (other
        # date spelling, trailing zeros) does not count as a change.
        digest = hashlib.sha256(repr(values).encode()).digest()
        return (*values, digest, self._stamp)

    def _subject(
        self, identifier: str | None, problems: list[tuple[str, str]]
    ) -> SubjectRef | None:
        if not identifier:
            problems.append(("identifier", "is required"))
            return None
        try:
            return ref_for(self._key, identifier)
        except InvalidIdentifier as exc:
            # The message never repeats the identifier (credence.subjects).
            problems.append(("identifier", str(exc)))
            return None


def _field(
    name: str, text: str | None, parse: Callable[[str], _T], problems: list[tuple[str, str]]
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


def _category(text: str | None, kind: str | None, problems: list[tuple[str, str]]) -> str | None:
    if not text:
        problems.append(("category", "is required"))
        return None
    if kind is None:
        return text  # the kind's own error says what to fix first
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
    amount_text: str | None, currency_text: str | None, problems: list[tuple[str, str]]
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
_RawRow = tuple[int, "dict[str, str | None] | str"]


def _header_error(reason: str) -> ImportRefused:
    return ImportRefused([RowError(1, "header", reason)], 1)


def _csv_rows(stream: BinaryIO) -> Iterator[_RawRow]:
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
            yield start, {name: value.strip() for name, value in zip(names, fields, strict=True)}
    finally:
        # Leave the caller's binary stream open for it to close; a dropped
        # wrapper would otherwise close it again and warn.
        text.detach()


def _json_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value.strip() if value is not None else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    raise _Bad(f"is a JSON {type(value).__name__}, expected a string, number or boolean")


def _jsonl_rows(stream: BinaryIO) -> Iterator[_RawRow]:
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
            yield number, {name: _json_value(value) for name, value in document.items()}
        except _Bad as exc:
            yield number, f"a field {exc.args[0]}"


def _reader_for(path: Path) -> Callable[[BinaryIO], Iterator[_RawRow]]:
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
        Column("record_id", String(MAX_RECORD_ID), primary_key=True),
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

    def count_records(self) -> int:
        return record_count(self._connection)

    def mark(self, marks: list[tuple[str, int]], errors: list[RowError]) -> None:
        """Remember the chunk's record ids; append an error for each seen before."""
        if not marks or self._mark.run(marks) == len(marks):
            return
        ids = [record_id for record_id, _ in marks]
        seen = self._seen.c
        rows = self._connection.execute(
            select(seen.record_id, seen.row).where(seen.record_id.in_(ids))
        )
        first: dict[str, int] = dict(rows)
        for record_id, row in marks:
            if first[record_id] != row:
                errors.append(
                    RowError(row, "record_id", f"duplicate of the one on row {first[record_id]}")
                )

    def upsert(self, values: list[tuple[Any, ...]]) -> None:
        if values:
            self.changed += self._upsert.run(values)

    def close(self) -> None:
        self._seen.drop(self._connection)


# --- the import ---------------------------------------------------------------


def import_records(
    session_factory: sessionmaker[Session],
    path: Path,
    pseudonymisation_key: PseudonymisationKey,
    *,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 5000,
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
    errors: list[RowError] = []
    dropped = 0  # errors counted but no longer listed
    rows = 0
    with path.open("rb") as stream, session_factory() as session, session.begin():
        writer = _Writer(session)
        checker = _RowChecker(pseudonymisation_key, now, writer.to_db)
        before = writer.count_records()
        values: list[tuple[Any, ...]] = []
        marks: list[tuple[str, int]] = []

        def flush() -> None:
            nonlocal dropped
            writer.mark(marks, errors)
            # After the first error nothing more is written: it will all roll back.
            if not errors and not dropped:
                writer.upsert(values)
            values.clear()
            marks.clear()
            if len(errors) > _ERROR_BUFFER:
                # Every later error is on a later row: the first ones are final.
                errors.sort(key=_by_row)
                dropped += len(errors) - MAX_LISTED_ERRORS
                del errors[MAX_LISTED_ERRORS:]
            if progress is not None:
                progress(stream.tell(), total_bytes)

        try:
            for row, raw in read(stream):
                rows += 1
                if isinstance(raw, str):
                    errors.append(RowError(row, "row", raw))
                    continue
                record = checker.check(row, raw, errors)
                if record is not None:
                    values.append(record)
                    marks.append((record[2], row))
                else:
                    record_id = raw.get("record_id")
                    if record_id:
                        marks.append((record_id, row))
                if len(marks) >= chunk_size:
                    flush()
        except UnicodeDecodeError as exc:
            errors.append(RowError(rows + 2, "row", f"is not UTF-8 text ({exc.reason})"))
        flush()
        if errors or dropped:
            errors.sort(key=_by_row)
            # Leaving the `with` by exception rolls the transaction back.
            raise ImportRefused(errors[:MAX_LISTED_ERRORS], dropped + len(errors))
        inserted = writer.count_records() - before
        writer.close()
        if writer.changed:
            bump_record_generation(session)
    updated = writer.changed - inserted
    return ImportReport(rows, inserted, updated, rows - inserted - updated)


def _by_row(error: RowError) -> int:
    return error.row


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


def iter_subject_refs(session: Session, *, batch: int = 10_000) -> Iterator[bytes]:
    """Every distinct subject reference held, streamed (for a membership filter)."""
    return iter_all_subject_refs(session, batch=batch)
