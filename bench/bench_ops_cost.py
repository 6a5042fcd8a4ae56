"""What the metrics cost on the lookup paths (issue 16A): ``python -m bench.bench_ops_cost``.

One federation (``credence dev up``: a registry and agency node processes,
mutual TLS, SQLite) answers the same workloads with Prometheus metrics on
(``metrics = true`` in ``registry.toml``, each node's ``metrics_listen`` set)
and off (``metrics = false``, ``metrics_listen = ""``), restarted between the
two on the same data, in rounds on, off, on, off... so that the machine's
drift lands on both. Workloads: sequential single verdicts and ScreenBatch
in messages of 1,000 subjects. Printed: CPU per verdict and per screened
subject of the registry and of the nodes together (process CPU from /proc),
for both settings, and the ratio on/off: the goal is under 1.03.

On a shared machine that ratio swings by more than the metrics cost (the
bench client's own CPU, which metrics do not touch, moves as much), so the
bench also times each metric's work where the lookup paths pay it, in this
process (the interceptor per call, the fan-out hook per agency call, a
verdict and a node query counted...), and adds them up per verdict and per
screened subject against the "off" CPU: the figure to judge the goal by.

A scrape costs the same whatever the load: after each "on" round every
``/metrics`` is scraped ``--scrapes`` times and its CPU per scrape printed
(the registry's, a node's), with what that makes per second when Prometheus
scrapes every 15 s (its default).

The federation is stopped whatever happens. Wall-clock figures on a shared
machine are noisy; CPU figures less so, and both are medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from agency_node.metrics import count_logged, count_query
from bench.bench_registry import CpuMeter, OursSetup, screen_all, single_verdicts, workload
from central_registry.agency_stats import AgencyStats
from central_registry.metrics import VERDICTS, agency_observer
from credence.clock import utc_now
from credence.dev import federation as dev_federation
from credence.ops.metrics import RpcMetricsInterceptor
from credence.v1 import registry_pb2

#: Prometheus's default scrape interval.
PROMETHEUS_INTERVAL_SECONDS = 15


def progress(message: str) -> None:
    """One line of progress on stdout."""
    print(message, flush=True)


def _set_metrics(document: dict[str, Any], on: bool) -> None:
    """Turn metrics on or off in every config file of a stopped federation."""
    registry = Path(document["registry"]["data_dir"]) / "registry.toml"
    text = re.sub(r"(?m)^metrics = .*$", f"metrics = {'true' if on else 'false'}",
                  registry.read_text())  # fmt: skip
    registry.write_text(text)
    for agency in document["agencies"]:
        config = Path(agency["data_dir"]) / "node.toml"
        address = agency["metrics_url"].removeprefix("http://").removesuffix("/metrics")
        listen = f'metrics_listen = "{address if on else ""}"'
        config.write_text(re.sub(r"(?m)^metrics_listen = .*$", listen, config.read_text()))


def _scrape_cost(document: dict[str, Any], directory: Path, scrapes: int) -> tuple[float, float]:
    """Scrape every /metrics ``scrapes`` times; CPU (us) per scrape at the registry and per node."""
    registry = document["registry"]
    context = ssl.create_default_context(cadata=Path(registry["ca_cert"]).read_text())
    urls = [registry["metrics_url"], *(agency["metrics_url"] for agency in document["agencies"])]
    cpu = CpuMeter.of_federation(directory)
    with httpx.Client(verify=context, timeout=30) as client:
        for _ in range(scrapes):
            for url in urls:
                client.get(url).raise_for_status()
    spent = cpu.report("scrapes", scrapes, "scrape of every /metrics", per_node=True)
    return spent.registry_us, statistics.mean(spent.per_node_us.values())


def _round(directory: Path, on: bool, args: argparse.Namespace) -> Figures:
    """Restart with metrics ``on`` or off; CPU (registry + nodes, us) per verdict and subject."""
    document = json.loads((directory / dev_federation.FEDERATION_FILE).read_text())
    dev_federation.down(directory)
    _set_metrics(document, on)
    dev_federation.up(directory)
    ours = OursSetup.load(document)
    singles, screened = workload(ours.key, args.subjects, args.screen, seed=7)
    with ours.requester() as requester:
        single_verdicts(requester, singles, 20)  # warm-up: channels, caches
        cpu = CpuMeter.of_federation(directory)
        single_verdicts(requester, singles, args.single)
        verdict = cpu.report(f"metrics {'on' if on else 'off'}", args.single, "verdict")
        screen_all(requester, screened, 1000)
        subject = cpu.report(f"metrics {'on' if on else 'off'}", len(screened), "subject")
    figures = Figures(
        verdict.registry_us + sum(verdict.per_node_us.values()),
        subject.registry_us + sum(subject.per_node_us.values()),
    )
    if on:
        figures.scrape_registry_us, figures.scrape_node_us = _scrape_cost(
            document, directory, args.scrapes
        )
    return figures


@dataclass
class Figures:
    """One round's CPU, in microseconds."""

    per_verdict: float
    per_subject: float
    #: One scrape of /metrics: the registry's CPU and a node's (mean of the nodes).
    scrape_registry_us: float = 0.0
    scrape_node_us: float = 0.0


# -- what each metric costs where it is paid, in this process ------------------------


class _Context:
    """Stands in for a grpc.aio servicer context: a call that ended without a status set."""

    def code(self) -> None:
        return None


@dataclass(frozen=True)
class _Details:
    """Stands in for grpc.HandlerCallDetails."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


def _cpu_per_call(step: Callable[[], object], calls: int) -> float:
    """Process CPU per call of ``step``, in microseconds (best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            step()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def _interceptor_us(calls: int) -> float:
    """What the RPC interceptor adds to one unary call: handler wrapping, timing, counting."""

    async def behaviour(request: bytes, _context: object) -> bytes:
        return request

    handler: Any = grpc.unary_unary_rpc_method_handler(behaviour)
    details: Any = _Details("/credence.v1.AgencyNodeService/AnswerQuery")
    interceptor = RpcMetricsInterceptor()
    context: Any = _Context()

    async def continuation(_details: grpc.HandlerCallDetails) -> Any:
        return handler

    async def plain() -> None:
        found = await continuation(details)
        await found.unary_unary(b"", context)

    async def counted() -> None:
        found: Any = await interceptor.intercept_service(continuation, details)
        await found.unary_unary(b"", context)

    loop = asyncio.new_event_loop()
    try:
        without = _cpu_per_call(lambda: loop.run_until_complete(plain()), calls)
        with_metrics = _cpu_per_call(lambda: loop.run_until_complete(counted()), calls)
    finally:
        loop.close()
    return max(0.0, with_metrics - without)


def micro(payload: bytes, calls: int) -> dict[str, float]:
    """CPU (us) of each metric's work where the lookup paths pay it."""
    stats = AgencyStats()
    plain_hook = agency_observer(stats, utc_now, metrics=False)
    metrics_hook = agency_observer(stats, utc_now, metrics=True)
    hook = _cpu_per_call(lambda: metrics_hook("court", 0.004, "ok"), calls) - _cpu_per_call(
        lambda: plain_hook("court", 0.004, "ok"), calls
    )
    verdict = _cpu_per_call(lambda: VERDICTS.labels(
        str(registry_pb2.Verdict.FromString(payload).blacklist.status)).inc(), calls)  # fmt: skip
    results = registry_pb2.ScreenBatchResponse()
    for index in range(1000):
        results.results.add(row_key=f"r{index}", verdict_index=index)
    row = _cpu_per_call(
        lambda: sum(1 for result in results.results if result.HasField("refusal")), calls // 100
    ) / len(results.results)
    rows = [("q", 0, "bank", "p", "k", None, "answered", "OK", "", None, None, None)] * 1000
    node_row = _cpu_per_call(lambda: count_logged(rows), calls // 100) / len(rows)
    return {
        "rpc interceptor, per call": _interceptor_us(calls),
        "fan-out hook (Prometheus part), per agency call": max(0.0, hook),
        "verdict counted (its payload parsed), per verdict": verdict,
        "node query counted, per query": _cpu_per_call(
            lambda: count_query("answered", "OK"), calls
        ),
        "screening row counted, per row": row,
        "node batch item counted, per item": node_row,
    }


def main() -> None:
    """Run the rounds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agencies", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=2000, help="records per agency")
    parser.add_argument("--single", type=int, default=300, help="verdicts per round")
    parser.add_argument("--screen", type=int, default=20_000, help="subjects screened per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each setting")
    parser.add_argument("--scrapes", type=int, default=20, help="scrapes timed per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="credence-bench-ops-") as scratch:
        directory = Path(scratch) / "fed"
        try:
            progress(f"federation: {args.agencies} agencies, {args.subjects} subjects each")
            dev_federation.up(directory, agencies=args.agencies, subjects=args.subjects)
            figures: dict[bool, list[Figures]] = {True: [], False: []}
            for index in range(args.rounds * 2):
                on = index % 2 == 0
                progress(f"round {index + 1}: metrics {'on' if on else 'off'}")
                figures[on].append(_round(directory, on, args))
            document = json.loads((directory / dev_federation.FEDERATION_FILE).read_text())
            ours = OursSetup.load(document)
            with ours.requester() as requester:
                payload = requester.verify_organisation(workload(ours.key, 1, 0, 7)[0][0])
        finally:
            dev_federation.down(directory)
    print("=" * 78)
    print("CPU of the registry and every node, median of the rounds (process CPU, /proc)")
    for unit, field_name in (("verdict", "per_verdict"), ("screened subject", "per_subject")):
        with_metrics = statistics.median(getattr(f, field_name) for f in figures[True])
        without = statistics.median(getattr(f, field_name) for f in figures[False])
        print(f"  per {unit:<17} metrics on {with_metrics:>9,.1f} us   off {without:>9,.1f} us"
              f"   on/off {with_metrics / without:.3f}")  # fmt: skip
    registry = statistics.median(f.scrape_registry_us for f in figures[True])
    node = statistics.median(f.scrape_node_us for f in figures[True])
    every = PROMETHEUS_INTERVAL_SECONDS
    print(f"  one scrape of /metrics: registry {registry / 1000:,.1f} ms, a node "
          f"{node / 1000:,.1f} ms (every {every} s: {registry / every:,.0f} and "
          f"{node / every:,.0f} us per second)")  # fmt: skip
    _print_micro(micro(payload.envelope.payload, 20_000), args.agencies, figures[False])
    print("=" * 78)


def _print_micro(costs: dict[str, float], agencies: int, without: list[Figures]) -> None:
    """Each metric's CPU where it is paid, and what they add up to per verdict and subject."""
    print(f"What each metric costs where it is paid (CPU, this process, {agencies} agencies):")
    for what, micros in costs.items():
        print(f"  {what:<52} {micros:6.2f} us")
    calls = list(costs.values())
    per_verdict = calls[0] * (1 + agencies) + (calls[1] + calls[3]) * agencies + calls[2]
    per_subject = calls[4] + calls[5] * agencies
    verdict_cpu = statistics.median(f.per_verdict for f in without)
    subject_cpu = statistics.median(f.per_subject for f in without)
    print(f"  added per verdict: {per_verdict:,.1f} us of {verdict_cpu:,.0f} us "
          f"({per_verdict / verdict_cpu:.2%}; goal under 3%)")  # fmt: skip
    print(f"  added per screened subject: {per_subject:,.2f} us of {subject_cpu:,.0f} us "
          f"({per_subject / subject_cpu:.2%}; goal under 3%)")  # fmt: skip


if __name__ == "__main__":
    main()
