"""``credence dev ...``: a complete federation on loopback in one command.

credence dev up     --dir DIR [--agencies N] [--subjects M] [--seed S]
credence dev status --dir DIR
credence dev down   --dir DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time

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
        "and identity verifier; write DIR/federation.json",
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


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    federation = dev_federation.up(
        args.dir, agencies=args.agencies, subjects=args.subjects, seed=args.seed, progress=progress
    )
    if args.json:
        print(json.dumps(federation, indent=2))
    else:
        path = args.dir.resolve() / dev_federation.FEDERATION_FILE
        print(f"federation up in {time.monotonic() - started:.1f}s: {path}")
        registry = federation["registry"]
        print(f"  registry  {registry['address']} (public {registry['public_address']}, "
              f"{registry['http_url']})")  # fmt: skip
        for agency in federation["agencies"]:
            print(f"  agency    {agency['member_id']:<12} {agency['address']}  "
                  f"{', '.join(agency['kinds'])}")  # fmt: skip
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
