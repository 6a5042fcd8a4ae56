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
import textwrap
from datetime import UTC, datetime
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


#: Human output fits this many columns.
WIDTH = 80


def _emit_json(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        print(json.dumps(row))


def _print_blocks(blocks: list[list[str]], empty: str) -> None:
    """One block of lines per entry, wrapped to :data:`WIDTH`, a blank line between."""
    if not blocks:
        print(empty)
        return
    for index, block in enumerate(blocks):
        if index:
            print()
        print(textwrap.fill(block[0], WIDTH, subsequent_indent="    "))
        for line in block[1:]:
            print(textwrap.fill(line, WIDTH, initial_indent="  ", subsequent_indent="    "))


def words(enum_name: str) -> str:
    """An enum name in words: ``PURPOSE_CREDIT_ASSESSMENT`` -> ``credit assessment``."""
    for prefix in ("PURPOSE_", "VERDICT_KIND_"):
        enum_name = enum_name.removeprefix(prefix)
    return enum_name.replace("_", " ").lower()


def _listing(names: list[str]) -> str:
    shown = [words(name) for name in names]
    if len(shown) <= 1:
        return "".join(shown) or "nothing"
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _when(stamp: str) -> str:
    """``2026-12-02T00:15:13.118247Z`` -> ``2026-12-02 00:15 UTC``."""
    if not stamp:
        return "never"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _contest_block(row: dict[str, Any]) -> list[str]:
    kind = words(row["record_kind"]) + " records" if row.get("record_kind") else "all records"
    resolved = f", resolved {_when(row['resolved_at'])}" if row.get("resolved_at") else ""
    return [
        f"contest {row.get('contest_id', '?')} at {row.get('agency', '?')} ({kind})",
        f"{words(row.get('state', ''))}; filed {_when(row.get('filed_at', ''))}{resolved}",
    ]


def _lookup_block(row: dict[str, Any]) -> list[str]:
    return [
        f"{_when(row.get('at', ''))}  {row.get('requester', '?')}",
        f"{words(row.get('purpose', ''))}: {_listing(row.get('kinds', []))}",
        f"{row.get('outcome', '?')}; basis: {row.get('basis', '?')}",
    ]


def _grant_block(row: dict[str, Any]) -> list[str]:
    uses = f"used {row.get('uses', 0)} of {row.get('max_uses', 0)} time(s)"
    if not row.get("max_uses"):
        uses = f"used {row.get('uses', 0)} time(s)"
    block = [
        f"{row.get('kind', 'grant')} {row.get('grant_id', '?')} for {row.get('requester', '?')}",
        f"{words(row.get('purpose', ''))}: {_listing(row.get('kinds', []))}",
        f"{uses}; valid until {_when(row.get('expires_at', ''))}",
    ]
    if row.get("revoked_at"):
        block.append(f"revoked {_when(row['revoked_at'])}")
    return block


def _rows(messages: list[Any]) -> list[dict[str, Any]]:
    return [
        MessageToDict(message, preserving_proto_field_name=True, use_integers_for_enums=False)
        for message in messages
    ]


def _lookups(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = _rows(client.lookups())
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_lookup_block(row) for row in rows], "nobody has looked you up")
    return 0


def _grants(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = _rows(client.grants())
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_grant_block(row) for row in rows], "no consents or mandates name you")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        # The registry keeps the first revocation time; ask first, so a second
        # revocation says so instead of reporting the old time as news.
        earlier = next(
            (grant for grant in client.grants() if grant.grant_id == args.grant_id), None
        )
        if earlier is not None and earlier.HasField("revoked_at"):
            at = earlier.revoked_at.ToDatetime(tzinfo=UTC)
            print(f"grant {args.grant_id} was already revoked at {at:%Y-%m-%dT%H:%M:%SZ}; "
                  "nothing changed")  # fmt: skip
            return 0
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
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_contest_block(row) for row in rows], "you have filed no contests")
    return 0
