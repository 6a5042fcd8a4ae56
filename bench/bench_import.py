"""Import throughput and peak memory: ``python -m bench.bench_import --rows 1000000``.

Generates a realistic CSV in a temporary directory (mostly Chinese resident
identity numbers and unified social credit codes with valid check characters,
some generic ``nin:`` and ``reg:CN:`` identifiers; several records for some
subjects), imports it into a fresh SQLite database and prints rows per second
and peak memory against the targets of issues 3 and 13, each with "met" or
"MISSED": at least 50,000 rows/s at 1M rows and under 200 MB whatever the
file size. It also prints the CPU time per row of the importer and of its
worker, and the importer's split into its two phases (reading and checking
the file, until the last progress report; then applying the staged rows):
wall-clock rates on a shared machine vary with its load, CPU per row much
less.

By default the importer checks rows in one worker process on a machine
with more than one CPU (``--workers 0`` checks them in this process).

Peak memory is reported two ways: the process's peak resident set
(``ru_maxrss``: Python, SQLite's page cache, libraries; the worker's
separately) and, in a second
import into another fresh database, tracemalloc's peak of Python allocations
(tracemalloc slows Python down, so that run is not timed).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agency_node.database import create_engine_for, session_factory, upgrade_schema
from agency_node.importer import ImportReport, import_records
from credence.import_format import FIELDS
from credence.record_kinds import KINDS
from credence.subjects import PseudonymisationKey

TARGET_ROWS_PER_S = 50_000
TARGET_PEAK_MB = 200
NOW = datetime(2026, 11, 28, tzinfo=UTC)

_RID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RID_CHECK = "10X98765432"
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_REGIONS = ("110105", "310101", "440305", "330106", "510104", "350102")
_CURRENCIES = ("CNY",) * 8 + ("USD", "HKD", "JPY", "EUR")


def _cn_rid(rng: random.Random) -> str:
    birth = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))
    body = f"{rng.choice(_REGIONS)}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    total = sum(int(d) * w for d, w in zip(body, _RID_WEIGHTS, strict=True))
    return f"cn-rid:{body}{_RID_CHECK[total % 11]}"


def _cn_uscc(rng: random.Random) -> str:
    body = "91" + rng.choice(_REGIONS) + "".join(rng.choice(_USCC_ALPHABET) for _ in range(9))
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(body, _USCC_WEIGHTS, strict=True))
    return f"cn-uscc:{body}{_USCC_ALPHABET[-total % 31]}"


def _identifier(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.45:
        return _cn_rid(rng)
    if pick < 0.80:
        return _cn_uscc(rng)
    if pick < 0.90:
        return f"nin:{rng.randrange(10**11):011d}"
    return f"reg:CN:{rng.randrange(10**9):09d}"


def generate_csv(path: Path, rows: int, seed: int = 1) -> None:
    """Write ``rows`` valid records to ``path``, streaming."""
    rng = random.Random(seed)
    kinds = list(KINDS)
    categories = {kind: sorted(rule.categories) for kind, rule in KINDS.items()}
    identifier = _identifier(rng)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        for n in range(rows):
            # About 1.4 records per subject.
            if rng.random() < 0.7:
                identifier = _identifier(rng)
            kind = rng.choice(kinds)
            occurred = NOW - timedelta(days=rng.randrange(1, 365 * 4), seconds=rng.randrange(86400))
            occurred_text = (
                occurred.date().isoformat()
                if rng.random() < 0.7
                else occurred.astimezone().isoformat(timespec="seconds")
            )
            currency = (
                rng.choice(_CURRENCIES) if kind != "fraud_flag" and rng.random() < 0.85 else ""
            )
            amount = ""
            if currency == "JPY":
                amount = str(rng.randrange(1000, 50_000_000))
            elif currency:
                amount = f"{rng.randrange(10, 500_000)}.{rng.randrange(100):02d}"
            writer.writerow(
                [
                    f"SRC-{n:09d}",
                    identifier,
                    kind,
                    rng.choice(categories[kind]),
                    amount,
                    currency,
                    rng.choice(("active", "active", "active", "settled")),
                    occurred_text,
                    "",
                    "true" if rng.random() < 0.02 else "",
                    str(rng.randrange(1, 400)) if kind == "late_payment" else "",
                ]
            )


@dataclass(frozen=True)
class _Timed:
    report: ImportReport
    seconds: float
    #: CPU seconds of this process, and of the worker processes it waited for.
    cpu: float
    workers_cpu: float
    #: Seconds and this process's CPU seconds until the last progress report:
    #: the file read, checked and staged; applying takes the rest.
    checked_seconds: float
    checked_cpu: float


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _run_import(
    workdir: Path, name: str, source: Path, key: PseudonymisationKey, workers: int | None
) -> _Timed:
    engine = create_engine_for(f"sqlite:///{workdir / name}")
    try:
        upgrade_schema(engine)
        cpu = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        checked = [started, cpu[0]]

        def progress(_done: int, _total: int) -> None:
            checked[:] = time.perf_counter(), _cpu(resource.RUSAGE_SELF)

        report = import_records(
            session_factory(engine), source, key, now=NOW, workers=workers, progress=progress
        )
        return _Timed(
            report,
            time.perf_counter() - started,
            _cpu(resource.RUSAGE_SELF) - cpu[0],
            _cpu(resource.RUSAGE_CHILDREN) - cpu[1],
            checked[0] - started,
            checked[1] - cpu[0],
        )
    finally:
        engine.dispose()


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the second import")
    parser.add_argument(
        "--workers", type=int, default=None, help="checking processes (default: importer's choice)"
    )
    args = parser.parse_args(argv)

    key = PseudonymisationKey.generate()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        workdir = Path(tmp)
        source = workdir / "records.csv"
        started = time.perf_counter()
        generate_csv(source, args.rows)
        size_mb = source.stat().st_size / 1e6
        took = time.perf_counter() - started
        print(f"generated {args.rows:,} rows ({size_mb:.0f} MB) in {took:.1f} s")
        baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        timed = _run_import(workdir, "timed.db", source, key, args.workers)
        report = timed.report
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # The worker processes that checked rows, if the importer started any.
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rate = report.rows / timed.seconds
        db_mb = (workdir / "timed.db").stat().st_size / 1e6
        print(f"imported {report} in {timed.seconds:.1f} s; database {db_mb:.0f} MB")
        print(
            f"rows/s: {rate:,.0f} (target >= {TARGET_ROWS_PER_S:,}: "
            f"{rate / TARGET_ROWS_PER_S:.2f}x) {_verdict(rate >= TARGET_ROWS_PER_S)}"
        )
        print(
            f"peak RSS, importer: {peak_rss_mb:.0f} MB (before import {baseline_mb:.0f} MB; "
            f"target < {TARGET_PEAK_MB} MB: {peak_rss_mb / TARGET_PEAK_MB:.2f}x) "
            f"{_verdict(peak_rss_mb < TARGET_PEAK_MB)}"
        )
        if worker_mb:
            both = peak_rss_mb + worker_mb
            print(
                f"peak RSS, importer + worker: {both:.0f} MB (worker {worker_mb:.0f} MB; "
                f"target < {TARGET_PEAK_MB} MB: {both / TARGET_PEAK_MB:.2f}x) "
                f"{_verdict(both < TARGET_PEAK_MB)}"
            )
        # Wall-clock rates depend on what else the machine runs; CPU per row does not.
        per_row = 1e6 / report.rows
        print(
            f"CPU per row: importer {timed.cpu * per_row:.1f} us, workers "
            f"{timed.workers_cpu * per_row:.1f} us; wall {timed.seconds * per_row:.1f} us "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
        applying = timed.seconds - timed.checked_seconds, timed.cpu - timed.checked_cpu
        print(
            f"  reading and checking: wall {timed.checked_seconds * per_row:.1f} us, importer CPU "
            f"{timed.checked_cpu * per_row:.1f} us; applying: wall {applying[0] * per_row:.1f} us, "
            f"CPU {applying[1] * per_row:.1f} us"
        )
        if not args.no_tracemalloc:
            tracemalloc.start()
            _run_import(workdir, "traced.db", source, key, args.workers)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"tracemalloc peak (Python allocations): {peak / 1e6:.1f} MB "
                f"(target {TARGET_PEAK_MB} MB: {peak / 1e6 / TARGET_PEAK_MB:.2f}x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
