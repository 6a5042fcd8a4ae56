"""A node's Prometheus metrics: queries by outcome and status, audit lag, alarms, imports.

Served by the node's own ``/metrics`` listener (``metrics_listen`` in
``node.toml``; :class:`credence.ops.metrics.MetricsListener`) beside the RPC
metrics and prometheus-client's process collector (CPU seconds, resident
memory). Queries are counted as the answer paths log them
(:func:`count_logged`), by outcome and gRPC status code name: a bounded set,
never the refusal's free text. The audit's figures and alarms are read from
the node's database when scraped (:func:`watch_node`), and a running import's
progress from the file the importer keeps beside its staging database
(:mod:`agency_node.import_progress`).

No label carries a subject reference, identifier, grant id or query id.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from agency_node.batch_store import LOG_COLUMNS, LogValues
from agency_node.import_progress import running_import
from agency_node.models import AuditAlarm, QueryLogEntry
from credence.clock import Clock
from credence.ops.metrics import MetricsListener
from credence.storage import reader, session_factory

_log = logging.getLogger(__name__)

__all__ = ["NodeMetrics", "count_logged", "count_query", "start_metrics", "watch_node"]

QUERIES = Counter(
    "credence_node_queries",
    "Queries (single and batch items) logged, by outcome (answered, refused) and "
    "gRPC status code name (OK when answered).",
    ["outcome", "code"],
)


_OUTCOME_AT = LOG_COLUMNS.index("outcome")
_CODE_AT = LOG_COLUMNS.index("status_code")


def count_query(outcome: str, code: str) -> None:
    """Count one logged query (the single path)."""
    QUERIES.labels(outcome, code).inc()


def count_logged(rows: Iterable[LogValues]) -> None:
    """Count query-log rows (in ``LOG_COLUMNS`` order) once written, by outcome and code."""
    tally = Tally((row[_OUTCOME_AT], row[_CODE_AT]) for row in rows)
    for (outcome, code), count in tally.items():
        QUERIES.labels(outcome, code).inc(count)


class _NodeSource:
    def __init__(self, engine: Engine, staging_dir: Path, clock: Clock) -> None:
        self.sessions = session_factory(engine)
        self.staging_dir = staging_dir
        self.clock = clock


class _NodeCollector(Collector):
    """The audit's and import's figures, read when scraped, of the node started last here."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: list[_NodeSource] = []

    def attach(self, source: _NodeSource) -> Callable[[], None]:
        with self._lock:
            self._sources.append(source)

        def detach() -> None:
            with self._lock:
                if source in self._sources:
                    self._sources.remove(source)

        return detach

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            source = self._sources[-1] if self._sources else None
        if source is None:
            return
        now = source.clock()
        unchecked = (
            QueryLogEntry.outcome == "answered",
            QueryLogEntry.entry_commitment.is_not(None),
            QueryLogEntry.inclusion_checked_at.is_(None),
        )
        with reader(source.sessions()) as session:
            count, oldest = session.execute(
                select(func.count(), func.min(QueryLogEntry.received_at)).where(*unchecked)
            ).one()
            alarms = session.execute(
                select(AuditAlarm.kind, func.count()).group_by(AuditAlarm.kind)
            ).all()
        yield GaugeMetricFamily(
            "credence_node_audit_unchecked_promises",
            "Answered queries whose log entry the audit has not yet found in the registry's log.",
            value=int(count or 0),
        )
        yield GaugeMetricFamily(
            "credence_node_audit_lag_seconds",
            "Age of the oldest answered query not yet found in the registry's log (0: none).",
            value=_age(now, oldest),
        )
        by_kind = CounterMetricFamily(
            "credence_node_audit_alarms",
            "Alarms the node's audit of the registry's log has raised, by kind.",
            labels=["kind"],
        )
        for kind, raised in alarms:
            by_kind.add_metric([str(kind)], int(raised))
        yield by_kind
        yield from _import_families(running_import(source.staging_dir))


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - then).total_seconds())


def _import_families(progress: dict[str, Any] | None) -> Iterator[Metric]:
    running = GaugeMetricFamily(
        "credence_node_import_running", "1 while an import into this node's database runs."
    )
    running.add_metric([], 0 if progress is None else 1)
    yield running
    if progress is None:
        return
    for name, key, help_text in (
        ("credence_node_import_bytes_done", "bytes_done", "Bytes of the running import read."),
        ("credence_node_import_bytes_total", "bytes_total", "Size of the running import's file."),
        ("credence_node_import_rows_done", "rows_done", "Rows of the running import checked."),
    ):
        value = progress.get(key)
        if isinstance(value, int):
            yield GaugeMetricFamily(name, help_text, value=value)


_NODE = _NodeCollector()
REGISTRY.register(_NODE)


def watch_node(engine: Engine, staging_dir: Path, clock: Clock) -> Callable[[], None]:
    """Serve this node's audit and import figures on ``/metrics``; call the result at stop."""
    return _NODE.attach(_NodeSource(engine, staging_dir, clock))


class NodeMetrics:
    """A node's ``/metrics`` listener and its database figures, until :meth:`stop`.

    Raises:
        InvalidInput: ``listen`` is not ``host:port``.
        OSError: ``listen`` cannot be listened on.
    """

    def __init__(self, listen: str, engine: Engine, staging_dir: Path, clock: Clock) -> None:
        self.listener = MetricsListener(listen)
        self._unwatch = watch_node(engine, staging_dir, clock)
        _log.info("metrics on %s", self.listener.url)

    def stop(self) -> None:
        """Stop serving ``/metrics``."""
        self.listener.stop()
        self._unwatch()


def start_metrics(
    listen: str, engine: Engine, staging_dir: Path, clock: Clock
) -> NodeMetrics | None:
    """The node's metrics on ``listen`` (``metrics_listen``), or None when it is empty.

    Raises:
        InvalidInput: ``listen`` is not ``host:port``.
        OSError: ``listen`` cannot be listened on.
    """
    return NodeMetrics(listen, engine, staging_dir, clock) if listen else None
