"""``credence verdict check``: verify a saved verdict file offline.

    credence verdict check FILE [--requester MEMBER] [--json]

Checks the registry's signature under a key of the federation manifest, the
expiry, and that the verdict was issued to the requester. Exit 0 yes, 1 no.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from credence.cli.command import command, subcommands
from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import add_role_option, read_text
from credence.encoding import format_time
from credence.errors import InvalidInput, VerificationError
from credence.verdicts import read_verdict_file, verify_verdict_file

EXAMPLES = """examples:
  credence verdict check verdict.json
  credence verdict check verdict.json --as authority --json

Checks the registry's signature under a key of the federation manifest (fetched
from the registry's HTTP side and verified against the pinned root keys), the
expiry, and that the verdict was issued to you. Exit 0 yes, 1 no.
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``verdict``'s sub-commands to its parser."""
    commands = subcommands(parser, EXAMPLES)
    check = command(
        commands, "check", "verify a saved verdict file: yes or no, and why",
        epilog=EXAMPLES, handler=_check,
    )  # fmt: skip
    add_federation_option(check)
    add_role_option(check)
    check.add_argument("file", type=Path, metavar="FILE", help="a file saved by verify --out")
    check.add_argument(
        "--requester", metavar="MEMBER",
        help="the member the verdict must be issued to (default: the --as member)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="machine-readable output")


def _check(args: argparse.Namespace) -> int:
    federation = Federation(args.federation)
    requester = args.requester or federation.member(args.role)["member_id"]
    text = read_text(args.file, "verdict file")
    now = datetime.now(UTC)
    manifest = federation.manifest(now)
    try:
        verdict, claims = verify_verdict_file(
            text,
            registry_keys=manifest.registry_keys,
            now=now,
            requester=requester,
            issuer=manifest.registry.member_id,
        )
    except (VerificationError, InvalidInput) as exc:
        reason = " ".join(str(exc).split())
        if args.json:
            print(json.dumps({"valid": False, "reason": reason, "error": type(exc).__name__}))
        else:
            print(f"no: {reason}")
        return 1
    envelope, _ = read_verdict_file(text)
    key_ids = [s.keyid for s in envelope.signatures if s.keyid in manifest.registry_keys]
    expires = format_time(verdict.expires_at.ToDatetime(tzinfo=UTC))
    if args.json:
        print(json.dumps({
            "valid": True, "verdict_id": verdict.verdict_id, "requester": requester,
            "expires_at": expires, "key_ids": key_ids, "manifest_version": manifest.version,
            "claims": claims,
        }))  # fmt: skip
        return 0
    print(
        f"yes: verdict {verdict.verdict_id} is signed by the registry key {', '.join(key_ids)} "
        f"(manifest version {manifest.version}), issued to {requester}, valid until {expires}"
    )
    return 0
