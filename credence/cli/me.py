"""``credence me ...``: a subject reads and acts on their own data with their own key.

    credence me lookups  --key K --binding B [--federation F] [--json] [--proofs DIR]
    credence me grants   --key K --binding B [--federation F] [--json]
    credence me revoke   --key K --binding B GRANT_ID
    credence me contest  --key K --binding B --agency A --statement TEXT [--kind K]
    credence me contests --key K --binding B [--json]
    credence me records  --key K --binding B [--json]
    credence me review   --key K --binding B VERDICT_ID --statement TEXT
    credence me reviews  --key K --binding B [--json]
    credence me explanations --key K --binding B [--json]
    credence me portal   --key K --binding B [--port N]

``--key`` is the subject's personal key; ``--binding`` the binding an
identity-verifying member issued for it (it names the subject's reference, so
no identifier is ever sent). The federation file says where the registry is.
``lookups --proofs DIR`` also saves a receipt per lookup
(:mod:`credence.client.receipts`). ``records`` asks every agency which of
your records it holds; each answer is sealed to a key made for that request,
so only this command can read it (:mod:`credence.client.subject_records`).
``explanations`` shows, in plain words, how each credit verdict about you was
reached (signed by the registry, checked here; :mod:`credence.explanations`).
``review`` asks for a person to look at a verdict about you (its id is in
``lookups``); the registry's operator decides and ``reviews`` shows the
outcome the registry signed, checked here.
``portal`` serves the same on a web page on 127.0.0.1 (:mod:`credence.portal`).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from grpc import ssl_channel_credentials

from credence.cli.command import Handler, command, subcommands
from credence.cli.federation import Federation, add_federation_option
from credence.cli.options import read_binding
from credence.client.receipts import save_receipts
from credence.client.subject import ReviewView, SubjectClient
from credence.client.subject_records import AgencyAnswer, fetch_records
from credence.explanations import describe
from credence.keys import load_signing_key
from credence.transparency.log_audit import log_client
from credence.transparency.tile_reader import TileReader
from credence.transparency.witness_policy import policy_from_manifest
from credence.v1 import registry_pb2

EXAMPLES = """examples:
  credence me lookups --key me.key --binding me.binding.jwt
  credence me revoke --key me.key --binding me.binding.jwt 4f1c...
  credence me records --key me.key --binding me.binding.jwt
  credence me review --key me.key --binding me.binding.jwt 9d2e... --statement "paid in full"
  credence me portal --key me.key --binding me.binding.jwt
  credence me contest --key me.key --binding me.binding.jwt --agency court \\
      --statement "This judgment was paid in full in March."
"""


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``me`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)

    def subject_command(
        name: str, help_text: str, example: str, handler: Handler, *, machine: bool = True
    ) -> argparse.ArgumentParser:
        sub = command(commands, name, help_text, example, handler=handler)
        sub.add_argument("--key", type=Path, required=True, help="your personal key")
        sub.add_argument(
            "--binding", type=Path, required=True, help="the binding of your key (JWS file)"
        )
        add_federation_option(sub)
        if machine:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    lookups = subject_command(
        "lookups", "who looked you up, when, why, and the outcome",
        "credence me lookups --key me.key --binding me.binding.jwt --proofs ./receipts", _lookups,
    )  # fmt: skip
    lookups.add_argument(
        "--proofs", type=Path, metavar="DIR",
        help="also save a receipt per lookup in DIR: a C2SP tlog-proof (the log entry, its "
        "inclusion proof, the witnessed checkpoint) that verifies offline",
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
    subject_command(
        "explanations", "how each credit verdict about you was reached, in plain words",
        "credence me explanations --key me.key --binding me.binding.jwt", _explanations,
    )  # fmt: skip
    subject_command(
        "records", "the records every agency holds about you, sealed to you alone",
        "credence me records --key me.key --binding me.binding.jwt", _records,
    )  # fmt: skip
    review = subject_command(
        "review", "ask for a person to review a verdict about you",
        "credence me review --key me.key --binding me.binding.jwt VERDICT_ID "
        "--statement 'the debt was paid'", _review, machine=False,
    )  # fmt: skip
    review.add_argument("verdict_id", help="the verdict's id, as `credence me lookups` shows it")
    review.add_argument("--statement", required=True, help="what a person should look at")
    subject_command(
        "reviews", "your requests for review and their outcomes",
        "credence me reviews --key me.key --binding me.binding.jwt", _reviews,
    )  # fmt: skip
    portal = subject_command(
        "portal", "a web page on this machine: lookups, grants, records, disputes, scores, reviews",
        "credence me portal --key me.key --binding me.binding.jwt", _portal, machine=False,
    )  # fmt: skip
    portal.add_argument(
        "--port", type=int, default=0,
        help="the port on 127.0.0.1 to serve on (default: a free one)",
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
        manifest=lambda: federation.manifest(datetime.now(UTC)),
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
    block = [
        f"contest {row.get('contest_id', '?')} at {row.get('agency', '?')} ({kind})",
        f"{words(row.get('state', ''))}; filed {_when(row.get('filed_at', ''))}{resolved}",
    ]
    due = _when(row.get("due_at", ""))
    if row.get("overdue"):
        block.append(
            f"OVERDUE: the agency had until {due}; until it answers, the record does not count"
        )
    elif row.get("state") == "open" and row.get("due_at"):
        block.append(f"the agency must answer by {due}")
    return block


def _lookup_block(row: dict[str, Any]) -> list[str]:
    return [
        f"{_when(row.get('at', ''))}  {row.get('requester', '?')}",
        f"{words(row.get('purpose', ''))}: {_listing(row.get('kinds', []))}",
        f"{row.get('outcome', '?')}; basis: {row.get('basis', '?')}",
        *([f"verdict {row['verdict_id']}"] if row.get("verdict_id") else []),
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
        lookups = client.lookups()
    rows = _rows(lookups)
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_lookup_block(row) for row in rows], "nobody has looked you up")
    if args.proofs is not None:
        _save_receipts(args, lookups)
    return 0


def _save_receipts(args: argparse.Namespace, lookups: list[registry_pb2.LookupRecord]) -> None:
    federation = Federation(args.federation)
    now = datetime.now(UTC)
    policy = policy_from_manifest(federation.manifest(now))
    ca_pem = federation.ca_cert()
    with log_client(federation.registry["public_address"], ssl_channel_credentials(ca_pem)) as log:
        note = log.cosigned_checkpoint()
    with TileReader(federation.registry["http_url"], ca_pem) as tiles:
        receipts = save_receipts(
            lookups, note=note, tiles=tiles, policy=policy, directory=args.proofs, now=now
        )
    cosigned = receipts.cosigned
    size = cosigned.checkpoint.size if cosigned else 0
    witnesses = len(cosigned.cosigners) if cosigned else 0
    # On stderr: --json keeps stdout one lookup per line.
    print(
        f"saved {len(receipts.saved)} receipt(s) to {args.proofs}, against the log's "
        f"checkpoint of {size} entries cosigned by {witnesses} witness(es)",
        file=sys.stderr,
    )
    if receipts.pending:
        print(
            f"{len(receipts.pending)} lookup(s) are newer than that checkpoint; ask again "
            "after the log's merge delay for their receipts",
            file=sys.stderr,
        )


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


def _explanations(args: argparse.Namespace) -> int:
    with _client(args) as client:
        explanations = client.explanations()
    if args.json:
        _emit_json(_rows(explanations))
    else:
        _print_blocks(
            [describe(explanation) for explanation in explanations],
            "no credit verdict about you has been served (or all have expired)",
        )
    return 0


def _day(stamp: str) -> str:
    """``2026-03-01T00:00:00Z`` -> ``2026-03-01``."""
    return stamp[:10] if stamp else "?"


def _held_line(row: dict[str, Any]) -> str:
    parts = [
        f"{words(row.get('kind', ''))} ({words(row.get('category', ''))}), "
        f"{words(row.get('status', ''))}",
        f"since {_day(row.get('occurred_at', ''))}, counts until {_day(row.get('expires_at', ''))}",
    ]
    if row.get("amount_band"):
        parts.append(f"amount {row['amount_band']}")
    if row.get("days_overdue"):
        parts.append(f"{row['days_overdue']} days overdue")
    if row.get("disputed"):
        parts.append("disputed")
    if row.get("contest_due_at"):
        parts.append(
            f"contested: the agency's answer is due by {_when(row['contest_due_at'])}; "
            "from then until it answers, the record does not count"
        )
    return "; ".join(parts)


def _records_row(answer: AgencyAnswer) -> dict[str, Any]:
    if answer.records is None:
        return {"agency": answer.agency, "problem": answer.problem}
    row = _rows([answer.records])[0]
    row.pop("request_id", None)
    row.setdefault("records", [])
    row["total"] = int(row.get("total", 0))
    return row


def _records_block(row: dict[str, Any]) -> list[str]:
    if "problem" in row:
        return [f"{row['agency']}: could not be read ({row['problem']})"]
    held = row["records"]
    if not held:
        return [f"{row['agency']}: holds no record of you"]
    shown = f"{len(held)} of {row['total']}" if row["total"] > len(held) else str(len(held))
    return [
        f"{row['agency']}: {shown} record(s)",
        *(_held_line(record) for record in held),
        row.get("how_to_contest", ""),
    ]


def _records(args: argparse.Namespace) -> int:
    binding, _ = read_binding(args.binding)
    manifest = Federation(args.federation).manifest(datetime.now(UTC))
    with _client(args) as client:
        answers = fetch_records(client, binding=binding, manifest=manifest)
    rows = [_records_row(answer) for answer in answers]
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_records_block(row) for row in rows], "the federation has no agencies")
    # Every agency was asked: one that could not be read leaves the answer incomplete.
    return 1 if any("problem" in row for row in rows) else 0


def _told(agencies: list[str]) -> str:
    return ", ".join(agencies) if agencies else "none yet (the registry keeps trying)"


def _review(args: argparse.Namespace) -> int:
    with _client(args) as client:
        review = client.request_review(args.verdict_id, args.statement)
    print(
        f"review {review.review_id} of verdict {review.verdict_id} asked for (log entry "
        f"{review.log_index}); agencies told: {_told(list(review.agencies))}"
    )
    return 0


def _review_row(view: ReviewView) -> dict[str, Any]:
    row = _rows([view.record])[0]
    row.pop("outcome", None)
    if view.outcome is not None:
        row["outcome"] = _rows([view.outcome])[0]
    return row


def _review_block(row: dict[str, Any]) -> list[str]:
    block = [f"review {row.get('review_id', '?')} of verdict {row.get('verdict_id', '?')}"]
    outcome = row.get("outcome")
    if outcome is None:
        block.append(
            f"open since {_when(row.get('requested_at', ''))}, agencies told: "
            f"{_told(row.get('agencies', []))}"
        )
    else:
        block.append(
            f"{outcome.get('outcome', '?')} on {_when(outcome.get('decided_at', ''))} by "
            f"{outcome.get('reviewer', '?')}: {outcome.get('statement', '')}"
        )
    block.append(f"you said: {row.get('statement', '')}")
    return block


def _reviews(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = [_review_row(view) for view in client.reviews()]
    if args.json:
        _emit_json(rows)
    else:
        _print_blocks([_review_block(row) for row in rows], "you have asked for no review")
    return 0


def _portal(args: argparse.Namespace) -> int:
    # Imported here: the web stack loads only for the command that serves a page.
    from credence.portal.desk import ClientDesk  # noqa: PLC0415
    from credence.portal.serving import serve_portal  # noqa: PLC0415

    federation = Federation(args.federation)
    binding, _ = read_binding(args.binding)
    desk = ClientDesk(
        _client(args), binding=binding, manifest=lambda: federation.manifest(datetime.now(UTC))
    )
    try:
        server, link = serve_portal(desk, port=args.port)
        print(f"Your portal is open at {server.url} on this computer only. Open this link "
              f"in your browser (it works once):\n\n  {link}\n\nStop the portal with Ctrl+C.",
              flush=True)  # fmt: skip
        server.run()
    except KeyboardInterrupt:
        pass  # Ctrl+C is how the portal is meant to stop; the server has shut down
    finally:
        desk.close()
    return 0
