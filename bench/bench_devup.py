"""Start-up time: ``python -m bench.bench_devup [--agencies 8] [--runs 1]``.

Times ``credence dev up --agencies N`` and ``credence dev down`` on a fresh
directory, then ``make demo``'s story (``python -m credence.dev.demo``), each
as a user runs it (its own process, real servers), and prints each figure
beside its target (issue 12: ``dev up --agencies 8`` under 10 s, ``make demo``
under 20 s on a 2-core machine) with met or MISSED. A benchmark, not a test:
the figures depend on the machine and on what else runs on it; the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

TARGETS = {"dev up": 10.0, "dev down": None, "make demo": 20.0}


def _timed(args: Sequence[str | Path], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{result.stderr[-2000:]}")
    return elapsed


def _report(name: str, seconds: list[float]) -> None:
    best, worst = min(seconds), max(seconds)
    target = TARGETS[name]
    verdict = "" if target is None else f"target < {target:.0f} s: "
    if target is not None:
        verdict += "met" if worst < target else ("MISSED" if best >= target else "met once")
    runs = ", ".join(f"{value:.1f}" for value in seconds)
    print(f"{name:<10} {best:6.1f} s best  ({runs})  {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agencies", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1, help="repeat each measurement")
    args = parser.parse_args(argv)
    cli: list[str | Path] = ["-m", "credence.cli", "dev"]
    figures: dict[str, list[float]] = {name: [] for name in TARGETS}
    with tempfile.TemporaryDirectory(prefix="bench-devup-") as scratch:
        for run in range(args.runs):
            directory = Path(scratch) / f"fed-{run}"
            up = [*cli, "up", "--dir", directory, "--agencies", str(args.agencies)]
            try:
                figures["dev up"].append(_timed(up))
            finally:
                figures["dev down"].append(_timed([*cli, "down", "--dir", directory]))
            demo_tmp = Path(scratch) / f"demo-{run}"
            demo_tmp.mkdir()
            env = {**os.environ, "TMPDIR": str(demo_tmp)}
            figures["make demo"].append(_timed(["-m", "credence.dev.demo"], env=env))
    print(f"dev up --agencies {args.agencies}; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    for name, seconds in figures.items():
        _report(name, seconds)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
