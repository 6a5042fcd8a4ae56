"""The ``credence`` argparse tree as a list of runnable commands."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from credence.cli.app import build_parser


def leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """The full name of every runnable command under ``parser`` (aliases once)."""
    for action in parser._actions:  # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases share their parser
                    seen.add(id(sub))
                    yield from leaves(sub, (*prefix, name))
            return
    yield " ".join(prefix)


def all_commands() -> list[str]:
    """Every runnable ``credence`` command, by name (``node disputes list``, ``verify``)."""
    return sorted(leaves(build_parser()))
