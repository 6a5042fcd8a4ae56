"""The observability flags every ``serve`` command takes: ``--log-format``, ``--otlp``, ..."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator

from credence.ops import tracing
from credence.ops.log_format import FORMATS, configure_logging

__all__ = ["add_observability_flags", "observed"]

_LEVELS = ("debug", "info", "warning", "error")


def add_observability_flags(parser: argparse.ArgumentParser, *, log_format: str) -> None:
    """Add ``--log-format``, ``--log-level``, ``--otlp`` and ``--trace-console`` to ``parser``.

    Args:
        parser: a command's parser.
        log_format: the default format (``json`` for servers, ``text`` for a terminal).
    """
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=log_format,
        help=f"one JSON object per line, or text (default {log_format})",
    )
    parser.add_argument("--log-level", choices=_LEVELS, default="info", help="default info")
    parser.add_argument(
        "--otlp",
        metavar="ENDPOINT",
        default=None,
        help="send traces to this OTLP/gRPC collector (else OTEL_EXPORTER_OTLP_ENDPOINT; "
        "none: tracing off)",
    )
    parser.add_argument(
        "--trace-console",
        action="store_true",
        help="print each trace span on stderr (also OTEL_TRACES_EXPORTER=console)",
    )


@contextlib.contextmanager
def observed(args: argparse.Namespace, service: str) -> Iterator[None]:
    """Logging and, if asked for, tracing from ``args`` and the environment, for a server's run.

    Leaving the block exports the spans still buffered.

    Args:
        args: parsed by a parser given :func:`add_observability_flags`.
        service: the trace's ``service.name`` (``credence-registry``, ``credence-node``).
    """
    configure_logging(args.log_format, level=getattr(logging, args.log_level.upper()))
    if tracing.configure(service, otlp=args.otlp, console=args.trace_console):
        logging.getLogger(__name__).info("tracing on for %s", service)
    try:
        yield
    finally:
        tracing.shutdown()
