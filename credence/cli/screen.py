"""``credence screen``: screen a CSV of organisations into a results file.

    credence screen IN.csv --out OUT.csv|OUT.jsonl [--resume]

Bad rows are written with the reason and the screen goes on; SIGINT or SIGTERM
stop sending, save the results of what was sent and exit 130, and ``--resume``
continues where it stopped without looking anyone up twice.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import add_purpose_option, add_role_option, kinds, positive
from credence.cli.progress import Progress
from credence.client.screening import screen_file

EXIT_INTERRUPTED = 130

EXAMPLES = """examples:
  credence screen suppliers.csv --out results.csv
  credence screen suppliers.csv --out results.jsonl --resume

The input has a header naming `identifier` and optionally `row_key` (default:
the line number). Bad rows are written with the reason; Ctrl-C stops sending,
saves the results of what was sent, and `--resume` continues where it stopped.
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``screen``'s arguments to its parser."""
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_federation_option(parser)
    add_role_option(parser)
    parser.add_argument("input", type=Path, metavar="FILE.csv", help="identifiers to screen")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="FILE",
        help="results file: .jsonl for JSON Lines, otherwise CSV",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true", help="skip rows already in --out and append the rest"
    )
    parser.add_argument(
        "--kinds", type=kinds, default=("blacklist",), metavar="K,...",
        help="verdict kinds (default blacklist)",
    )  # fmt: skip
    add_purpose_option(parser, "counterparty_verification", "why you screen")
    parser.add_argument(
        "--message-size", type=positive, default=500, metavar="N",
        help="rows per request message (default 500)",
    )  # fmt: skip
    parser.set_defaults(handler=_screen)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (a second SIGINT aborts at once)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _screen(args: argparse.Namespace) -> int:
    federation = Federation(args.federation)
    pseudonymisation = federation.pseudonymisation()
    stop = threading.Event()
    bar = Progress(sys.stderr, "screen", "rows")
    try:
        with federation.requester(args.role) as requester, _stop_on_signals(stop):
            summary = screen_file(
                requester,
                pseudonymisation,
                args.input,
                args.out,
                kinds=args.kinds,
                purpose=args.purpose,
                resume=args.resume,
                message_size=args.message_size,
                stop=stop,
                progress=lambda update: bar(update.done, update.total),
            )
    finally:
        bar.end()
    print(
        f"{summary.written} rows written to {args.out}: {summary.verdicts} verdicts, "
        f"{summary.refused} refused, {summary.invalid} invalid"
        + (f"; {summary.skipped} already there" if summary.skipped else "")
    )
    if summary.interrupted:
        print("interrupted: run the same command with --resume to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
