"""Bytes a hostile request adds to the registry database (issue 10).

Run: ``python -m bench.bench_amplification``.

A registry of ``credence registry init`` defaults runs in-process; one member
sends each hostile input of ``tests/hostile/amplification_inputs.py`` over
mutual TLS, and the registry's SQLite database is measured before and after
(in-use pages after a WAL checkpoint). Before issue 10 a 105 KB message of
repeated kinds added 38.6 MiB (x386). Prints, per input, the bytes sent (the
serialized request: a lower bound of what crossed the wire), the bytes added
and their ratio; the target is at most 2.

The last line is the one case the ratio does not bound: a flood of single
refused lookups, each logged as one row (~550 bytes) so that the subject sees
the attempt, up to ``refused_rows_per_minute`` (600) per member and minute;
past it the refusals go unlogged. The quota bounds that flood instead.

With ``--postgres-url`` it also measures what one refusal row costs on each
backend (the source of ``request_shape.REFUSAL_ROW_BYTES``): 10,000 rows
appended to a fresh database, SQLite's in-use pages or PostgreSQL's
``pg_total_relation_size`` of every table before and after.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostile.amplification_inputs import (
    BLACKLIST,
    COUNTERPARTY,
    INPUTS,
    PUBLIC,
    measure,
    request,
)
from support.members_port import members_port, organisation, person

from central_registry import database
from central_registry.log.entries import append_entries
from central_registry.log.rows import OUTCOME_REFUSED, LogRow
from credence.v1 import registry_pb2

_ROWS = 10_000
#: A real refusal's reason: "no grant" is what a flood of people without consent gets.
_REASON = (
    "PERMISSION_DENIED: no grant: a lookup needs the subject's consent, a mandate, or "
    "(for an organisation's blacklist status) the public-register basis"
)


def _refusals(count: int) -> list[LogRow]:
    now = datetime.now(UTC)
    return [
        LogRow(query_id=secrets.token_hex(16), requester="acme", subject_type=1,
               subject_ref=secrets.token_bytes(32), purpose=1, kinds="1", grant_id="", basis="",
               outcome=OUTCOME_REFUSED, reason=_REASON, issued_at=now,
               salt=secrets.token_bytes(16), commitment=secrets.token_bytes(32))
        for _ in range(count)
    ]  # fmt: skip


def _bytes_per_row(engine: Engine, size: Callable[[], int]) -> float:
    database.upgrade_schema(engine)
    sessions = database.session_factory(engine)
    with sessions.begin() as session:  # the tree's upper levels exist, as in a live log
        append_entries(session, _refusals(1000))
    before = size()
    with sessions.begin() as session:
        append_entries(session, _refusals(_ROWS))
    return (size() - before) / _ROWS


def _sqlite_row_bytes(directory: Path) -> float:
    path = directory / "rows.db"
    engine = database.create_engine_for(f"sqlite:///{path}")

    def size() -> int:
        connection = sqlite3.connect(path)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            return int((pages - free) * connection.execute("PRAGMA page_size").fetchone()[0])
        finally:
            connection.close()

    try:
        return _bytes_per_row(engine, size)
    finally:
        engine.dispose()


def _postgres_row_bytes(url: str) -> float:
    name = f"bench_amplification_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine = database.create_engine_for(
        make_url(url).set(database=name).render_as_string(hide_password=False)
    )

    def size() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT sum(pg_total_relation_size(quote_ident(tablename))) "
                        "FROM pg_tables WHERE schemaname = 'public'"
                    )
                ).scalar_one()
            )

    try:
        return _bytes_per_row(engine, size)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name}"))
        admin.dispose()


def main() -> None:
    """Send each input once to a fresh member and print what it cost the database."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single-lookups", type=int, default=2000)
    parser.add_argument("--postgres-url", help="also measure a refusal row on PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        print(f"one refusal row: SQLite {_sqlite_row_bytes(Path(temp)):.0f} bytes", end="")
    if args.postgres_url:
        print(f", PostgreSQL {_postgres_row_bytes(args.postgres_url):.0f} bytes", end="")
    print(f" (a {len(_REASON)}-character reason, indexes and Merkle nodes included)")
    with tempfile.TemporaryDirectory() as temp, members_port(Path(temp) / "registry") as port:
        warm = registry_pb2.RequestVerdictRequest(
            subject=organisation(0), kinds=[BLACKLIST], purpose=COUNTERPARTY, grant=PUBLIC
        )
        request(port, warm)  # the member's buckets exist before anything is measured
        print(f"{'input':<20} {'sent':>12} {'added':>12} {'ratio':>7}  status")
        worst = 0.0
        for name in INPUTS:
            measured = measure(port, name)
            worst = max(worst, measured.ratio)
            print(
                f"{name:<20} {measured.sent:>12,} {measured.added:>12,} "
                f"{measured.ratio:>7.3f}  {measured.code.name}"
            )
        print(f"amplification factor (worst of the inputs above): x{worst:.3f}")
        before, sent = port.database_bytes(), 0
        for number in range(args.single_lookups):
            lookup = registry_pb2.RequestVerdictRequest(
                subject=person(10_000 + number), kinds=[BLACKLIST], purpose=COUNTERPARTY
            )
            sent += lookup.ByteSize()
            request(port, lookup)
        added = port.database_bytes() - before
        print(
            f"{args.single_lookups} single refused lookups: {sent:,} bytes sent, {added:,} added, "
            f"x{added / sent:.1f} (one log row each, at most refused_rows_per_minute a minute)"
        )


if __name__ == "__main__":
    main()
