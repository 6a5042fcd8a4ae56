"""``credence registry ...``: run the central registry and manage membership.

credence registry init    --dir D [--federation-id ID] [--listen ADDR] [--http-listen ADDR]
                          [--console-listen ADDR]
credence registry serve   --dir D [--listen ADDR] [--http-listen ADDR] [--console-listen ADDR]
credence registry migrate --dir D
credence registry admin-token --dir D --name NAME --out FILE [--days N] | --revoke NAME
credence registry members list      --dir D [--state pending|active|suspended] [--json]
credence registry members approve   --dir D ID [--purposes P,...] [--kinds K,...]
[--identity-verifier]
credence registry members suspend   --dir D ID
credence registry members reinstate --dir D ID
credence registry reviews list   --dir D [--json]
credence registry reviews decide --dir D REVIEW_ID --outcome upheld|corrected --statement TEXT
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from central_registry import config as registry_config
from central_registry import database, membership
from central_registry.cli_reviews import register_reviews
from central_registry.console import admin_tokens
from central_registry.keyring import create_keys, load_keys
from central_registry.publishing import publish
from central_registry.server import serve
from central_registry.store import member_rows
from credence.cli.command import command, subcommands
from credence.clock import utc_now
from credence.encoding import format_time
from credence.errors import InvalidInput
from credence.ops.flags import add_observability_flags, observed
from credence.scorecard import default_scorecard
from credence.storage import session_factory

EXAMPLES = """examples:
  credence registry init --dir ./registry --federation-id demo
  credence registry serve --dir ./registry
  credence registry members list --dir ./registry --state pending
  credence registry members approve --dir ./registry court-1
  credence registry members suspend --dir ./registry shop-7
  credence registry admin-token --dir ./registry --name alice --out alice.token
"""
DATA_DIR = "the registry's data directory"


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``registry`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)
    init = command(
        commands,
        "init",
        "create the root key, CA, registry keys, config, database and first manifest",
        "credence registry init --dir ./registry --federation-id demo",
        data_dir=DATA_DIR,
        handler=_init,
    )
    init.add_argument("--federation-id", default="credence", help="the federation's name")
    init.add_argument("--listen", default="127.0.0.1:7700", help="members' gRPC host:port")
    init.add_argument(
        "--public-listen",
        default="127.0.0.1:7702",
        help="public gRPC host:port (enrolment, subject access)",
    )
    init.add_argument("--http-listen", default="127.0.0.1:7780", help="HTTP host:port")
    init.add_argument(
        "--console-listen",
        default="127.0.0.1:7790",
        help="the operator's console host:port (HTTPS); '' for no console",
    )

    run = command(
        commands,
        "serve",
        "serve gRPC and the HTTP side until SIGTERM",
        "credence registry serve --dir ./registry",
        data_dir=DATA_DIR,
        handler=_serve,
    )
    run.add_argument("--listen", default=None, help="members' host:port, overriding the config")
    run.add_argument("--public-listen", default=None, help="public host:port")
    run.add_argument("--http-listen", default=None, help="HTTP host:port")
    run.add_argument("--console-listen", default=None, help="console host:port ('' for no console)")
    add_observability_flags(run, log_format="json")

    token = command(
        commands,
        "admin-token",
        "make a token file for the operator's console (only its hash is kept)",
        "credence registry admin-token --dir ./registry --name alice --out alice.token",
        data_dir=DATA_DIR,
        handler=_admin_token,
    )
    token.add_argument("--name", help="who holds it (lower-case letters, digits, . _ -)")
    token.add_argument("--out", type=Path, help="the token file to create (mode 0600)")
    token.add_argument("--days", type=float, default=90, help="how long it is valid")
    token.add_argument("--revoke", metavar="NAME", help="end every token of NAME instead")

    command(
        commands, "migrate", "bring the database schema up to date",
        "credence registry migrate --dir ./registry", data_dir=DATA_DIR, handler=_migrate,
    )  # fmt: skip

    members = commands.add_parser(
        "members",
        help="list, approve, suspend and reinstate members",
        description=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    member_commands = members.add_subparsers(dest="member_command", metavar="ACTION", required=True)
    listing = command(
        member_commands, "list", "list members", "credence registry members list --dir ./registry",
        data_dir=DATA_DIR, handler=_list,
    )  # fmt: skip
    listing.add_argument("--state", choices=("pending", "active", "suspended"), default=None)
    listing.add_argument("--json", action="store_true", help="one JSON object per member")
    approve = command(
        member_commands,
        "approve",
        "approve a pending member: issue its certificate, publish the manifest",
        "credence registry members approve --dir ./registry court-1",
        data_dir=DATA_DIR,
        handler=_approve,
    )
    approve.add_argument("member_id")
    approve.add_argument("--purposes", default=None, help="comma-separated purposes it may ask")
    approve.add_argument("--kinds", default=None, help="comma-separated verdict kinds it may ask")
    approve.add_argument(
        "--identity-verifier", action="store_true", help="it may bind subjects' personal keys"
    )
    for name, state, meaning in (
        ("suspend", "suspended", "refuse a member everywhere at once"),
        ("reinstate", "active", "let a suspended member take part again"),
    ):
        action = command(
            member_commands, name, meaning, f"credence registry members {name} --dir ./registry ID",
            data_dir=DATA_DIR, handler=_set_state,
        )  # fmt: skip
        action.add_argument("member_id")
        action.set_defaults(state=state)
    register_reviews(commands, DATA_DIR)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.split(",") if part]


def _engine(config: registry_config.RegistryConfig, *, migrate: bool = False) -> Engine:
    engine = database.create_engine_for(config.effective_database_url)
    if migrate:
        database.upgrade_schema(engine)
    else:
        database.require_current_schema(engine)
    return engine


def _init(args: argparse.Namespace) -> int:
    data_dir: Path = args.dir
    if (data_dir / registry_config.CONFIG_FILE).exists():
        raise InvalidInput(f"{data_dir} already holds a registry; refusing to overwrite it")
    config = registry_config.RegistryConfig(
        data_dir=data_dir,
        federation_id=args.federation_id,
        listen=args.listen,
        public_listen=args.public_listen,
        http_listen=args.http_listen,
        console_listen=args.console_listen,
        # A production registry starts on PostgreSQL straight away.
        database_url=os.environ.get("CREDENCE_REGISTRY_DATABASE_URL", ""),
    )
    now = utc_now()
    keys = create_keys(config, now)
    # The URL may hold a password: it stays in the environment, not in the file.
    (data_dir / registry_config.CONFIG_FILE).write_text(
        registry_config.render_config(dataclasses.replace(config, database_url=""))
    )
    engine = _engine(config, migrate=True)
    try:
        with session_factory(engine).begin() as session:
            envelope = publish(
                session, config=config, keys=keys, scorecard=default_scorecard(), now=now
            )
    finally:
        engine.dispose()
    print(f"registry initialised in {data_dir} (federation {config.federation_id})")
    print(f"  root key id (pin it in every member): {keys.root.kid}")
    print(f"  registry signing key id / log id:     {keys.signing.kid}")
    print(f"  manifest version 1, {len(envelope.payload)} bytes")
    return 0


def _serve(args: argparse.Namespace) -> int:
    def ready(port: int, public_port: int, http_port: int, console_port: int | None) -> None:
        print(
            f"listening on port {port} (members), {public_port} (public), http {http_port}",
            flush=True,
        )
        if console_port is not None:
            print(f"console https://127.0.0.1:{console_port}/ (port {console_port})", flush=True)

    with observed(args, "credence-registry"):
        serve(
            args.dir,
            listen=args.listen,
            public_listen=args.public_listen,
            http_listen=args.http_listen,
            console_listen=args.console_listen,
            ready=ready,
        )
    return 0


def _admin_token(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    if args.revoke is None and (args.name is None or args.out is None):
        raise InvalidInput("admin-token needs --name and --out (or --revoke NAME)")
    engine = _engine(config)
    now = utc_now()
    try:
        if args.revoke is not None:
            with session_factory(engine).begin() as session:
                count = admin_tokens.revoke_tokens(session, args.revoke, now)
            print(f"ended {count} token(s) of admin {args.revoke}; their sessions end at once")
            return 0
        admin_tokens.check_name(args.name)
        token = admin_tokens.new_token()
        with session_factory(engine).begin() as session:
            row = admin_tokens.add_token(
                session, token, name=args.name, now=now, validity=timedelta(days=args.days)
            )
            # Written inside the transaction: a file that cannot be made stores nothing.
            admin_tokens.write_token_file(args.out, token)
            expires = format_time(row.expires_at)
    finally:
        engine.dispose()
    print(f"wrote {args.out} (mode 0600) for admin {args.name}, valid until {expires}")
    print("paste its content on the console's login page; the registry keeps only its hash")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    _engine(config, migrate=True).dispose()
    print(f"database schema is at revision {database.schema_head()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    engine = _engine(config)
    try:
        with session_factory(engine)() as session:
            members = member_rows.list_members(session, args.state)
            rows = [
                {
                    "member_id": member.member_id,
                    "role": member.role,
                    "state": member.state,
                    "endpoint": member.endpoint,
                    "record_kinds": list(member.record_kind_names),
                    "purposes": list(member.allowed_purpose_names),
                    "kinds": list(member.allowed_kind_names),
                    "identity_verifier": member.identity_verifier,
                }
                for member in members
            ]
    finally:
        engine.dispose()
    if args.json:
        for row in rows:
            print(json.dumps(row))
    elif not rows:
        print("no members" + (f" in state {args.state}" if args.state else ""))
    else:
        print(f"{'member':<24} {'role':<10} {'state':<10} endpoint / rights")
        for row in rows:
            rights = row["endpoint"] or ",".join(row["purposes"])  # type: ignore[arg-type]
            print(f"{row['member_id']:<24} {row['role']:<10} {row['state']:<10} {rights}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    keys = load_keys(config)
    engine = _engine(config)
    try:
        with session_factory(engine).begin() as session:
            envelope = membership.approve(
                session,
                args.member_id,
                config=config,
                keys=keys,
                scorecard=default_scorecard(),
                now=utc_now(),
                purposes=_split(args.purposes),
                kinds=_split(args.kinds),
                identity_verifier=args.identity_verifier,
            )
    finally:
        engine.dispose()
    print(f"approved {args.member_id}; published manifest ({len(envelope.payload)} bytes)")
    return 0


def _set_state(args: argparse.Namespace) -> int:
    config = registry_config.load_config(args.dir)
    keys = load_keys(config)
    engine = _engine(config)
    try:
        with session_factory(engine).begin() as session:
            membership.set_state(
                session,
                args.member_id,
                args.state,
                config=config,
                keys=keys,
                scorecard=default_scorecard(),
                now=utc_now(),
            )
    finally:
        engine.dispose()
    print(f"{args.member_id} is now {args.state}; published a new manifest", file=sys.stdout)
    return 0
