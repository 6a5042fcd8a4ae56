"""Checking one row of an import: the fields, their parsers and the row checker.

Each parser returns the value or raises :class:`_Bad` with the reason; the
checker turns a row's raw fields into the column values of a ``records`` row,
with times in their staged form (:func:`stage_time`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from credence.encoding import format_time
from credence.errors import InvalidIdentifier, InvalidInput
from credence.import_format import REQUIRED_FIELDS
from credence.record_kinds import KINDS, STATUSES
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for

MAX_LISTED_ERRORS = 20
MAX_RECORD_ID = 128
#: An error line is cut to this many characters.
MAX_ERROR_CHARS = 200
#: Leading characters a spreadsheet reads as a formula (OWASP CSV injection);
#: ``--strict`` refuses identifiers and record ids that begin with one.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_MAX_MINOR = 2**63 - 1
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
        line = f"row {self.row}: {self.field}: {self.reason}"
        if len(line) > MAX_ERROR_CHARS:
            line = line[: MAX_ERROR_CHARS - 3] + "..."
        return line


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
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise _Bad(f"{_shown(text)} is out of range once converted to UTC") from None


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


#: A row as read: every field of :data:`credence.import_format.FIELDS` in order, "" when absent.
_Raw = tuple[str, ...]
# Distinct timestamps repeat a lot (most records carry a date); the memo of
# parsed and formatted times is dropped when it grows past this. 10,000
# checks as fast as 50,000 on the benchmark's file (times to the second never
# repeat, dates do) and keeps a worker ~20 MB smaller.
_MEMO_LIMIT = 10_000


class _RowChecker:
    """Turns one row's raw fields into the column values of a ``records`` row.

    This is the hot path of an import: required fields are checked inline
    and parsed times are memoised.
    """

    def __init__(
        self,
        key: PseudonymisationKey,
        now: datetime,
        hash_time: Callable[[datetime], str],
        *,
        strict: bool = False,
    ) -> None:
        self._key = key
        self._now = now
        self._hash_time = hash_time
        self._strict = strict
        self._stamp = stage_time(now)
        self._times: dict[str, datetime] = {}
        # (occurred_at, expires_at as given, kind) -> the stored and hashed
        # times: one look-up for most rows, whose times repeat.
        self._spans: dict[tuple[str, str, str], tuple[str, str, str, str]] = {}
        # Rows about one subject often come one after another: the last
        # identifier's reference is kept.
        self._last: tuple[str, SubjectRef] | None = None

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
        if self._strict:
            _refuse_formula("record_id", record_id, problems)
            _refuse_formula("identifier", identifier, problems)
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
        span = self._spans.get((occurred_text, expires_text, kind))
        if span is None:
            span = self._span(
                row,
                occurred_at,
                explicit,
                kind=kind,
                rehabilitation=rule.rehabilitation,
                errors=errors,
            )
            if span is None:
                return None
            if len(self._spans) >= _MEMO_LIMIT:
                self._spans.clear()
            self._spans[occurred_text, expires_text, kind] = span
        occurred_db, occurred_hash, expires_db, expires_hash = span
        subject_type = ref.subject_type.value
        # SHA-256 of the normalised row, not of the file's text: reformatting
        # a file (another date spelling, trailing zeros) is not a change. No
        # field can hold the separator (record ids are printable, the rest
        # come from fixed vocabularies or formats).
        digest = hashlib.sha256(
            ref.ref
            + f"{subject_type}\x1f{record_id}\x1f{kind}\x1f{category}\x1f{amount}\x1f"
            f"{currency}\x1f{status}\x1f{occurred_hash}\x1f{expires_hash}\x1f{days_overdue}\x1f"
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

    def _span(
        self,
        row: int,
        occurred_at: datetime,
        explicit: datetime | None,
        *,
        kind: str,
        rehabilitation: timedelta,
        errors: list[RowError],
    ) -> tuple[str, str, str, str] | None:
        """(occurred_at stored, hashed, expires_at stored, hashed), or None after an error."""
        # kinds.rehabilitation_end, inlined: its UTC checks cost more than the
        # rest of the row, and parsing already made these aware UTC.
        try:
            expires_at = occurred_at + rehabilitation
        except OverflowError:
            # Past year 9999: the explicit expiry (if any) is the earlier end.
            if explicit is None:
                errors.append(
                    RowError(
                        row,
                        "occurred_at",
                        f"{format_time(occurred_at)} plus the {kind} "
                        "period is past year 9999; give an expires_at",
                    )
                )
                return None
            expires_at = explicit
        if explicit is not None and explicit < expires_at:
            expires_at = explicit
        return (*self._db(occurred_at), *self._db(expires_at))

    def _subject(self, identifier: str, problems: list[tuple[str, str]]) -> SubjectRef | None:
        if not identifier:
            problems.append(("identifier", "is required"))
            return None
        if self._last is not None and self._last[0] == identifier:
            return self._last[1]
        try:
            ref = ref_for(self._key, identifier)
        except InvalidIdentifier as exc:
            # The message never repeats the identifier (credence.subjects).
            problems.append(("identifier", str(exc)))
            return None
        self._last = (identifier, ref)
        return ref

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

    def _db(self, when: datetime) -> tuple[str, str]:
        stored = stage_time(when)
        # On SQLite the hashed form is the stored one.
        return stored, stored if self._hash_time is stage_time else self._hash_time(when)


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


def _refuse_formula(name: str, text: str, problems: list[tuple[str, str]]) -> None:
    if text.startswith(FORMULA_PREFIXES):
        problems.append(
            (name, f"begins with {text[0]!r}, which a spreadsheet runs as a formula (--strict)")
        )


def stage_time(when: datetime) -> str:
    """How a time is staged and stored on SQLite: naive UTC with microseconds.

    What SQLAlchemy's SQLite DATETIME stores, so that UTCDateTime reads it
    back; the input is already UTC.
    """
    return when.isoformat(" ", "microseconds")[:26]


def postgres_hash_time(when: datetime) -> str:
    """How a time entered the content hash on PostgreSQL (the driver's datetime, as text)."""
    return str(when)
