"""A node's Prometheus metrics: queries by outcome and status, audit lag, alarms, imports.

Served by the node's own ``/metrics`` listener (``metrics_listen`` in
``node.toml``; :class:`credence.ops.metrics.MetricsListener`) beside the RPC
metrics and prometheus-client's process collector (CPU seconds, resident
memory). Queries are counted as the answer paths log them
(:func:`count_logged`), by outcome and gRPC status code name: a bounded set,
never the refusal's free text. The audit's lag and unchecked promises are its
latest pass's (no query of its own), alarms are read from the node's
database when scraped, and a running import's
progress from the file the importer keeps beside its staging database
(:mod:`agency_node.import_progress`). Open contests are read when scraped
too, by age bucket (:mod:`credence.contest_clock`), with how many are past
the manifest's deadline.

No label carries a subject reference, identifier, grant id or query id.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from agency_node.audit import AuditReport, AuditThread
from agency_node.batch_store import LOG_COLUMNS, LogValues
from agency_node.disputes import open_filings
from agency_node.import_progress import running_import
from agency_node.models import AuditAlarm
from credence.contest_clock import contest_ages
from credence.ops.contest_gauges import contest_gauges
from credence.ops.metrics import LatestServer, MetricsListener
from credence.storage import reader, session_factory

_log = logging.getLogger(__name__)

__all__ = ["NodeMetrics", "count_logged", "count_query", "start_metrics"]

QUERIES = Counter(
    "credence_node_queries",
    "Queries (single and batch items) logged, by outcome (answered, refused) and "
    "gRPC status code name (OK when answered).",
    ["outcome", "code"],
)


_OUTCOME_AT = LOG_COLUMNS.index("outcome")
_CODE_AT = LOG_COLUMNS.index("status_code")


#: QUERIES' children by (outcome, code), looked up once: labels() costs more than the count.
_QUERY_COUNTERS: dict[tuple[str, str], Any] = {}


def count_query(outcome: str, code: str) -> None:
    """Count one logged query (the single path)."""
    counter = _QUERY_COUNTERS.get((outcome, code))
    if counter is None:
        counter = _QUERY_COUNTERS[outcome, code] = QUERIES.labels(outcome, code)
    counter.inc()


def count_logged(rows: Iterable[LogValues]) -> None:
    """Count query-log rows (in ``LOG_COLUMNS`` order) once written, by outcome and code."""
    tally = Tally((row[_OUTCOME_AT], row[_CODE_AT]) for row in rows)
    for (outcome, code), count in tally.items():
        QUERIES.labels(outcome, code).inc(count)


class _NodeFigures(Collector):
    """The audit's, alarms' and import's figures of one node, read when scraped."""

    def __init__(self, engine: Engine, staging_dir: Path) -> None:
        self.sessions = session_factory(engine)
        self.staging_dir = staging_dir
        #: The audit's latest report, once the node audits the registry's log.
        self.audit: Callable[[], AuditReport | None] = lambda: None
        #: The manifest's contest deadline and the node's clock, once followed.
        self.contests: tuple[Callable[[], timedelta], Callable[[], datetime]] | None = None

    def collect(self) -> Iterator[Metric]:
        """The figures as they are now."""
        report = self.audit()
        if report is not None:
            yield GaugeMetricFamily(
                "credence_node_audit_unchecked_promises",
                "Answered queries whose log entry the audit has not yet found in the "
                "registry's log (as of its latest pass).",
                value=report.unchecked,
            )
            yield GaugeMetricFamily(
                "credence_node_audit_overdue_promises",
                "Of those, how many are past their merge delay.",
                value=report.overdue,
            )
            yield GaugeMetricFamily(
                "credence_node_audit_lag_seconds",
                "How long the oldest unchecked promise is past its merge delay (latest pass).",
                value=report.lag_seconds,
            )
        with reader(self.sessions()) as session:
            alarms = session.execute(
                select(AuditAlarm.kind, func.count()).group_by(AuditAlarm.kind)
            ).all()
        by_kind = CounterMetricFamily(
            "credence_node_audit_alarms",
            "Alarms the node's audit of the registry's log has raised, by kind.",
            labels=["kind"],
        )
        for kind, raised in alarms:
            by_kind.add_metric([str(kind)], int(raised))
        yield by_kind
        if self.contests is not None:
            yield from self._contest_families(*self.contests)
        yield from _import_families(running_import(self.staging_dir))

    def _contest_families(
        self, deadline: Callable[[], timedelta], clock: Callable[[], datetime]
    ) -> Iterator[Metric]:
        with reader(self.sessions()) as session:
            filings = open_filings(session).values()
        term, now = deadline(), clock()
        ages = contest_ages(((filed, filed + term) for filed in filings), now)
        yield from contest_gauges(
            "credence_node",
            ages,
            whose="Subjects' contests of this node's records",
            overdue="their records do not count in answers until resolved.",
        )


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


_NODE = LatestServer()
REGISTRY.register(_NODE)


class NodeMetrics:
    """A node's ``/metrics`` listener and its figures, until :meth:`stop`.

    Raises:
        InvalidInput: ``listen`` is not ``host:port``.
        OSError: ``listen`` cannot be listened on.
    """

    def __init__(
        self,
        listen: str,
        engine: Engine,
        staging_dir: Path,
        contests: tuple[Callable[[], timedelta], Callable[[], datetime]] | None = None,
    ) -> None:
        self.listener = MetricsListener(listen)
        self._figures = _NodeFigures(engine, staging_dir)
        # Open contests by age and overdue under (the manifest's deadline, the node's clock).
        self._figures.contests = contests
        self._detach = _NODE.attach(self._figures)
        _log.info("metrics on %s", self.listener.url)

    def follow_audit(self, auditor: AuditThread) -> None:
        """Show the lag and unchecked promises of ``auditor``'s latest pass."""
        self._figures.audit = lambda: auditor.last_report

    def stop(self) -> None:
        """Stop serving ``/metrics``."""
        self.listener.stop()
        self._detach()


def start_metrics(
    listen: str,
    engine: Engine,
    staging_dir: Path,
    contests: tuple[Callable[[], timedelta], Callable[[], datetime]] | None = None,
) -> NodeMetrics | None:
    """The node's metrics on ``listen`` (``metrics_listen``), or None when it is empty.

    ``contests`` (the manifest's contest deadline, the node's clock) adds the
    open contests by age and the overdue ones.

    Raises:
        InvalidInput: ``listen`` is not ``host:port``.
        OSError: ``listen`` cannot be listened on.
    """
    return NodeMetrics(listen, engine, staging_dir, contests) if listen else None
