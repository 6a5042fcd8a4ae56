"""``credence registry reviews ...``: the operator's queue of human reviews, from the data dir.

credence registry reviews list   --dir D [--json]
credence registry reviews decide --dir D REVIEW_ID --outcome upheld|corrected --statement TEXT

``decide`` signs the outcome with the registry's key and logs the decision
in ``admin_actions`` as ``cli:<user>``, as the console logs its admins.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from central_registry import config as registry_config
from central_registry import database, reviews
from central_registry.console.actions import ConsoleActions
from central_registry.keyring import load_keys
from central_registry.models import split_names
from credence.cli.command import Subcommands, command, subcommands
from credence.clock import utc_now
from credence.encoding import format_time
from credence.storage import session_factory

__all__ = ["register_reviews"]

EXAMPLES = """examples:
  credence registry reviews list --dir ./registry
  credence registry reviews decide --dir ./registry 9d2e... --outcome corrected \\
      --statement "The agency corrected the record; the verdict no longer counts it."
"""


def register_reviews(commands: Subcommands, data_dir: str) -> None:
    """Add ``reviews list`` and ``reviews decide`` to the registry's ``commands``."""
    review_commands = subcommands(
        commands.add_parser(
            "reviews",
            help="the queue of subjects' requests for human review of a verdict",
            description="the queue of subjects' requests for human review of a verdict",
        ),
        EXAMPLES,
        dest="review_command",
        metavar="ACTION",
    )
    listing = command(
        review_commands, "list", "open reviews, oldest first",
        "credence registry reviews list --dir ./registry", data_dir=data_dir, handler=_list,
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="one JSON object per review")
    deciding = command(
        review_commands,
        "decide",
        "decide an open review; the registry signs the outcome the subject reads",
        "credence registry reviews decide --dir ./registry REVIEW_ID --outcome upheld "
        "--statement 'the records were right'",
        data_dir=data_dir,
        handler=_decide,
    )
    deciding.add_argument("review_id")
    deciding.add_argument("--outcome", required=True, choices=reviews.OUTCOMES)
    deciding.add_argument("--statement", required=True, help="what the subject is told")


def _list(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    engine = database.create_engine_for(config.effective_database_url)
    try:
        database.require_current_schema(engine)
        now = utc_now()
        with session_factory(engine)() as session:
            rows: list[dict[str, Any]] = [
                {
                    "review_id": row.review_id,
                    "verdict_id": row.verdict_id,
                    "requested_at": format_time(row.requested_at),
                    "age_hours": round((now - row.requested_at).total_seconds() / 3600, 1),
                    "agencies_told": list(split_names(row.agencies)),
                    "statement": row.statement,
                }
                for row in reviews.open_reviews(session)
            ]
    finally:
        engine.dispose()
    if args.json:
        for row in rows:
            print(json.dumps(row))
    elif not rows:
        print("no review is open")
    else:
        for row in rows:
            told = ",".join(row["agencies_told"]) or "none yet"
            print(
                f"{row['review_id']}  verdict {row['verdict_id']}  asked {row['requested_at']} "
                f"({row['age_hours']} h ago)  agencies told: {told}"
            )
            print(f"    {row['statement'][:200]}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    engine = database.create_engine_for(config.effective_database_url)
    try:
        database.require_current_schema(engine)
        actions = ConsoleActions(
            engine=engine, config=config, keys=load_keys(config), clock=utc_now
        )
        done = actions.decide_review(
            f"cli:{getpass.getuser()}"[:64], args.review_id, args.outcome, args.statement
        )
    finally:
        engine.dispose()
    print(done)
    return 0
