"""Row keys every repository checks: subject references, certificate serials, new rows.

A subject reference is 64 lower-case hex digits; a certificate serial 1 to 40
hex digits, not zero. A new row's primary key decides a race between registry
processes.
"""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from central_registry.models import Base
from credence.errors import AlreadyExists, InvalidInput

__all__ = ["checked_serial", "checked_subject_ref", "insert_new"]

_REF_HEX = re.compile(r"[0-9a-f]{64}")
# RFC 5280 serials are at most 20 octets; hex without prefix or sign, as in the manifest.
_SERIAL_HEX = re.compile(r"[0-9a-f]{1,40}")
# Appends race only on PostgreSQL (SQLite has one writer); each lost race means


def checked_subject_ref(text: str) -> str:
    """``text`` as a subject reference: 64 hex digits, lower case.

    Raises:
        InvalidInput: it is not 64 hex digits.
    """
    ref = text.lower()
    if not _REF_HEX.fullmatch(ref):
        raise InvalidInput(f"subject reference must be 64 hex digits, got {text!r}")
    return ref


def checked_serial(text: str) -> str:
    """``text`` as a certificate serial: lower-case hex without prefix or leading zeros.

    Raises:
        InvalidInput: it is not 1 to 40 hex digits, or it is zero.
    """
    serial = text.lower().removeprefix("0x").lstrip("0") or "0"
    if not _SERIAL_HEX.fullmatch(serial) or serial == "0":
        raise InvalidInput(f"certificate serial must be 1 to 40 hex digits, not zero; got {text!r}")
    return serial


def insert_new(session: Session, row: Base, taken: str) -> None:
    """Insert ``row`` in a savepoint; a row with its primary key already refuses it.

    Raises:
        AlreadyExists: the key is taken; ``taken`` is the message.
    """
    # A savepoint keeps the caller's transaction usable after a refusal, and the
    # primary key decides a race between processes.
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise AlreadyExists(taken) from None
