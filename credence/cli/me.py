"""``credence me ...``: a subject reads and acts on their own data with their own key.

    credence me lookups  --key K --binding B [--federation F] [--json]
    credence me grants   --key K --binding B [--federation F] [--json]
    credence me revoke   --key K --binding B GRANT_ID
    credence me contest  --key K --binding B --agency A --statement TEXT [--kind K]
    credence me contests --key K --binding B [--json]

``--key`` is the subject's personal key; ``--binding`` the binding an
identity-verifying member issued for it (it names the subject's reference, so
no identifier is ever sent). The federation file says where the registry is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from credence.cli.command import Handler, command, subcommands
from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import read_binding
from credence.client.subject import SubjectClient
from credence.keys import load_signing_key

EXAMPLES = """examples:
  credence me lookups --key me.key --binding me.binding.jwt
  credence me revoke --key me.key --binding me.binding.jwt 4f1c...
  credence me contest --key me.key --binding me.binding.jwt --agency court \\
      --statement "This judgment was paid in full in March."
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``me`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)

    def subject_command(
        name: str, help_text: str, example: str, handler: Handler
    ) -> argparse.ArgumentParser:
        sub = command(commands, name, help_text, example, handler=handler)
        sub.add_argument("--key", type=Path, required=True, help="your personal key")
        sub.add_argument(
            "--binding", type=Path, required=True, help="the binding of your key (JWS file)"
        )
        add_federation_option(sub)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    subject_command(
        "lookups", "who looked you up, when, why, and the outcome",
        "credence me lookups --key me.key --binding me.binding.jwt", _lookups,
    )  # fmt: skip
    subject_command(
        "grants", "your consents and the mandates about you",
        "credence me grants --key me.key --binding me.binding.jwt", _grants,
    )  # fmt: skip
    revoke = subject_command(
        "revoke", "revoke a consent: every later lookup with it is refused",
        "credence me revoke --key me.key --binding me.binding.jwt GRANT_ID", _revoke,
    )  # fmt: skip
    revoke.add_argument("grant_id")
    contest = subject_command(
        "contest", "contest the records an agency holds about you",
        "credence me contest --key me.key --binding me.binding.jwt --agency court "
        "--statement 'paid in full'", _contest,
    )  # fmt: skip
    contest.add_argument("--agency", required=True, help="the agency holding the records")
    contest.add_argument("--statement", required=True, help="what is wrong, in your words")
    contest.add_argument("--kind", default="", help="only records of this kind")
    subject_command(
        "contests", "your contests and how they were resolved",
        "credence me contests --key me.key --binding me.binding.jwt", _contests,
    )  # fmt: skip


def _client(args: argparse.Namespace) -> SubjectClient:
    federation = Federation(args.federation)
    _, subject = read_binding(args.binding)
    return SubjectClient(
        federation.registry["public_address"],
        federation.ca_cert(),
        subject_key=load_signing_key(args.key),
        subject_ref_hex=subject,
        registry_id=federation.registry.get("member_id", "registry"),
    )


def _emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        print("nothing to show")
        return
    widths = [
        max(len(column), *(len(str(row.get(column, ""))) for row in rows)) for column in columns
    ]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(
                str(row.get(column, "")).ljust(width)
                for column, width in zip(columns, widths, strict=True)
            )
        )


def _rows(messages: list[Any]) -> list[dict[str, Any]]:
    return [
        MessageToDict(message, preserving_proto_field_name=True, use_integers_for_enums=False)
        for message in messages
    ]


def _lookups(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = _rows(client.lookups())
    _emit(args, rows, ["at", "requester", "purpose", "kinds", "outcome", "basis"])
    return 0


def _grants(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = _rows(client.grants())
    _emit(args, rows, ["grant_id", "kind", "requester", "purpose", "uses", "max_uses",
                       "expires_at", "revoked_at"])  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        revoked_at = client.revoke(args.grant_id)
    print(f"grant {args.grant_id} revoked at {revoked_at:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _contest(args: argparse.Namespace) -> int:
    with _client(args) as client:
        contest_id, flagged = client.contest(args.agency, args.statement, args.kind)
    print(f"contest {contest_id} filed with {args.agency}: {flagged} record(s) now disputed")
    return 0


def _contests(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = _rows(client.contests())
    _emit(args, rows, ["contest_id", "agency", "record_kind", "state", "filed_at", "resolved_at"])
    return 0
