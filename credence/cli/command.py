"""How every ``credence`` sub-command is built: one shape for all groups.

A command's one-line help is also its description; its example (or block of
examples) is shown as written, not reflowed; its handler and parser travel in
the parsed arguments (:func:`credence.cli.main` calls ``args.handler(args)``).
The server packages build their groups with these too (``credence node``,
``credence registry``); this module never imports them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

#: Example lines longer than this are folded with `` \\`` continuations.
EXAMPLE_WIDTH = 78
# A run of spaces inside a line: what a backslash-newline in a non-raw string
# literal leaves of a continuation (the backslash and newline vanish).
_JOINED = re.compile(r"(?<=\S) {3,}(?=-)")


def fold_example(line: str, width: int = EXAMPLE_WIDTH) -> list[str]:
    r"""One example line as shown: long command lines folded before an option.

    Only command lines (``credence ...``) are folded. A line joined by a lost
    continuation (a run of spaces before an option) is joined up cleanly; a
    line wider than ``width`` is broken before an option (with its value),
    each piece but the last ending in `` \``.

    Args:
        line: one line of an example block, with its indentation.
        width: the widest line to show.

    Returns:
        The lines to show in its place.
    """
    if not line.lstrip().startswith("credence ") or (
        len(line) <= width and not _JOINED.search(line)
    ):
        return [line]  # prose, comments and short commands are shown as written
    indent = line[: len(line) - len(line.lstrip())]
    pieces: list[str] = []
    for word in _JOINED.sub(" ", line.strip()).split(" "):
        if word.startswith("-") or not pieces:
            pieces.append(word)
        else:
            pieces[-1] += " " + word
    shown: list[str] = []
    current = indent + pieces[0]
    for piece in pieces[1:]:
        if len(current) + 1 + len(piece) + 2 > width:
            shown.append(current + " \\")
            current = indent + "    " + piece
        else:
            current += " " + piece
    shown.append(current)
    return shown


class ExampleFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written, long command lines folded (:func:`fold_example`)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # ``width`` is the terminal's; examples fold at EXAMPLE_WIDTH so that
        # they read the same everywhere and can be pasted.
        del width
        lines = [folded for line in text.splitlines() for folded in fold_example(line)]
        return "\n".join(indent + line for line in lines)


#: The sub-command group :func:`subcommands` returns.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: What a command runs: the parsed arguments in, the exit code out.
Handler: TypeAlias = Callable[[argparse.Namespace], int]


def subcommands(
    parser: argparse.ArgumentParser,
    examples: str,
    *,
    dest: str = "command",
    metavar: str = "COMMAND",
) -> Subcommands:
    """Give ``parser`` its examples and a required group of sub-commands.

    Args:
        parser: the group's parser (``credence me``, ``credence node disputes``).
        examples: the group's epilog, kept line by line.
        dest: where the chosen sub-command's name is stored.
        metavar: how the sub-command is named in the usage line.

    Returns:
        The group to add commands to with :func:`command`.
    """
    parser.epilog = examples
    parser.formatter_class = ExampleFormatter
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)


def command(
    group: Subcommands,
    name: str,
    help_text: str,
    example: str | None = None,
    *,
    handler: Handler | None = None,
    epilog: str | None = None,
    description: str | None = None,
    data_dir: str | None = None,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """Add one sub-command to ``group``.

    Args:
        group: from :func:`subcommands`.
        name: the command's name.
        help_text: one line; also the description unless ``description`` is given.
        example: one command line, shown under ``example:``.
        handler: what the command runs; the parser is passed along as
            ``args.parser`` so a handler can report bad usage with ``error()``.
        epilog: a block of examples shown as written, instead of ``example``.
        description: a longer description than ``help_text``.
        data_dir: when given, a required ``--dir`` with this help.
        aliases: other names for the command.

    Returns:
        The command's parser, to add its own arguments to.

    Raises:
        ValueError: both or neither of ``example`` and ``epilog`` are given.
    """
    if (example is None) == (epilog is None):
        raise ValueError(f"command {name!r}: give either an example or an epilog")
    sub = group.add_parser(
        name,
        aliases=list(aliases),
        help=help_text,
        description=description or help_text,
        epilog=epilog if example is None else f"example:\n  {example}",
        formatter_class=ExampleFormatter,
    )
    if data_dir is not None:
        sub.add_argument("--dir", type=Path, required=True, help=data_dir)
    if handler is not None:
        sub.set_defaults(handler=handler, parser=sub)
    return sub
