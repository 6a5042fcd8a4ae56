"""The registry's Prometheus metrics: fan-out per agency, verdicts, screening rows, the log.

Served on the console's listener at ``/metrics`` (``console_listen``) beside
the RPC metrics of :mod:`credence.ops.metrics`. The fan-out's one hook
(:func:`agency_observer`) feeds both these metrics and the console's
:class:`~central_registry.agency_stats.AgencyStats`. :class:`CountedLookups`
counts verdicts by blacklist status and screening rows by outcome; the log's
size, appends and checkpoint ages are read from the database when scraped
(:func:`watch_log`), so the append path pays nothing for them; so are the
open contests, by age bucket, and how many are overdue, and the open reviews by age.

Label values: an agency's member id, a fixed status or outcome. No subject
reference, identifier, grant id or query id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select

from central_registry import contests, reviews, transparency
from central_registry.agency_stats import AgencyStats
from central_registry.fanout import Observe
from central_registry.lookups import Lookups
from central_registry.models import TreeHead
from credence.clock import Clock
from credence.contest_clock import contest_ages
from credence.errors import CredenceError
from credence.ops.contest_gauges import contest_gauges
from credence.ops.metrics import LATENCY_BUCKETS, LatestServer
from credence.storage import session_factory
from credence.transparency.checkpoint import parse_checkpoint
from credence.transparency.note import parse_note
from credence.v1 import common_pb2, registry_pb2

__all__ = ["CountedLookups", "agency_observer", "watch_log"]

FANOUT_SECONDS = Histogram(
    "credence_registry_fanout_seconds",
    "Time of each call to an agency's node (single or batch), slot wait included, by agency.",
    ["agency"],
    buckets=LATENCY_BUCKETS,
)
FANOUT_CALLS = Counter(
    "credence_registry_fanout_calls",
    "Calls to agencies' nodes by agency and outcome (ok, timeout, error, invalid).",
    ["agency", "outcome"],
)
VERDICTS = Counter(
    "credence_registry_verdicts",
    "Single-lookup verdicts signed, by blacklist status (none: a credit-only lookup).",
    ["status"],
)
SCREENING_ROWS = Counter(
    "credence_registry_screening_rows",
    "Screening rows answered, by outcome (verdict or refused).",
    ["outcome"],
)

_BLACKLIST_STATUS = {
    common_pb2.BLACKLIST_STATUS_UNSPECIFIED: "none",
    common_pb2.BLACKLIST_STATUS_CLEAR: "clear",
    common_pb2.BLACKLIST_STATUS_LISTED: "listed",
    common_pb2.BLACKLIST_STATUS_INCOMPLETE: "incomplete",
}


def agency_observer(stats: AgencyStats, clock: Clock, *, metrics: bool) -> Observe:
    """The fan-out's hook: each call feeds ``stats`` and, if ``metrics``, Prometheus."""
    if not metrics:
        return lambda agency, seconds, outcome: stats.observe(agency, seconds, outcome, clock())

    # Each agency's children looked up once: labels() costs more than the count.
    timings: dict[str, Any] = {}
    calls: dict[tuple[str, str], Any] = {}

    def observe(agency: str, seconds: float, outcome: str) -> None:
        stats.observe(agency, seconds, outcome, clock())
        timing = timings.get(agency)
        if timing is None:
            timing = timings[agency] = FANOUT_SECONDS.labels(agency)
        timing.observe(seconds)
        counter = calls.get((agency, outcome))
        if counter is None:
            counter = calls[agency, outcome] = FANOUT_CALLS.labels(agency, outcome)
        counter.inc()

    return observe


class CountedLookups(Lookups):
    """:class:`Lookups` that counts verdicts by status and screening rows by outcome."""

    async def request_verdict(
        self, requester: str, request: registry_pb2.RequestVerdictRequest
    ) -> registry_pb2.RequestVerdictResponse:
        """As :meth:`Lookups.request_verdict`, counting the verdict it signs.

        Raises:
            CredenceError: the lookup is refused (counted by the RPC metrics' status code).
        """
        response = await super().request_verdict(requester, request)
        verdict = registry_pb2.Verdict.FromString(response.verdict.payload)
        status = _BLACKLIST_STATUS.get(verdict.blacklist.status, "none")
        VERDICTS.labels(status).inc()
        return response

    async def screen_message(
        self, requester: str, message: registry_pb2.ScreenBatchRequest
    ) -> registry_pb2.ScreenBatchResponse:
        """As :meth:`Lookups.screen_message`, counting its rows by outcome.

        Raises:
            CredenceError: the whole message is refused (counted by the RPC metrics).
        """
        response = await super().screen_message(requester, message)
        refused = sum(1 for result in response.results if result.HasField("refusal"))
        if refused:
            SCREENING_ROWS.labels("refused").inc(refused)
        if len(response.results) > refused:
            SCREENING_ROWS.labels("verdict").inc(len(response.results) - refused)
        return response


class _LogFigures(Collector):
    """One registry's log figures, read from its database when scraped."""

    def __init__(self, engine: Engine, cosigned: Callable[[], bytes], clock: Clock) -> None:
        self.sessions = session_factory(engine)
        self.cosigned = cosigned
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        """The figures as they are now."""
        now = self.clock()
        cosigned_size = _checkpoint_size(self.cosigned())
        with self.sessions() as session:
            size = transparency.log_size(session)
            latest: datetime | None = session.scalar(
                select(TreeHead.signed_at).order_by(TreeHead.tree_size.desc()).limit(1)
            )
            cosigned_at = (
                session.scalar(
                    select(TreeHead.signed_at).where(TreeHead.tree_size == cosigned_size)
                )
                if cosigned_size is not None
                else None
            )
            ages = contest_ages(contests.open_clocks(session), now)
            review_ages = reviews.open_review_ages(session, now)
        yield from contest_gauges(
            "credence_registry",
            ages,
            whose="Subjects' contests",
            overdue="the agency's contested records do not count in verdicts until it "
            "resolves them.",
        )
        open_reviews = GaugeMetricFamily(
            "credence_registry_open_reviews",
            "Subjects' requests for human review not decided yet, by age since asked.",
            labels=["age"],
        )
        for label, count in review_ages.items():
            open_reviews.add_metric([label], count)
        yield open_reviews
        yield GaugeMetricFamily(
            "credence_registry_log_size_entries", "Entries in the transparency log.", value=size
        )
        yield CounterMetricFamily(
            "credence_registry_log_appends",
            "Entries ever appended to the transparency log (rate(): appends per second).",
            value=size,
        )
        if latest is not None:
            yield GaugeMetricFamily(
                "credence_registry_checkpoint_age_seconds",
                "Seconds since the registry last signed a checkpoint.",
                value=max(0.0, (now - latest).total_seconds()),
            )
        if cosigned_at is not None:
            yield GaugeMetricFamily(
                "credence_registry_cosigned_checkpoint_age_seconds",
                "Seconds since the registry signed the latest checkpoint its witnesses cosigned.",
                value=max(0.0, (now - cosigned_at).total_seconds()),
            )


def _checkpoint_size(note: bytes) -> int | None:
    if not note:
        return None
    try:
        return parse_checkpoint(parse_note(note).text).size
    except CredenceError:
        return None


_LOG = LatestServer()
REGISTRY.register(_LOG)


def watch_log(engine: Engine, cosigned: Callable[[], bytes], clock: Clock) -> Callable[[], None]:
    """Serve this registry's log figures on ``/metrics``; call the result when it stops."""
    return _LOG.attach(_LogFigures(engine, cosigned, clock))
