"""Arguments the requester's and the subject's commands share.

Argument types that refuse bad input at parse time (exit 2 with the reason),
the ``--as`` and ``--purpose`` options, and the files a command reads: a
token, a binding.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from credence import jws
from credence.errors import InvalidIdentifier, InvalidInput
from credence.names import KIND_NAMES, PURPOSE_NAMES
from credence.subjects import normalise

#: The federation file's roles a requester can act as (``--as``).
ROLES = ("company", "authority", "identity_verifier")


def identifier(text: str) -> str:
    """An argument type: a subject identifier that normalises.

    Raises:
        argparse.ArgumentTypeError: it does not.
    """
    try:
        normalise(text)
    except InvalidIdentifier as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def kinds(text: str) -> tuple[str, ...]:
    """An argument type: verdict kinds separated by commas.

    Raises:
        argparse.ArgumentTypeError: none, or one is unknown.
    """
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(names) - KIND_NAMES)
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name verdict kinds separated by commas, "
            f"from {', '.join(sorted(KIND_NAMES))}"
        )
    return names


def positive(text: str) -> int:
    """An argument type: a whole number of at least 1.

    Raises:
        argparse.ArgumentTypeError: it is not.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_role_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--as ROLE``: whose credentials of the federation file to use."""
    parser.add_argument(
        "--as",
        dest="role",
        choices=ROLES,
        default="company",
        help="whose credentials, from the federation file (default: company)",
    )


def add_purpose_option(
    parser: argparse.ArgumentParser, default: str | None, help_text: str
) -> None:
    """Add ``--purpose PURPOSE``, one of the federation's purposes."""
    parser.add_argument(
        "--purpose", choices=sorted(PURPOSE_NAMES), default=default, metavar="PURPOSE",
        help=f"{help_text} (one of {', '.join(sorted(PURPOSE_NAMES))})",
    )  # fmt: skip


def read_text(path: Path, what: str) -> str:
    """The stripped text of a file the caller named.

    Raises:
        InvalidInput: it cannot be read; the message names ``what`` it should be.
    """
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from exc


def read_binding(path: Path) -> tuple[str, str]:
    """A binding token and the subject reference (hex) it binds.

    Raises:
        InvalidInput: unreadable, or not a binding.
    """
    binding = read_text(path, "binding")
    claims = jws.parse_json_object(jws.parse_compact(binding).payload, "binding")
    subject = claims.get("sub")
    if not isinstance(subject, str):
        raise InvalidInput(f"{path} is not a binding (no 'sub' claim)")
    return binding, subject
