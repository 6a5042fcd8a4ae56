"""The registry's lookup benchmarks (issue 4, section 6): ``python -m bench.bench_registry``.

Three systems answer the same workloads, and every figure is printed with its
ratio to the target and to the other two:

* **ours**: a real federation from :func:`credence.dev.federation.up` with 8
  agency node processes (every signature, mutual TLS, SQLite per node, a
  registry process logging every lookup), asked by a company through
  :class:`credence.client.requester.Requester`, which verifies every verdict.
* **floor**: the bare fan-out (:mod:`bench.fanout_floor`): the same number of
  node processes and mutual TLS, no database, one signature per hop.
* **centralised**: every agency's records copied into one SQLite database,
  one process, no crypto, no network: a lookup is a SELECT by subject ref.

Workloads: single-verdict latency at concurrency 1 (p50 < 15 ms, p99 < 40 ms),
verdicts per second at concurrency 16 (>= 100/s), and ScreenBatch subjects
per second in messages of 1,000 (>= 20,000/s). Organisations are looked up on
the public-register basis, a mix of listed and clear ones.

The federation and every floor process are stopped whatever happens.
``--profile`` also runs the registry under cProfile for a short extra
workload (the registry is restarted for it) and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import json
import os
import pstats
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import fanout_floor
from bench.fanout_floor import FloorFigures, FloorNodes, percentile
from credence.client.requester import MemberCredentials, Requester, ScreenRow
from credence.dev import federation as dev_federation
from credence.dev import synthetic
from credence.errors import ResourceExhausted
from credence.keys import KeySet
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for

# Issue 4's absolute targets.
TARGET_P50_MS = 15.0
TARGET_P99_MS = 40.0
TARGET_RATE = 100.0
TARGET_SCREEN = 20_000.0
WARM_UP = 30

# Issue 13's targets: ratios to the floor with 8 nodes from the same run, and CPU.
FLOOR_P50_AT_MOST = 1.5
FLOOR_P99_AT_MOST = 2.0
FLOOR_RATE_AT_LEAST = 0.7
FLOOR_BATCH_AT_LEAST = 0.3

_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


@dataclass(frozen=True)
class Figures:
    """One system's figures on the three workloads."""

    p50_ms: float
    p99_ms: float
    rate: float
    subjects_per_s: float


@dataclass(frozen=True)
class CpuFigures:
    """CPU microseconds per unit of work: the client, the registry, the busiest node.

    The busiest node stands for "each asked node": a node that is not asked
    spends next to nothing, so the maximum is over the asked ones.
    """

    client_us: float
    registry_us: float
    busiest_node_us: float
    per_node_us: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OursCpu:
    """Our CPU per verdict (the c=1 phase) and per screened subject."""

    per_verdict: CpuFigures
    per_subject: CpuFigures


# CPU limits per verdict and per screened subject (microseconds).
VERDICT_CPU_LIMITS = CpuFigures(client_us=1_000, registry_us=4_000, busiest_node_us=1_500)
SUBJECT_CPU_LIMITS = CpuFigures(client_us=15, registry_us=60, busiest_node_us=15)


# -- ours -----------------------------------------------------------------------------


@dataclass
class OursSetup:
    """What a benchmark needs from a started federation to ask it as the demo company."""

    document: dict[str, Any]
    key: PseudonymisationKey
    root_keys: KeySet
    credentials: MemberCredentials

    @classmethod
    def load(cls, document: dict[str, Any]) -> OursSetup:
        company = document["company"]
        return cls(
            document,
            PseudonymisationKey.from_bytes(Path(document["pseudonymisation_key"]).read_bytes()),
            KeySet.from_jwks(json.loads(Path(document["registry"]["root_keys"]).read_text())),
            MemberCredentials.from_files(
                company["member_id"],
                key=Path(company["key"]),
                cert=Path(company["cert"]),
                ca=Path(document["registry"]["ca_cert"]),
                signing_key=Path(company["signing_key"]),
            ),
        )

    def requester(self, **kwargs: Any) -> Requester:
        """A requester for the demo company against the federation's registry."""
        return Requester(
            self.document["registry"]["address"], self.credentials, root_keys=self.root_keys,
            **kwargs,
        )  # fmt: skip


def single_verdicts(
    requester: Requester, subjects: Sequence[SubjectRef], count: int
) -> list[float]:
    """Ask ``count`` verdicts one after the other; their latencies in seconds."""
    statuses: collections.Counter[str | None] = collections.Counter()
    latencies = []
    for index in range(count):
        started = time.perf_counter()
        verified = requester.verify_organisation(subjects[index % len(subjects)])
        latencies.append(time.perf_counter() - started)
        statuses[verified.status] += 1
    progress(f"  statuses: {dict(statuses)}")
    return latencies


def _concurrent(
    ours: OursSetup, subjects: Sequence[SubjectRef], concurrency: int, calls: int
) -> tuple[float, int]:
    first = ours.requester()
    manifest = first.manifest()
    first.close()
    requesters = [ours.requester(manifest=manifest) for _ in range(concurrency)]
    indices = iter(range(calls))
    lock = threading.Lock()
    refused = [0]

    def worker(requester: Requester) -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            try:
                requester.verify_organisation(subjects[index % len(subjects)])
            except ResourceExhausted:
                with lock:
                    refused[0] += 1

    try:
        for requester in requesters:  # connect and handshake before timing
            requester.verify_organisation(subjects[0])
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(worker, requesters))
        elapsed = time.perf_counter() - started
    finally:
        for requester in requesters:
            requester.close()
    return (calls - refused[0]) / elapsed, refused[0]


def screen_all(requester: Requester, subjects: Sequence[SubjectRef], message_size: int) -> float:
    """Screen ``subjects`` in messages of ``message_size``; subjects per second."""
    rows = [ScreenRow(f"r{index}", subject) for index, subject in enumerate(subjects)]
    statuses: collections.Counter[str | None] = collections.Counter()
    started = time.perf_counter()
    for outcome in requester.screen(rows, message_size=message_size, timeout=600):
        statuses[outcome.verdict.status if outcome.verdict else "refused"] += 1
    elapsed = time.perf_counter() - started
    progress(f"  statuses: {dict(statuses)}")
    return len(rows) / elapsed


_TICKS = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by this process, the registry and the nodes between two marks."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._last = self._read()

    @classmethod
    def of_federation(cls, directory: Path) -> CpuMeter:
        """A meter over the registry and node processes of a federation ``dev up`` started."""
        processes = json.loads((directory / dev_federation.PROCESSES_FILE).read_text())
        return cls({str(entry["name"]): int(entry["pid"]) for entry in processes})

    def _read(self) -> dict[str, float]:
        times = {"client (bench)": sum(os.times()[:2]), "registry": 0.0, "nodes": 0.0}
        for name, pid in self._pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / _TICKS
            times[name if name == "registry" else f"node {name}"] = seconds
            if name != "registry":
                times["nodes"] += seconds
        return times

    def report(self, what: str, units: int, unit: str, *, per_node: bool = False) -> CpuFigures:
        """Print the CPU spent since the last mark, per ``unit``; return it in microseconds."""
        now = self._read()
        spent = {name: now[name] - self._last.get(name, 0.0) for name in now}
        self._last = now
        groups = ", ".join(
            f"{name} {spent[name] * 1e6 / units:,.0f} us"
            for name in ("client (bench)", "registry", "nodes")
        )
        progress(f"  CPU per {unit} ({what}): {groups}")
        per_node_us = {
            name[5:]: seconds * 1e6 / units
            for name, seconds in spent.items()
            if name.startswith("node ")
        }
        if per_node:
            nodes = ", ".join(f"{name} {micros:,.0f}" for name, micros in per_node_us.items())
            progress(f"    per node (us): {nodes}")
        return CpuFigures(
            client_us=spent["client (bench)"] * 1e6 / units,
            registry_us=spent["registry"] * 1e6 / units,
            busiest_node_us=max(per_node_us.values(), default=0.0),
            per_node_us=per_node_us,
        )


def measure_ours(
    ours: OursSetup,
    args: argparse.Namespace,
    singles: Sequence[SubjectRef],
    screened: Sequence[SubjectRef],
    cpu: CpuMeter,
) -> tuple[Figures, OursCpu, int]:
    """Our three workloads, our CPU, and how many agencies a verdict's coverage expects."""
    time.sleep(2.0)
    cpu.report("idle federation, 2 s", 2, "wall second", per_node=True)
    with ours.requester() as requester:
        progress(f"ours: warm-up ({WARM_UP} verdicts)")
        for subject in singles[:WARM_UP]:
            verified = requester.verify_organisation(subject)
        expected = int(verified.verdict.coverage.expected)
        progress(f"ours: {args.single} sequential verdicts (c=1); coverage expects {expected}")
        cpu.report("warm-up", WARM_UP, "verdict")
        latencies = single_verdicts(requester, singles, args.single)
        per_verdict = cpu.report("c=1", args.single, "verdict", per_node=True)
        progress(f"ours: {args.rate_calls} verdicts at c={args.concurrency}")
        rate, refused = _concurrent(ours, singles, args.concurrency, args.rate_calls)
        if refused:
            progress(f"  WARNING: {refused} calls refused by the rate limit (RESOURCE_EXHAUSTED)")
        cpu.report(f"c={args.concurrency}", args.rate_calls + args.concurrency, "verdict")
        progress(
            f"ours: ScreenBatch of {len(screened):,} organisations, {args.message_size}/message"
        )
        subjects_per_s = screen_all(requester, screened, args.message_size)
        per_subject = cpu.report("ScreenBatch", len(screened), "subject", per_node=True)
    figures = Figures(
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rate=rate,
        subjects_per_s=subjects_per_s,
    )
    return figures, OursCpu(per_verdict, per_subject), expected


# -- profile of the registry ------------------------------------------------------------


def profile_registry(
    directory: Path, ours: OursSetup, singles: Sequence[SubjectRef], screened: Sequence[SubjectRef],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """Restart the registry under cProfile, run a short workload, print its top functions."""
    processes = json.loads((directory / dev_federation.PROCESSES_FILE).read_text())
    entry = next(item for item in processes if item["name"] == "registry")
    pid = int(entry["pid"])
    progress(f"profile: stopping registry pid {pid}, restarting it under cProfile")
    os.kill(pid, signal.SIGTERM)
    while dev_federation.status(directory)[0]["running"]:
        time.sleep(0.05)
        dev_federation._reap(pid)  # the federation's own child
    stats_file = directory / "registry.prof"
    log = (directory / "logs" / "registry-profiled.log").open("ab")
    registry_dir = ours.document["registry"]["data_dir"]
    process = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(stats_file), "-m", "credence.cli",
         "registry", "serve", "--dir", registry_dir],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with ours.requester(timeout=2) as requester:
                    requester.verify_organisation(singles[0])
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        with ours.requester() as requester:
            progress("profile: 200 sequential verdicts")
            single_verdicts(requester, singles, 200)
            progress(f"profile: ScreenBatch of {len(screened):,}")
            screen_all(requester, screened, args.message_size)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    if stats_file.exists():
        print("\nregistry profile (cumulative, top 35):")
        pstats.Stats(str(stats_file)).sort_stats("cumulative").print_stats(35)
        print("registry profile (own time, top 25):")
        pstats.Stats(str(stats_file)).sort_stats("tottime").print_stats(25)
    else:
        progress("profile: the registry wrote no profile (it did not exit cleanly)")


# -- centralised -----------------------------------------------------------------------


def build_central(directory: Path, key: PseudonymisationKey, database: Path) -> int:
    """Copy every agency's records.csv into one SQLite table; returns the row count."""
    connection = sqlite3.connect(database)
    connection.execute(
        "CREATE TABLE records (agency TEXT, subject_ref BLOB, kind TEXT, category TEXT,"
        " amount TEXT, status TEXT, occurred_at TEXT, expires_at TEXT, disputed INTEGER,"
        " days_overdue INTEGER)"
    )
    rows = 0
    for path in sorted((directory / "agencies").glob("*/records.csv")):
        agency = path.parent.name
        with path.open(newline="", encoding="utf-8") as source:
            batch = [
                (
                    agency,
                    ref_for(key, row["identifier"]).ref,
                    row["kind"],
                    row["category"],
                    row["amount"],
                    row["status"],
                    row["occurred_at"],
                    row["expires_at"],
                    row["disputed"] == "true",
                    int(row["days_overdue"]) if row["days_overdue"] else None,
                )
                for row in csv.DictReader(source)
            ]
        connection.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
        rows += len(batch)
    connection.execute("CREATE INDEX records_subject ON records (subject_ref)")
    connection.commit()
    connection.close()
    return rows


_CENTRAL_COLUMNS = "agency, kind, category, status, occurred_at, expires_at, disputed"


def _in_sql(count: int) -> str:
    marks = ",".join("?" * count)
    return f"SELECT subject_ref, {_CENTRAL_COLUMNS} FROM records WHERE subject_ref IN ({marks})"


def measure_central(
    database: Path, singles: Sequence[SubjectRef], screened: Sequence[SubjectRef],
    count: int, message_size: int,
) -> Figures:  # fmt: skip
    """Lookups by subject ref in one process: latency, rate, and IN (message_size)."""
    connection = sqlite3.connect(database)
    try:
        sql = f"SELECT {_CENTRAL_COLUMNS} FROM records WHERE subject_ref = ?"
        for subject in singles[:WARM_UP]:
            connection.execute(sql, (subject.ref,)).fetchall()
        latencies = []
        started_all = time.perf_counter()
        for index in range(count):
            started = time.perf_counter()
            connection.execute(sql, (singles[index % len(singles)].ref,)).fetchall()
            latencies.append(time.perf_counter() - started)
        rate = count / (time.perf_counter() - started_all)
        refs = [subject.ref for subject in screened]
        started = time.perf_counter()
        for start in range(0, len(refs), message_size):
            chunk = refs[start : start + message_size]
            connection.execute(_in_sql(len(chunk)), chunk).fetchall()
        subjects_per_s = len(refs) / (time.perf_counter() - started)
    finally:
        connection.close()
    return Figures(
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rate=rate,
        subjects_per_s=subjects_per_s,
    )


# -- the report ------------------------------------------------------------------------


def _latency_ratio(ours: float, other: float) -> str:
    return f"{ours / other:8.2f}x  (ours takes {ours / other:.1f}x as long)"


def _rate_ratio(ours: float, other: float) -> str:
    return f"{ours / other:8.3f}   (the other does {other / ours:.1f}x as many)"


def report(
    ours: Figures, floors: Sequence[FloorFigures], central: Figures, expected: int,
    args: argparse.Namespace,
) -> None:  # fmt: skip
    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    print()
    print("=" * 78)
    print(
        f"Registry benchmark: {args.agencies} agency nodes, {args.subjects} subjects per "
        f"agency; a blacklist verdict's coverage expects {expected} agencies"
    )
    print("=" * 78)
    print("ours (federation: mTLS, every signature, SQLite per node, registry log):")
    print(
        f"  single verdict c=1   p50 {ours.p50_ms:8.2f} ms   target < {TARGET_P50_MS:.0f} ms"
        f"   ratio {ours.p50_ms / TARGET_P50_MS:.2f}   {verdict(ours.p50_ms < TARGET_P50_MS)}"
    )
    print(
        f"                       p99 {ours.p99_ms:8.2f} ms   target < {TARGET_P99_MS:.0f} ms"
        f"   ratio {ours.p99_ms / TARGET_P99_MS:.2f}   {verdict(ours.p99_ms < TARGET_P99_MS)}"
    )
    print(
        f"  verdicts c={args.concurrency:<2}        {ours.rate:8.1f} /s   target >= "
        f"{TARGET_RATE:.0f}/s  ratio {ours.rate / TARGET_RATE:.2f}   "
        f"{verdict(ours.rate >= TARGET_RATE)}"
    )
    print(
        f"  ScreenBatch       {ours.subjects_per_s:11,.0f} subj/s  target >= "
        f"{TARGET_SCREEN:,.0f}/s  ratio {ours.subjects_per_s / TARGET_SCREEN:.2f}   "
        f"{verdict(ours.subjects_per_s >= TARGET_SCREEN)}"
    )
    for floor in floors:
        print(f"floor (bare fan-out to {floor.fanout} nodes: mTLS, one signature per hop):")
        print(f"  single c=1  p50 {floor.p50_ms:8.2f} ms   p99 {floor.p99_ms:8.2f} ms")
        print(f"  rate c={args.concurrency:<2}  {floor.rate:8.1f} /s")
        print(f"  batch       {floor.subjects_per_s:11,.0f} subj/s")
        print(f"  ours / floor({floor.fanout}):")
        print(f"    p50         {_latency_ratio(ours.p50_ms, floor.p50_ms)}")
        print(f"    p99         {_latency_ratio(ours.p99_ms, floor.p99_ms)}")
        print(f"    rate        {_rate_ratio(ours.rate, floor.rate)}")
        print(f"    subjects/s  {_rate_ratio(ours.subjects_per_s, floor.subjects_per_s)}")
    print("centralised (one SQLite database, one process, no crypto, no network):")
    print(
        f"  lookup      p50 {central.p50_ms * 1000:8.1f} us   p99 {central.p99_ms * 1000:8.1f} us"
    )
    print(f"  lookups/s   {central.rate:11,.0f} (one at a time)")
    print(f"  batch       {central.subjects_per_s:11,.0f} subj/s (IN of {args.message_size})")
    print("  price of federation, ours / centralised:")
    print(f"    p50         {_latency_ratio(ours.p50_ms, central.p50_ms)}")
    print(f"    p99         {_latency_ratio(ours.p99_ms, central.p99_ms)}")
    print(f"    rate        {_rate_ratio(ours.rate, central.rate)}")
    print(f"    subjects/s  {_rate_ratio(ours.subjects_per_s, central.subjects_per_s)}")
    for floor in floors:
        print(f"  floor({floor.fanout}) / centralised:")
        print(f"    p50         {floor.p50_ms / central.p50_ms:8.1f}x")
        print(f"    rate        {floor.rate / central.rate:8.4f}")
        print(f"    subjects/s  {floor.subjects_per_s / central.subjects_per_s:8.4f}")
    print("=" * 78)


@dataclass(frozen=True)
class TargetLine:
    """One of issue 13's targets with the figure it is judged on."""

    name: str
    figure: str
    target: str
    met: bool


def target_lines(ours: Figures, cpu: OursCpu, floor: FloorFigures) -> list[TargetLine]:
    """Issue 13's targets, judged on this run's figures and its floor (8 nodes)."""
    p50 = ours.p50_ms / floor.p50_ms
    p99 = ours.p99_ms / floor.p99_ms
    rate = ours.rate / floor.rate
    batch = ours.subjects_per_s / floor.subjects_per_s
    lines = [
        TargetLine("single verdict p50 / floor", f"{p50:.2f}x", f"<= {FLOOR_P50_AT_MOST}x",
                   p50 <= FLOOR_P50_AT_MOST),
        TargetLine("single verdict p99 / floor", f"{p99:.2f}x", f"<= {FLOOR_P99_AT_MOST}x",
                   p99 <= FLOOR_P99_AT_MOST),
        TargetLine("verdicts/s c=16 / floor", f"{rate:.2f}x", f">= {FLOOR_RATE_AT_LEAST}x",
                   rate >= FLOOR_RATE_AT_LEAST),
        TargetLine("ScreenBatch subjects/s / floor batch", f"{batch:.3f}x",
                   f">= {FLOOR_BATCH_AT_LEAST}x", batch >= FLOOR_BATCH_AT_LEAST),
    ]  # fmt: skip
    for unit, measured, limits in (
        ("verdict", cpu.per_verdict, VERDICT_CPU_LIMITS),
        ("screened subject", cpu.per_subject, SUBJECT_CPU_LIMITS),
    ):
        for who, value, limit in (
            ("registry", measured.registry_us, limits.registry_us),
            ("each asked node", measured.busiest_node_us, limits.busiest_node_us),
            ("client", measured.client_us, limits.client_us),
        ):
            lines.append(
                TargetLine(
                    f"CPU per {unit}, {who}", f"{value:,.0f} us", f"<= {limit:,.0f} us",
                    value <= limit,
                )
            )  # fmt: skip
    return lines


def report_targets(ours: Figures, cpu: OursCpu, floor: FloorFigures) -> None:
    """Print issue 13's targets, each with its figure and "met" or "MISSED"."""
    print(f"issue 13 targets (ratios to the floor with {floor.fanout} nodes from this run;")
    print("CPU per verdict from the c=1 phase, per subject from ScreenBatch,")
    print("each asked node's CPU as the busiest node's):")
    for line in target_lines(ours, cpu, floor):
        print(
            f"  {line.name:<52} {line.figure:>10}   target {line.target:<11} "
            f"{'met' if line.met else 'MISSED'}"
        )
    print("=" * 78)


# -- main ------------------------------------------------------------------------------


def workload(
    key: PseudonymisationKey, subjects: int, screen: int, seed: int
) -> tuple[list[SubjectRef], list[SubjectRef]]:
    """The organisations asked one at a time, and the ones screened."""
    # Single lookups cycle through every synthetic organisation in a fixed
    # shuffled order (a tenth listed); screening takes the first `screen`
    # organisation numbers, most of them beyond the agencies' records.
    indices = list(range(subjects))
    random.Random(seed).shuffle(indices)
    singles = [ref_for(key, synthetic.organisation(index)) for index in indices]
    screened = [ref_for(key, synthetic.organisation(index)) for index in range(screen)]
    return singles, screened


def _run_floor(
    directory: Path, args: argparse.Namespace, fanouts: Sequence[int], singles: Sequence[SubjectRef]
) -> list[FloorFigures]:
    figures = []
    subjects = [subject.ref for subject in singles]
    directory.mkdir(parents=True, exist_ok=True)
    with FloorNodes(directory, args.agencies) as floor:
        progress(f"floor: {args.agencies} node processes up")
        # The floor's registry runs in this process: "client (bench)" is both.
        cpu = CpuMeter({node.name: node.process.pid for node in floor.nodes})
        for fanout in fanouts:
            progress(f"floor: fan-out to {fanout} nodes (c=1, c={args.concurrency}, batch)")

            def phase(name: str, units: int, fanout: int = fanout) -> None:
                unit = "subject" if name.startswith("batch") else "verdict"
                what = f"floor({fanout}) {name}; its registry is the bench process"
                cpu.report(what, units, unit, per_node=name in {"c=1", "batch"})

            figures.append(
                asyncio.run(
                    fanout_floor.measure(
                        floor.nodes[:fanout], floor.credentials(), subjects=subjects,
                        single=args.single, concurrency=args.concurrency,
                        rate_calls=args.rate_calls, screen=args.screen,
                        message_size=args.message_size, on_phase=phase,
                    )
                )
            )  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agencies", type=int, default=8)
    parser.add_argument("--subjects", type=int, default=2000, help="synthetic subjects per kind")
    parser.add_argument("--single", type=int, default=300, help="sequential verdicts at c=1")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate-calls", type=int, default=800, help="verdicts at --concurrency")
    parser.add_argument("--screen", type=int, default=100_000, help="organisations screened")
    parser.add_argument("--message-size", type=int, default=1000)
    parser.add_argument("--central-lookups", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="profile the registry too")
    parser.add_argument("--keep", type=Path, help="build the federation here and keep its files")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="credence-bench-") as scratch:
        work = args.keep.resolve() if args.keep else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        directory = work / "federation"
        progress(f"starting a federation of {args.agencies} agencies in {directory}")
        try:
            document = dev_federation.up(
                directory, agencies=args.agencies, subjects=args.subjects, seed=args.seed,
                progress=lambda message: progress(f"  {message}"),
            )  # fmt: skip
            ours_setup = OursSetup.load(document)
            progress("computing subject references")
            singles, screened = workload(ours_setup.key, args.subjects, args.screen, args.seed)
            cpu = CpuMeter.of_federation(directory)
            ours, ours_cpu, expected = measure_ours(ours_setup, args, singles, screened, cpu)
            if args.profile:
                profile_registry(directory, ours_setup, singles, screened[:20_000], args)
        finally:
            progress("stopping the federation")
            stubborn = dev_federation.down(directory)
            if stubborn:
                progress(f"  killed after SIGTERM: {stubborn}")
        fanouts = [args.agencies] if expected == args.agencies else [args.agencies, expected]
        floors = _run_floor(work / "floor", args, fanouts, singles)
        progress("centralised: copying every agency's records into one SQLite database")
        rows = build_central(directory, ours_setup.key, work / "central.db")
        progress(f"centralised: {rows:,} records; measuring")
        central = measure_central(
            work / "central.db", singles, screened, args.central_lookups, args.message_size
        )
        report(ours, floors, central, expected, args)
        report_targets(ours, ours_cpu, floors[0])
        progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
