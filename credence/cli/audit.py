"""``credence audit ...``: check the registry's transparency log from outside.

    credence audit log  --federation F --since-head FILE
    credence audit log  --registry-public ADDR --ca CA --root-keys R --http URL
                        --since-head FILE
    credence audit node --dir D [--json]

``audit log`` verifies the current signed tree head and that it extends the
head saved in FILE (the log only grows, nothing rewritten), then saves the new
head there. ``audit node`` checks that every query a node answered is in the
log: a missing one is evidence that the registry looked someone up in secret.
It proves up to 1,000 queries per request, shows its progress on stderr, and
reports the lag: promises still unchecked and how far the oldest is past its
merge delay.
Exit code 0 when everything verifies, 1 when anything does not.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import grpc

from credence.dev.federation import load_federation
from credence.envelope import Envelope
from credence.errors import InvalidInput, Unavailable
from credence.keys import KeySet, write_private_file
from credence.manifest import verify_manifest
from credence.transparency.log_audit import check_consistency, log_client, open_tree_head

EXAMPLES = """examples:
  credence audit log --federation ./demo/federation.json --since-head ./head.bin
  credence audit node --dir ./court
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``audit`` sub-commands to ``parser``."""
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    log = commands.add_parser(
        "log",
        help="verify the log's signed head and that it extends a saved one",
        description="verify the log's signed head and that it extends a saved one",
        epilog="example:\n  credence audit log --federation F --since-head head.bin",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    log.add_argument("--federation", type=Path, help="a federation.json (or pass the four below)")
    log.add_argument("--registry-public", help="the registry's public host:port")
    log.add_argument("--ca", type=Path, help="the federation CA (PEM)")
    log.add_argument("--root-keys", type=Path, help="the pinned root keys (JWK Set)")
    log.add_argument("--http", help="the registry's HTTP side, e.g. http://127.0.0.1:7780")
    log.add_argument(
        "--since-head", type=Path, required=True, help="saved head to check against, then update"
    )
    log.set_defaults(handler=_audit_log)
    node = commands.add_parser(
        "node",
        help="check that every query a node answered is in the registry's log",
        description="check that every query a node answered is in the registry's log",
        epilog="example:\n  credence audit node --dir ./court",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    node.add_argument("--dir", type=Path, required=True, help="the node's data directory")
    node.add_argument("--json", action="store_true", help="machine-readable output")
    node.set_defaults(handler=_audit_node)


def _endpoints(args: argparse.Namespace) -> tuple[str, bytes, KeySet, str]:
    if args.federation is not None:
        registry = load_federation(args.federation)["registry"]
        return (
            registry["public_address"],
            Path(registry["ca_cert"]).read_bytes(),
            KeySet.from_jwks(json.loads(Path(registry["root_keys"]).read_text())),
            registry["http_url"],
        )
    if not (args.registry_public and args.ca and args.root_keys and args.http):
        raise InvalidInput(
            "pass --federation FILE, or all of --registry-public, --ca, --root-keys and --http"
        )
    return (
        args.registry_public,
        args.ca.read_bytes(),
        KeySet.from_jwks(json.loads(args.root_keys.read_text())),
        args.http,
    )


def _fetch_manifest(http_url: str) -> Envelope:
    if not http_url.startswith(("http://", "https://")):
        raise InvalidInput(f"--http must be an http(s) URL, got {http_url!r}")
    try:
        with urllib.request.urlopen(f"{http_url}/manifest", timeout=10) as response:  # noqa: S310 - scheme checked
            return Envelope.from_json(response.read())
    except OSError as exc:
        raise Unavailable(f"cannot fetch {http_url}/manifest: {exc}") from exc


def _audit_log(args: argparse.Namespace) -> int:
    address, ca_pem, root_keys, http_url = _endpoints(args)
    now = datetime.now(UTC)
    manifest = verify_manifest(
        _fetch_manifest(http_url), trusted_root=root_keys, threshold=1, now=now
    )
    log_keys = KeySet(
        key for kid, key in manifest.registry_keys.items() if kid == manifest.registry.log_id
    )
    with log_client(address, grpc.ssl_channel_credentials(root_certificates=ca_pem)) as client:
        head = client.tree_head(log_keys)
        if args.since_head.exists():
            old = open_tree_head(Envelope.from_bytes(args.since_head.read_bytes()), log_keys)
            path = (
                client.consistency(old.tree_size, head.tree_size)
                if (head.tree_size >= old.tree_size)
                else []
            )
            check_consistency(old, head, path)
            print(f"log consistent: {old.tree_size} -> {head.tree_size} entries")
        else:
            print(f"no saved head yet: trusting size {head.tree_size} from now on")
    write_private_file(args.since_head, head.to_bytes())
    print(f"head saved to {args.since_head} (root {head.root_hash.hex()[:16]}...)")
    return 0


class _Progress:
    """Promises checked so far, on stderr.

    One updated line on a terminal; elsewhere a line every few seconds, so a long
    audit never looks hung in a log file.
    """

    def __init__(self, stream: TextIO, *, every: float = 3.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._started = self._last = time.monotonic()
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._tty and now - self._last < self._every and done < total:
            return
        self._last = now
        rate = done / max(now - self._started, 1e-6)
        line = f"audit node: {done:,}/{total:,} promises checked ({rate:,.0f}/s)"
        if self._tty:
            self._stream.write(f"\r{line} ")
            self._shown = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def end(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()


def _audit_node(args: argparse.Namespace) -> int:
    audit = importlib.import_module("agency_node.audit")
    progress = _Progress(sys.stderr)
    try:
        report, alarms = audit.audit_node(
            args.dir, clock=lambda: datetime.now(UTC), progress=progress
        )
    finally:
        progress.end()
    recorded = [alarm for alarm in alarms if alarm not in report.problems]
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "tree_size": report.tree_size,
                    "checked": report.checked,
                    "unchecked": report.unchecked,
                    "overdue": report.overdue,
                    "lag_seconds": round(report.lag_seconds, 3),
                    "problems": [
                        {"kind": kind, "query_id": query_id, "detail": detail}
                        for kind, query_id, detail in report.problems
                    ],
                    "earlier_alarms": len(recorded),
                },
                indent=2,
            )
        )
        return 0 if report.ok else 1
    print(f"checked {report.checked} answered queries against a log of {report.tree_size} entries")
    print(
        f"lag: {report.unchecked} promise(s) unchecked, {report.overdue} past their merge delay, "
        f"the oldest by {report.lag_seconds:.0f} s"
    )
    for kind, query_id, detail in report.problems:
        print(f"PROBLEM {kind} {query_id}: {detail}")
    if recorded:
        print(f"{len(recorded)} earlier alarm(s) recorded by the node's background check")
    if any(kind != audit.UNREACHABLE for kind, _, _ in report.problems):
        print("the registry's log is missing what it promised: report this to the federation")
        return 1
    if report.problems:
        return 1
    print("every answered query is in the registry's log")
    return 0
