"""Flame graphs of every process of a running federation: ``make profile``.

Starts the benchmark's federation (:func:`credence.dev.federation.up`, 8
agencies), runs a load as the demo company (sequential single verdicts, then
a ScreenBatch), and samples each phase with py-spy (``record --native
--threads``: threads and C frames included, which cProfile of the event loop
does not see): the registry, every agency node and this client process. Each
phase and process gets a flame graph (SVG; ``--format speedscope`` for
speedscope files) in the folder printed at the end; the CPU each process
spent per unit of work is printed too (py-spy attached costs some).

py-spy needs ptrace rights over the processes it samples (root, or
``kernel.yama.ptrace_scope`` 0). The federation and every py-spy are stopped
whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.bench_registry import (
    CpuFigures,
    CpuMeter,
    OursSetup,
    progress,
    screen_all,
    single_verdicts,
    workload,
)
from credence.dev import federation as dev_federation
from credence.errors import FailedPrecondition

_SUFFIXES = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "collapsed.txt"}


def _py_spy() -> str:
    """The py-spy executable beside this interpreter, or on PATH.

    Raises:
        FailedPrecondition: py-spy is not installed.
    """
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise FailedPrecondition("py-spy is not installed: pip install -e '.[dev]' installs it")
    return found


def _targets(directory: Path, asked: Sequence[str]) -> dict[str, int]:
    """Process name -> pid of the registry, the ``asked`` nodes and this client."""
    processes = json.loads((directory / dev_federation.PROCESSES_FILE).read_text())
    targets = {"client": os.getpid()}
    for entry in processes:
        name = str(entry["name"])
        if name == "registry":
            targets[name] = int(entry["pid"])
        elif name in asked:
            targets[f"node-{name}"] = int(entry["pid"])
    return targets


def _asked(figures: CpuFigures) -> list[str]:
    """The nodes that worked for the lookups measured: those near the busiest one.

    A node whose records do not hold the asked kinds is not asked and spends
    next to nothing; sampling it would only load the machine.
    """
    busiest = figures.busiest_node_us
    return [name for name, micros in figures.per_node_us.items() if micros >= busiest / 4]


@contextlib.contextmanager
def _recording(
    py_spy: str,
    targets: dict[str, int],
    out: Path,
    phase: str,
    *,
    rate: int,
    fmt: str,
    native: bool,
) -> Iterator[None]:
    """Sample every target with py-spy while the block runs."""
    recorders: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = out / "py-spy-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for name, pid in targets.items():
            log = (logs / f"{phase}-{name}.log").open("wb")
            command = [
                py_spy, "record", "--pid", str(pid), "--threads", "--rate", str(rate),
                "--format", fmt, "--output", str(out / f"{phase}-{name}.{_SUFFIXES[fmt]}"),
                # Native frames need the process paused per sample; without
                # them py-spy samples without pausing and loads the machine less.
                *(["--native"] if native else ["--nonblocking"]),
            ]  # fmt: skip
            recorders.append(
                (name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
            )
            log.close()
        time.sleep(1.0)  # py-spy attaches before the load starts
        for name, recorder in recorders:
            if recorder.poll() is not None:
                raise FailedPrecondition(
                    f"py-spy could not sample {name} (exit {recorder.returncode}); see {logs}"
                )
        yield
    finally:
        for _, recorder in recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for _, recorder in recorders:
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()


def profile(
    directory: Path, out: Path, *, agencies: int, subjects: int, single: int, screen: int,
    message_size: int, rate: int, fmt: str, native: bool, seed: int,
) -> list[Path]:  # fmt: skip
    """Start the federation in ``directory``, profile each phase into ``out``.

    Returns:
        The profiles written (``fmt``: flamegraph SVGs or speedscope JSON).

    Raises:
        FailedPrecondition: py-spy is missing or could not attach.
    """
    py_spy = _py_spy()
    out.mkdir(parents=True, exist_ok=True)
    progress(f"starting a federation of {agencies} agencies in {directory}")
    try:
        document = dev_federation.up(
            directory, agencies=agencies, subjects=subjects, seed=seed,
            progress=lambda message: progress(f"  {message}"),
        )  # fmt: skip
        ours = OursSetup.load(document)
        singles, screened = workload(ours.key, subjects, screen, seed)
        cpu = CpuMeter.of_federation(directory)
        with ours.requester() as requester:
            single_verdicts(requester, singles, 30)  # warm-up: channels, caches
            asked = _asked(cpu.report("warm-up", 30, "verdict", per_node=True))
            targets = _targets(directory, asked)
            progress(f"sampling {', '.join(targets)}")
            phases: Sequence[tuple[str, int, str, Callable[[], object]]] = (
                ("single", single, "verdict",
                 lambda: single_verdicts(requester, singles, single)),
                ("screen", len(screened), "subject",
                 lambda: screen_all(requester, screened, message_size)),
            )  # fmt: skip
            for phase, units, unit, run in phases:
                progress(f"profiling {phase}: {units:,} {unit}s")
                cpu.report("between phases", 1, "mark")
                with _recording(py_spy, targets, out, phase, rate=rate, fmt=fmt, native=native):
                    run()
                cpu.report(f"{phase}, py-spy attached", units, unit, per_node=True)
    finally:
        progress("stopping the federation")
        dev_federation.down(directory)
    return sorted(out.glob(f"*.{_SUFFIXES[fmt]}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the profiles (default: a new one)")
    parser.add_argument("--agencies", type=int, default=8)
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--single", type=int, default=300, help="sequential verdicts")
    parser.add_argument("--screen", type=int, default=50_000, help="organisations screened")
    parser.add_argument("--message-size", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--format", choices=sorted(_SUFFIXES), default="flamegraph")
    parser.add_argument(
        "--no-native", dest="native", action="store_false",
        help="Python frames only, sampled without pausing the processes (lighter)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="credence-profile-"))).resolve()
    with tempfile.TemporaryDirectory(prefix="credence-profile-fed-") as scratch:
        written = profile(
            Path(scratch) / "federation", out, agencies=args.agencies, subjects=args.subjects,
            single=args.single, screen=args.screen, message_size=args.message_size,
            rate=args.rate, fmt=args.format, native=args.native, seed=args.seed,
        )  # fmt: skip
    print(f"\n{len(written)} profiles ({args.format}) in {out}")
    for path in written:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
