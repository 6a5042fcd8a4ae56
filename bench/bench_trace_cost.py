"""Tracing (off) and JSON logs, their cost per verdict (16B): ``python -m bench.bench_trace_cost``.

Tracing is off unless asked for, so a verdict pays only the calls that find it
off: at the registry a span for the grant check, the log append and the
aggregation, and per agency a span and the metadata check of the fan-out; at
each node a span around the evaluation. Logging costs a verdict the lines the
servers write while answering it. Both are measured where they happen:

1. the tracing-off calls of one verdict, timed in this process (process CPU
   over a million verdicts' worth; counted for every agency of the federation,
   an upper bound: a blacklist verdict asks only the agencies holding blacklist
   records), and the same calls with tracing on (SDK, no exporter) beside them;
2. one JSON log line formatted and written (to /dev/null);
3. a dev federation (``credence dev up``: the registry and node processes with
   their default JSON logs, mutual TLS, SQLite) answering sequential single
   verdicts: CPU per verdict of the registry and the nodes together (process
   CPU, /proc), and the log lines all servers wrote meanwhile.

Printed: each cost per verdict and as a share of the verdict's CPU (goal: under
3 %). The process CPU of a federation on a shared machine is noisy; the
micro-figures are steadier, and the share takes the median of the rounds.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from bench.bench_registry import CpuMeter, OursSetup, single_verdicts, workload
from credence.dev import federation as dev_federation
from credence.ops import tracing
from credence.ops.log_format import JsonFormatter


def progress(message: str) -> None:
    """One line of progress on stdout."""
    print(message, flush=True)


def one_verdicts_tracing(agencies: int) -> None:
    """The tracing calls one single verdict makes, registry and nodes together."""
    with tracing.span("registry.grant_check"):
        pass
    with tracing.span("registry.log_append"):
        pass
    for _ in range(agencies):
        with tracing.span("registry.agency_call", agency="court"):
            tracing.outgoing_metadata()
        with tracing.span("node.evaluate"):
            pass
    with tracing.span("registry.aggregate"):
        pass


def tracing_us_per_verdict(agencies: int, verdicts: int) -> float:
    """Process CPU (us) of one verdict's tracing calls, as tracing is now set."""
    started = time.process_time()
    for _ in range(verdicts):
        one_verdicts_tracing(agencies)
    return (time.process_time() - started) * 1e6 / verdicts


def log_line_us(lines: int) -> float:
    """Process CPU (us) to format and write one JSON log line."""
    logger = logging.getLogger("bench.trace_cost")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started = time.process_time()
    for index in range(lines):
        logger.info("witness %s cosigned checkpoint of size %d", "court", index)
    spent = time.process_time() - started
    logger.removeHandler(handler)
    return spent * 1e6 / lines


def _log_lines(directory: Path) -> int:
    return sum(
        len(path.read_text(errors="replace").splitlines())
        for path in (directory / "logs").glob("*.log")
    )


def federation_rounds(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """CPU (us) per verdict of registry and nodes, and log lines per verdict, per round."""
    cpu_rounds: list[float] = []
    line_rounds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="credence-bench-trace-") as scratch:
        directory = Path(scratch) / "fed"
        try:
            progress(f"federation: {args.agencies} agencies, {args.subjects} subjects each")
            document = dev_federation.up(directory, agencies=args.agencies, subjects=args.subjects)
            ours = OursSetup.load(document)
            singles, _ = workload(ours.key, args.subjects, 0, seed=7)
            with ours.requester() as requester:
                single_verdicts(requester, singles, 30)  # warm-up: channels, caches
                for round_index in range(args.rounds):
                    lines = _log_lines(directory)
                    cpu = CpuMeter.of_federation(directory)
                    single_verdicts(requester, singles, args.single)
                    figures = cpu.report(f"round {round_index + 1}", args.single, "verdict")
                    nodes = sum(figures.per_node_us.values())
                    cpu_rounds.append(figures.registry_us + nodes)
                    line_rounds.append((_log_lines(directory) - lines) / args.single)
        finally:
            dev_federation.down(directory)
    return cpu_rounds, line_rounds


def main() -> None:
    """Measure and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agencies", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=2000, help="records per agency")
    parser.add_argument("--single", type=int, default=300, help="verdicts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro", type=int, default=200_000, help="verdicts' worth of calls")
    args = parser.parse_args()

    tracing.use_provider(None)
    off_us = statistics.median(tracing_us_per_verdict(args.agencies, args.micro) for _ in range(3))
    provider = TracerProvider()  # no exporter: the cost of making the spans alone
    tracing.use_provider(provider)
    on_us = statistics.median(
        tracing_us_per_verdict(args.agencies, args.micro // 20) for _ in range(3)
    )
    tracing.use_provider(None)
    provider.shutdown()
    line_us = statistics.median(log_line_us(50_000) for _ in range(3))
    progress(
        f"tracing off: {off_us:.2f} us per verdict ({args.agencies} agencies); "
        f"on (SDK, no exporter): {on_us:.1f} us; one JSON log line: {line_us:.2f} us"
    )

    cpu_rounds, line_rounds = federation_rounds(args)
    verdict_us = statistics.median(cpu_rounds)
    lines = statistics.median(line_rounds)
    logging_us = lines * line_us
    print("=" * 78)
    print(f"Single verdict, {args.agencies} agencies: registry + nodes CPU {verdict_us:,.0f} us "
          f"(median of {args.rounds} rounds of {args.single})")  # fmt: skip
    print(f"  tracing off          {off_us:>8.2f} us   {off_us / verdict_us:8.4%} of the verdict")
    print(f"  JSON logs            {logging_us:>8.2f} us   {logging_us / verdict_us:8.4%} "
          f"({lines:.3f} lines per verdict)")  # fmt: skip
    total = off_us + logging_us
    print(f"  both                 {total:>8.2f} us   {total / verdict_us:8.4%}   goal < 3 %")
    print(f"  (tracing on, spans without export: {on_us:.1f} us, {on_us / verdict_us:.2%})")
    print("=" * 78)


if __name__ == "__main__":
    main()
