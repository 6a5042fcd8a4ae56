"""``credence dev ...``: a complete federation on loopback in one command.

credence dev up     --dir DIR [--agencies N] [--subjects M] [--seed S]
credence dev status --dir DIR
credence dev down   --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from typing import TextIO

from credence.cli.command import command, subcommands
from credence.dev import federation as dev_federation

EXAMPLES = """examples:
  credence dev up --dir ./demo --agencies 3
  credence verify reg:CN:ORG000001 --federation ./demo/federation.json
  credence dev down --dir ./demo
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``dev`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)
    up = command(
        commands,
        "up",
        "start a registry and N agency nodes on loopback, with synthetic records",
        "credence dev up --dir ./demo --agencies 3 --subjects 200",
        description="start a registry and N agency nodes on loopback, each its own process "
        "with its own SQLite database and real mutual TLS; enrol a demo company, authority "
        "and identity verifier; write DIR/federation.json. In the directory of a stopped "
        "federation, start it again with its data",
        data_dir="where everything goes",
        handler=_up,
    )
    up.add_argument(
        "--agencies",
        type=int,
        default=3,
        help=f"agency nodes, 1..{dev_federation.MAX_AGENCIES} (a court, a tax office, a bank, ...)",
    )
    up.add_argument("--subjects", type=int, default=200, help="synthetic subjects per agency")
    up.add_argument("--seed", type=int, default=7, help="the same seed gives the same records")
    up.add_argument("--json", action="store_true", help="print federation.json when done")
    command(
        commands, "status", "show the federation's processes",
        "credence dev status --dir ./demo", data_dir="the federation's directory", handler=_status,
    )  # fmt: skip
    command(
        commands, "down", "stop every process `dev up` started",
        "credence dev down --dir ./demo", data_dir="the federation's directory", handler=_down,
    )  # fmt: skip


class Progress:
    """The current step on stderr: one updating line on a terminal, else a line every few seconds.

    Off a terminal a new step is printed at once when the last line is older
    than ``every`` seconds, and a step that lasts is repeated with its elapsed
    time, so a log shows that work goes on without a line per tick.
    """

    def __init__(self, stream: TextIO, *, every: float = 3.0) -> None:
        self._stream = stream  # held: the steps themselves may redirect sys.stderr
        self._tty = stream.isatty()
        self._every = every
        self._started = time.monotonic()
        self._message = ""
        self._printed_at = -every
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="dev-up-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._ticker.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._ticker.join()
        if self._tty and self._message:
            self._write("\r\033[K")

    def __call__(self, message: str) -> None:
        """Report the step now under way."""
        with self._lock:
            self._message = message
            if self._tty or time.monotonic() - self._printed_at >= self._every:
                self._show()

    def _tick(self) -> None:
        while not self._stopping.wait(0.5 if self._tty else self._every / 3):
            with self._lock:
                if self._message and (
                    self._tty or time.monotonic() - self._printed_at >= self._every
                ):
                    self._show()

    def _show(self) -> None:
        line = f"[{time.monotonic() - self._started:5.1f}s] {self._message}"
        self._write(f"\r\033[K{line}" if self._tty else f"{line}\n")
        self._printed_at = time.monotonic()

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):  # a closed pipe must not stop the federation
            self._stream.write(text)
            self._stream.flush()


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    restarting = dev_federation.is_stopped(args.dir)
    with Progress(sys.stderr) as progress:
        federation = dev_federation.up(
            args.dir,
            agencies=args.agencies,
            subjects=args.subjects,
            seed=args.seed,
            progress=progress,
        )
    if args.json:
        print(json.dumps(federation, indent=2))
    else:
        path = args.dir.resolve() / dev_federation.FEDERATION_FILE
        what = "stopped federation restarted with its data" if restarting else "federation up"
        print(f"{what} in {time.monotonic() - started:.1f}s: {path}")
        registry = federation["registry"]
        print(f"  registry  {registry['address']} (public {registry['public_address']}, "
              f"{registry['http_url']})")  # fmt: skip
        if "console_url" in registry:  # a federation made before the console had none
            print(f"  console   {registry['console_url']} "
                  f"(log in with the token in {registry['admin_token']})")  # fmt: skip
        if "metrics_url" in registry:  # nor metrics
            print(f"  metrics   {registry['metrics_url']} (registry)")
        for agency in federation["agencies"]:
            print(f"  agency    {agency['member_id']:<12} {agency['address']}  "
                  f"{', '.join(agency['kinds'])}")  # fmt: skip
        for agency in federation["agencies"]:
            if "metrics_url" in agency:
                print(f"  metrics   {agency['metrics_url']} ({agency['member_id']})")
        print(f"try: credence verify {federation['samples']['listed_organisation'][0]} "
              f"--federation {path}")  # fmt: skip
    return 0


def _status(args: argparse.Namespace) -> int:
    entries = dev_federation.status(args.dir)
    if not entries:
        print(f"no federation runs in {args.dir}")
        return 0
    for entry in entries:
        state = "running" if entry["running"] else "stopped"
        print(f"{entry['name']:<12} pid {entry['pid']:<7} {state:<8} {entry['address']}")
    return 0 if all(entry["running"] for entry in entries) else 1


def _down(args: argparse.Namespace) -> int:
    running = [entry for entry in dev_federation.status(args.dir) if entry["running"]]
    stubborn = dev_federation.down(args.dir)
    if stubborn:
        print(f"killed processes that ignored SIGTERM: {', '.join(stubborn)}")
        return 1
    print(f"stopped {len(running)} process(es)")
    return 0
