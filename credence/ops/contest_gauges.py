"""The dispute clock's Prometheus gauges, the same for a node and for the registry.

``<prefix>_open_contests{age}`` counts open contests by age bucket
(:data:`credence.contest_clock.AGE_BUCKETS`, every bucket present) and
``<prefix>_overdue_contests`` those past their due date. No label carries a
contest id or a subject.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from credence.contest_clock import ContestAges

__all__ = ["contest_gauges"]


def contest_gauges(prefix: str, ages: ContestAges, *, whose: str, overdue: str) -> Iterator[Metric]:
    """The two gauges: ``whose`` names the contests, ``overdue`` what being overdue means."""
    by_age = GaugeMetricFamily(
        f"{prefix}_open_contests", f"{whose} still open, by age since filing.", labels=["age"]
    )
    for label, count in ages.by_age.items():
        by_age.add_metric([label], count)
    yield by_age
    yield GaugeMetricFamily(
        f"{prefix}_overdue_contests",
        f"Open contests past the manifest's deadline: {overdue}",
        value=ages.overdue,
    )
