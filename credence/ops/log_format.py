"""How the servers log: one JSON object per line (or plain text), on stderr.

``credence registry serve`` and ``credence node serve`` log JSON by default
(``--log-format text`` for a person at a terminal). Each line holds:

- ``ts``: the time, UTC, ISO 8601 with milliseconds and ``Z``;
- ``level``: DEBUG (chatter), INFO (routine: started, stopping, an enrolment),
  WARNING (a refused flood, once a minute; an audit alarm's cause),
  ERROR (an audit alarm, a failure an operator must look at);
- ``logger``: the module that logged it (``central_registry.screening``);
- ``msg``: the message;
- ``trace_id``: the current span's trace (32 hex digits), only when tracing is on;
- ``exc``: the exception's type and message, when one is logged.

Messages name members and agencies, never a subject: the code logs no
identifier, subject reference, grant id or query id (tests grep a whole
federation's logs for them). A traceback is reduced to the exception's type
and message, which the code writes for callers and so keeps free of subjects.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Literal

from credence.ops import tracing

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "configure_logging"]

LogFormat = Literal["json", "text"]
#: The values of ``--log-format``.
FORMATS: tuple[LogFormat, ...] = ("json", "text")


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _exception(record: logging.LogRecord) -> str | None:
    if record.exc_info is None or record.exc_info[1] is None:
        return None
    error = record.exc_info[1]
    return f"{type(error).__name__}: {error}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts level logger msg`` [``trace_id exc``]."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, str] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            line["trace_id"] = trace_id
        error = _exception(record)
        if error is not None:
            line["exc"] = error
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts level logger: msg`` (and ``[trace …]``, the exception's line) for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text."""
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            text += f" [trace {trace_id}]"
        error = _exception(record)
        if error is not None:
            text += f" ({error})"
        return text


class _CredenceHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


def configure_logging(
    log_format: LogFormat, *, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr), one per line.

    Called once at a server's edge; calling it again replaces the handler it
    installed before (and leaves any other handler alone).

    Returns:
        The handler installed on the root logger.

    Raises:
        ValueError: ``log_format`` is neither ``json`` nor ``text``.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {', '.join(FORMATS)}")
    handler = _CredenceHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CredenceHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
