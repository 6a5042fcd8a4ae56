"""``credence node ...``: set up, fill and run an agency node.

credence node init    --dir D --member-id ID [--kinds K,...] [--listen ADDR]
credence node install --dir D --cert F --ca F --manifest F --root-keys F
                      --pseudonymisation-key F
credence node import  --dir D FILE
credence node migrate --dir D
credence node purge   --dir D
credence node serve   --dir D [--listen ADDR]
credence node audit   --dir D [--json]
credence node open-answer --dir D QUERY_ID [--json]
credence node reviews --dir D [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import grpc
from sqlalchemy import Engine

from agency_node import config as node_config
from agency_node import database, disputes, review_notices
from agency_node.answer_vectors import OpenedAnswer, open_answer
from agency_node.audit import UNREACHABLE, audit_node
from agency_node.importer import (
    STAGING_DIR_NAME,
    ImportRefused,
    ImportReport,
    import_records,
    purge_expired,
)
from agency_node.manifest_holder import load_manifest
from agency_node.server import serve
from credence.blind.layout import for_scorecard
from credence.blind.masks import agreement_key, load_agreement_key, public_bytes, save_agreement_key
from credence.cli.command import command, subcommands
from credence.cli.progress import Progress
from credence.client import enrol as client_enrol
from credence.client.errors import rpc_errors
from credence.clock import utc_now
from credence.encoding import format_time
from credence.envelope import Envelope
from credence.errors import AlreadyExists, FailedPrecondition, InvalidInput
from credence.keys import (
    KeySet,
    SigningKey,
    load_signing_key,
    private_key_pem,
    save_signing_key,
    write_private_file,
)
from credence.ops.flags import add_observability_flags, observed
from credence.pki import (
    generate_tls_key,
    load_certificate_pem,
    make_csr,
    member_id_from_certificate,
    validate_member_id,
)
from credence.record_kinds import KINDS
from credence.rpc.tls import channel_credentials
from credence.storage import immediate_writer
from credence.subjects import PseudonymisationKey
from credence.v1 import registry_pb2, registry_pb2_grpc

EXAMPLES = """examples:
  credence node init --dir ./court --member-id court-1 --kinds court_judgment
  credence node install --dir ./court --cert court-1.crt --ca ca.crt \\
      --manifest manifest.bin --root-keys root.jwks.json --pseudonymisation-key pseudo.key
  credence node import --dir ./court judgments.csv
  credence node serve --dir ./court
  credence node audit --dir ./court
"""
DISPUTE_EXAMPLES = """examples:
  credence node disputes list --dir ./court
  credence node disputes resolve --dir ./court CONTEST_ID --outcome upheld
"""
AUDIT_DESCRIPTION = """\
check that every query this node answered is in the registry's log: a missing
one is evidence that the registry looked someone up in secret. It proves up to
1,000 queries per request, shows its progress on stderr, and reports the lag:
promises still unchecked and how far the oldest is past its merge delay.
Exit 0 when everything verifies, 1 when anything does not."""
OPEN_ANSWER_DESCRIPTION = """\
show, from this node's own query log, the cleartext vector of an answer it gave
(a single query or one item of a screening batch), slot by slot, with the masks
it added and the masked words that left the node: the evidence an operator
gives when the federation asks this node to open an answer."""
DATA_DIR = "the node's data directory"


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``node`` sub-commands to ``parser``."""
    commands = subcommands(parser, EXAMPLES)
    init = command(
        commands,
        "init",
        "create the node's keys, certificate request, config and database",
        "credence node init --dir ./court --member-id court-1 --kinds court_judgment",
        data_dir=DATA_DIR,
        handler=_init,
    )
    init.add_argument("--member-id", required=True, help="the id the registry will know you by")
    init.add_argument(
        "--kinds",
        default="",
        help=f"comma-separated record kinds this agency holds ({', '.join(KINDS)})",
    )
    init.add_argument("--listen", default=node_config.DEFAULT_LISTEN, help="host:port to serve on")

    install = command(
        commands,
        "install",
        "install the files the registry issued at enrolment",
        "credence node install --dir ./court --cert court-1.crt --ca ca.crt "
        "--manifest manifest.bin --root-keys root.jwks.json --pseudonymisation-key pseudo.key",
        data_dir=DATA_DIR,
        handler=_install,
    )
    for flag, meaning in (
        ("--cert", "this node's certificate (PEM)"),
        ("--ca", "the federation CA certificate (PEM)"),
        ("--manifest", "the signed federation manifest (envelope bytes)"),
        ("--root-keys", "the registry's root keys to pin (JWK Set JSON)"),
        ("--pseudonymisation-key", "the federation's subject-reference key (32 raw bytes)"),
    ):
        install.add_argument(flag, type=Path, required=True, help=meaning)

    enrol = command(
        commands,
        "enrol",
        "ask the registry to admit this node, wait for approval, install what it issues",
        "credence node enrol --dir ./court --registry 127.0.0.1:7700 --public 127.0.0.1:7702 "
        "--http https://127.0.0.1:7780 --ca ca.crt --root-keys root.jwks.json --wait 600",
        data_dir=DATA_DIR,
        handler=_enrol,
    )
    enrol.add_argument(
        "--registry", required=True, help="the registry's members' host:port (manifest updates)"
    )
    enrol.add_argument(
        "--public", required=True, help="the registry's public host:port (enrolment)"
    )
    enrol.add_argument(
        "--http", default="",
        help="the registry's HTTP side, https://host:port: the audit reads the log's tiles there",
    )  # fmt: skip
    enrol.add_argument("--ca", type=Path, required=True, help="the federation CA (PEM)")
    enrol.add_argument(
        "--root-keys", type=Path, required=True, help="the registry root keys to pin (JWK Set)"
    )
    enrol.add_argument("--display-name", default="", help="a human-readable name")
    enrol.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for the operator's approval (0: enrol and return)",
    )

    dispute_commands = subcommands(
        commands.add_parser(
            "disputes",
            help="list and resolve subjects' contests of records",
            description="list and resolve subjects' contests of records",
        ),
        DISPUTE_EXAMPLES,
        dest="dispute_command",
        metavar="ACTION",
    )
    listing = command(
        dispute_commands, "list",
        "open contests with their records, filing and due dates, age, and whether overdue",
        "credence node disputes list --dir ./court", data_dir=DATA_DIR, handler=_disputes_list,
    )  # fmt: skip
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    resolving = command(
        dispute_commands,
        "resolve",
        "resolve a contest (upheld, corrected, removed) and tell the registry",
        "credence node disputes resolve --dir ./court CONTEST_ID "
        "--outcome corrected --note 'debt was paid in 2025'",
        data_dir=DATA_DIR,
        handler=_disputes_resolve,
    )
    resolving.add_argument("contest_id")
    resolving.add_argument("--outcome", required=True, choices=("upheld", "corrected", "removed"))
    resolving.add_argument("--note", default="", help="what the subject is told")

    load = command(
        commands,
        "import",
        "import records from CSV or JSON Lines; all or nothing",
        "credence node import --dir ./court judgments.csv",
        data_dir=DATA_DIR,
        handler=_import,
    )
    load.add_argument("file", type=Path, help="a .csv, .jsonl or .ndjson file")
    load.add_argument(
        "--strict",
        action="store_true",
        help="refuse identifiers and record ids that begin like a spreadsheet formula",
    )

    command(
        commands, "migrate", "bring the database schema up to date",
        "credence node migrate --dir ./court", data_dir=DATA_DIR, handler=_migrate,
    )  # fmt: skip
    command(
        commands, "purge", "delete records past their rehabilitation period",
        "credence node purge --dir ./court", data_dir=DATA_DIR, handler=_purge,
    )  # fmt: skip

    run = command(
        commands, "serve", "answer the registry's queries until SIGTERM",
        "credence node serve --dir ./court", data_dir=DATA_DIR, handler=_serve,
    )  # fmt: skip
    run.add_argument("--listen", default=None, help="host:port, overriding node.toml")
    add_observability_flags(run, log_format="json")

    audit = command(
        commands,
        "audit",
        "check that every query this node answered is in the registry's log",
        "credence node audit --dir ./court",
        description=AUDIT_DESCRIPTION,
        data_dir=DATA_DIR,
        handler=_audit,
    )
    audit.add_argument("--json", action="store_true", help="machine-readable output")

    opening = command(
        commands,
        "open-answer",
        "show the cleartext vector and the masks of an answer this node gave",
        "credence node open-answer --dir ./court 3f2a...",
        description=OPEN_ANSWER_DESCRIPTION,
        data_dir=DATA_DIR,
        handler=_open_answer,
    )
    opening.add_argument("query_id", help="a query id, or a screening batch item's query id")
    opening.add_argument("--json", action="store_true", help="machine-readable output")

    notices = command(
        commands, "reviews", "subjects' requests for human review of verdicts this node answered",
        "credence node reviews --dir ./court", data_dir=DATA_DIR, handler=_reviews,
    )  # fmt: skip
    notices.add_argument("--json", action="store_true", help="one JSON object per notice")


def _init(args: argparse.Namespace) -> int:
    data_dir: Path = args.dir
    member_id = validate_member_id(args.member_id)
    kinds = tuple(kind for kind in args.kinds.split(",") if kind)
    if unknown := sorted(set(kinds) - set(KINDS)):
        raise InvalidInput(f"unknown record kinds {unknown} (known: {', '.join(KINDS)})")
    if (data_dir / node_config.CONFIG_FILE).exists():
        raise FailedPrecondition(f"{data_dir} already holds a node; refusing to overwrite its keys")
    config = node_config.NodeConfig(
        data_dir=data_dir, member_id=member_id, listen=args.listen, record_kinds=kinds
    )
    signing_key = SigningKey.generate()
    save_signing_key(config.path(node_config.SIGNING_KEY_FILE), signing_key)
    # The witness key cosigns the registry's checkpoints; `witness = false` leaves it unused.
    save_signing_key(config.path(node_config.WITNESS_KEY_FILE), SigningKey.generate())
    # The key agreement key: the pairwise masks of blind aggregation derive from it.
    save_agreement_key(config.path(node_config.AGREEMENT_KEY_FILE), agreement_key())
    tls_key = generate_tls_key()
    write_private_file(config.path(node_config.TLS_KEY_FILE), private_key_pem(tls_key))
    config.path(node_config.TLS_CSR_FILE).write_bytes(make_csr(tls_key, member_id))
    engine = database.create_engine_for(config.effective_database_url)
    database.upgrade_schema(engine)
    engine.dispose()
    (data_dir / node_config.CONFIG_FILE).write_text(node_config.render_config(config))
    print(f"node {member_id} initialised in {data_dir}")
    print(f"  signing key id: {signing_key.kid}")
    print(f"  certificate request: {config.path(node_config.TLS_CSR_FILE)}")
    print("next: enrol with the registry, then `credence node install`")
    return 0


def _witness_key(config: node_config.NodeConfig) -> SigningKey | None:
    path = config.path(node_config.WITNESS_KEY_FILE)
    return load_signing_key(path) if config.witness and path.is_file() else None


def _enrol(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    signing_key = load_signing_key(config.path(node_config.SIGNING_KEY_FILE))
    ca_pem = args.ca.read_bytes()
    root_jwks = args.root_keys.read_text()
    KeySet.from_jwks(json.loads(root_jwks))
    try:
        client_enrol.enrol(
            args.public,
            ca_pem,
            member_id=config.member_id,
            display_name=args.display_name or config.member_id,
            role="agency",
            csr_pem=config.path(node_config.TLS_CSR_FILE).read_bytes(),
            signing_key=signing_key,
            endpoint=config.listen,
            record_kinds=config.record_kinds,
            witness_key=_witness_key(config),
            agreement_key=public_bytes(
                load_agreement_key(config.path(node_config.AGREEMENT_KEY_FILE))
            ),
        )
        print(f"enrolled {config.member_id}; waiting for the registry operator's approval")
    except AlreadyExists:
        print(f"{config.member_id} is enrolled already; checking its approval")
    deadline = time.monotonic() + args.wait
    pause = 0.1  # an approval seconds away is seen at once; a long wait backs off to 2 s
    while True:
        result = client_enrol.collect_enrolment(
            args.public, ca_pem, member_id=config.member_id, signing_key=signing_key
        )
        if result.state == "active" or time.monotonic() >= deadline:
            break
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)
    if result.state != "active":
        print(f"state: {result.state}; run this again once the operator has approved it")
        return 0 if result.state == "pending" else 1
    config.path(node_config.TLS_CERT_FILE).write_bytes(result.certificate_pem)
    config.path(node_config.CA_CERT_FILE).write_bytes(result.ca_pem)
    config.path(node_config.ROOT_KEYS_FILE).write_text(root_jwks)
    write_private_file(
        config.path(node_config.PSEUDONYMISATION_KEY_FILE), result.pseudonymisation_key
    )
    write_private_file(config.path(node_config.MANIFEST_FILE), result.manifest)
    manifest = load_manifest(config, utc_now())
    updated = dataclasses.replace(
        config,
        registry=args.registry,
        registry_public=args.public,
        registry_http=args.http or config.registry_http,
    )
    (args.dir / node_config.CONFIG_FILE).write_text(node_config.render_config(updated))
    print(f"approved: certificate, CA, manifest version {manifest.version} and keys installed")
    return 0


def _disputes_list(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    now = utc_now()
    deadline = load_manifest(config, now).contest_deadline
    engine = _engine(config)
    try:
        with database.session_factory(engine)() as session:
            rows = disputes.open_disputes(session, deadline)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([_dispute_json(row, now) for row in rows], indent=2))
        return 0
    if not rows:
        print("no open disputes")
    for row in rows:
        overdue = (
            "  OVERDUE: its records do not count until you resolve it" if row.overdue(now) else ""
        )
        print(
            f"{row.contest_id}  {row.records} record(s) [{', '.join(row.kinds)}]  "
            f"filed {format_time(row.filed_at)}  due {format_time(row.due_at)}  "
            f"age {row.age(now).days} d{overdue}: {row.statement[:60]}"
        )
    return 0


def _dispute_json(row: disputes.OpenDispute, now: datetime) -> dict[str, object]:
    return {
        "contest_id": row.contest_id,
        "records": row.records,
        "kinds": list(row.kinds),
        "filed_at": format_time(row.filed_at),
        "due_at": format_time(row.due_at),
        "age_days": row.age(now).days,
        "overdue": row.overdue(now),
        "statement": row.statement,
    }


def _disputes_resolve(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    if not config.registry:
        raise FailedPrecondition("the node knows no registry: enrol it with `credence node enrol`")
    credentials = channel_credentials(
        config.path(node_config.TLS_KEY_FILE).read_bytes(),
        config.path(node_config.TLS_CERT_FILE).read_bytes(),
        config.path(node_config.CA_CERT_FILE).read_bytes(),
    )

    def report(envelope: Envelope) -> None:
        with grpc.secure_channel(config.registry, credentials) as channel, rpc_errors():
            registry_pb2_grpc.RegistryServiceStub(channel).ReportContestOutcome(
                registry_pb2.ReportContestOutcomeRequest(resolution=envelope.to_proto()),
                timeout=10,
            )

    now = utc_now()
    deadline = load_manifest(config, now).contest_deadline
    engine = _engine(config)
    try:
        touched = disputes.resolve(
            engine,
            args.contest_id,
            args.outcome,
            note=args.note,
            member_id=config.member_id,
            signing_key=load_signing_key(config.path(node_config.SIGNING_KEY_FILE)),
            now=now,
            deadline=deadline,
            report=report,
        )
    finally:
        engine.dispose()
    print(f"contest {args.contest_id} {args.outcome}: {touched} record(s); the registry is told")
    return 0


def _reviews(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    engine = _engine(config)
    try:
        with database.session_factory(engine)() as session:
            rows = review_notices.list_notices(session)
    finally:
        engine.dispose()
    if args.json:
        for row in rows:
            print(json.dumps({
                **dataclasses.asdict(row),
                "requested_at": format_time(row.requested_at),
                "received_at": format_time(row.received_at),
            }))  # fmt: skip
        return 0
    if not rows:
        print("no review has been asked for")
    for row in rows:
        answered = "answered here" if row.answered_query else "NOT in this node's query log"
        print(f"{row.review_id}  verdict {row.verdict_id}  query {row.query_id} ({answered})  "
              f"asked {row.requested_at:%Y-%m-%d %H:%M}Z: {row.statement[:60]}")  # fmt: skip
    return 0


def _install(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    certificate = load_certificate_pem(args.cert.read_bytes())
    if (cert_id := member_id_from_certificate(certificate)) != config.member_id:
        raise InvalidInput(
            f"{args.cert} is for member {cert_id!r}, this node is {config.member_id!r}"
        )
    load_certificate_pem(args.ca.read_bytes())
    KeySet.from_jwks(json.loads(args.root_keys.read_text()))
    key = PseudonymisationKey.from_bytes(args.pseudonymisation_key.read_bytes())
    shutil.copyfile(args.cert, config.path(node_config.TLS_CERT_FILE))
    shutil.copyfile(args.ca, config.path(node_config.CA_CERT_FILE))
    shutil.copyfile(args.root_keys, config.path(node_config.ROOT_KEYS_FILE))
    write_private_file(config.path(node_config.PSEUDONYMISATION_KEY_FILE), key.secret)
    shutil.copyfile(args.manifest, config.path(node_config.MANIFEST_FILE))
    manifest = load_manifest(config, utc_now())
    print(f"installed enrolment files; manifest version {manifest.version} verified")
    return 0


def _engine(config: node_config.NodeConfig, *, migrate: bool = False) -> Engine:
    engine = database.create_engine_for(config.effective_database_url)
    if migrate:
        database.upgrade_schema(engine)
    else:
        database.require_current_schema(engine)
    return engine


def _import(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    path = config.path(node_config.PSEUDONYMISATION_KEY_FILE)
    if not path.is_file():
        raise FailedPrecondition(f"{path} is missing: run `credence node install` first")
    if not args.file.is_file():
        raise InvalidInput(f"{args.file} not found")
    key = PseudonymisationKey.from_bytes(path.read_bytes())
    engine = _engine(config)
    progress = Progress(sys.stderr, "import", "bytes read")
    try:
        report: ImportReport = import_records(
            # The import reads, then writes, while the node may be answering.
            database.session_factory(immediate_writer(engine)),
            args.file,
            key,
            progress=progress,
            strict=args.strict,
            # In the data directory: an import killed while applying is
            # undone by the next one.
            staging_dir=config.path(STAGING_DIR_NAME),
        )
    except ImportRefused as refused:
        progress.end(last=False)
        if refused.total_errors == 1:
            # One problem, one line: what a script or a log reader can take whole.
            message = f"import refused, nothing was imported: {refused.errors[0]}"
        else:
            # One problem a line (credence.cli would join them into one).
            message = str(refused)
        print(f"credence: {message}", file=sys.stderr)
        return 1  # credence.cli.EXIT_REFUSED, like every refusal
    finally:
        engine.dispose()
        progress.end()
    print(
        f"imported {report.rows} rows: {report.inserted} new, {report.updated} updated, "
        f"{report.unchanged} unchanged"
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    _engine(config, migrate=True).dispose()
    print(f"database schema is at revision {database.schema_head()}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    engine = _engine(config)
    try:
        with database.session_factory(engine).begin() as session:
            purged = purge_expired(session, utc_now())
    finally:
        engine.dispose()
    print(f"purged {purged} records past their rehabilitation period")
    return 0


def _serve(args: argparse.Namespace) -> int:
    def ready(port: int) -> None:
        print(f"listening on port {port}", flush=True)

    with observed(args, "credence-node"):
        serve(args.dir, listen=args.listen, ready=ready)
    return 0


def _audit(args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr, "audit node", "promises checked")
    try:
        report, alarms = audit_node(args.dir, clock=utc_now, progress=progress)
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
    if any(kind != UNREACHABLE for kind, _, _ in report.problems):
        print("the registry's log is missing what it promised: report this to the federation")
        return 1
    if report.problems:
        return 1
    if report.unchecked:
        # From tiles, a promise newer than the latest cosigned checkpoint is not yet due.
        print(
            f"{report.unchecked} answered quer{'y is' if report.unchecked == 1 else 'ies are'} "
            "not in the log's latest cosigned checkpoint yet, none past the merge delay: "
            "run this again later"
        )
        return 0
    print("every answered query is in the registry's log")
    return 0


def _slot_names(config: node_config.NodeConfig, opened: OpenedAnswer) -> tuple[str, ...]:
    """The slot names of the answer's layout, or ``slot <i>`` under another scorecard."""
    layout = for_scorecard(load_manifest(config, utc_now()).scorecard)
    if layout.layout_id == opened.layout_id and layout.length == len(opened.vector):
        return layout.slots
    return tuple(f"slot {index}" for index in range(len(opened.vector)))


def _open_answer(args: argparse.Namespace) -> int:
    config = node_config.load_config(args.dir)
    engine = _engine(config)
    try:
        with database.session_factory(engine)() as session:
            opened = open_answer(session, args.query_id)
    finally:
        engine.dispose()
    slots = _slot_names(config, opened)
    if args.json:
        print(
            json.dumps(
                {
                    "query_id": opened.query_id,
                    "batch_id": opened.batch_id,
                    "layout_id": opened.layout_id,
                    "audience": list(opened.audience),
                    "answered_at": opened.answered_at.isoformat(),
                    "slots": [
                        {"slot": slot, "value": value, "mask": mask, "masked": masked}
                        for slot, value, mask, masked in zip(
                            slots, opened.vector, opened.masks, opened.masked, strict=True
                        )
                    ],
                },
                indent=2,
            )
        )
        return 0
    batch = f" (item of batch {opened.batch_id})" if opened.batch_id else ""
    print(f"answer to {opened.query_id}{batch}, answered at {opened.answered_at.isoformat()}")
    print(f"layout {opened.layout_id}; audience {', '.join(opened.audience)}")
    width = max(len(slot) for slot in slots) if slots else 4
    print(f"{'slot':<{width}}  {'value':>8}  {'mask (mod 2^64)':>20}  {'masked (sent)':>20}")
    for slot, value, mask, masked in zip(
        slots, opened.vector, opened.masks, opened.masked, strict=True
    ):
        print(f"{slot:<{width}}  {value:>8}  {mask:>20}  {masked:>20}")
    return 0
