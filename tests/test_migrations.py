"""Alembic migrations of the node and the registry, on SQLite and PostgreSQL.

For each component: upgrade an empty database to the first revision, fill
every table with a realistic row, upgrade to head (the rows survive, and the
models read them), fill the tables head added, then step down revision by
revision to base and back up to head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session

from agency_node import database as node_database
from agency_node import models as node_models
from central_registry import database as registry_database
from central_registry import models as registry_models

NOW = datetime(2026, 11, 28, 10, 0, 0, 123456, tzinfo=UTC)
REF = bytes(range(32))
HASH = bytes(range(32, 64))

Rows = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Component:
    """One component's migrations, engine factory and test rows per revision."""

    name: str
    script_location: Path
    create_engine: Callable[[str], Engine]
    schema_head: Callable[[], str]
    base: type[DeclarativeBase]
    #: Rows to insert right after upgrading to each revision, by table.
    rows: dict[str, Rows]
    #: Rows a revision's own migration inserts (kept through later upgrades).
    seeded: Rows
    #: Tables a revision creates and fills from older tables (no test rows of their own).
    derived: dict[str, tuple[str, ...]] = field(default_factory=dict)


NODE = Component(
    name="node",
    script_location=Path(node_database.__file__).resolve().parent / "migrations",
    create_engine=node_database.create_engine_for,
    schema_head=node_database.schema_head,
    base=node_models.Base,
    rows={
        "0001": {
            "records": [
                {
                    "id": 1,
                    "subject_ref": REF,
                    "subject_type": "person",
                    "record_id": "SRC-000001",
                    "kind": "court_judgment",
                    "category": "judgment_debt",
                    "amount_minor": 123450,
                    "currency": "CNY",
                    "status": "active",
                    "occurred_at": NOW - timedelta(days=400),
                    "expires_at": NOW + timedelta(days=1425),
                    "days_overdue": 90,
                    "disputed": True,
                    "content_hash": HASH,
                    "updated_at": NOW,
                }
            ],
            "record_disputes": [
                {
                    "id": 1,
                    "record_pk": 1,
                    "contest_id": "contest-1",
                    "state": "open",
                    "note": "the subject says it was paid",
                    "at": NOW,
                }
            ],
            "query_log": [
                {
                    "id": 1,
                    "query_id": "q-0001",
                    "received_at": NOW,
                    "requester": "bank-a",
                    "purpose": "credit_check",
                    "kinds": "blacklist,credit",
                    "subject_ref": REF,
                    "outcome": "answered",
                    "status_code": "OK",
                    "reason": "",
                    "entry_commitment": HASH,
                    "log_promise": b"\x0a\x03env" * 20,
                    "answer_hash": HASH,
                    "inclusion_checked_at": NOW + timedelta(minutes=5),
                }
            ],
            "seen_queries": [{"query_id": "q-0001", "expires_at": NOW + timedelta(minutes=5)}],
        },
        "0002": {
            "audit_alarms": [
                {
                    "id": 1,
                    "raised_at": NOW,
                    "kind": "missing_entry",
                    "query_id": "q-0001",
                    "detail": "entry not in the log at tree size 7",
                }
            ],
            "seen_tree_heads": [
                {"tree_size": 2**40, "root": HASH, "envelope": b"\x0a\x02th" * 30, "seen_at": NOW}
            ],
        },
        "0003": {
            "witnessed_checkpoints": [
                {
                    "origin": "credence/fed/log",
                    "tree_size": 2**40,
                    "root": HASH,
                    "note": b"credence/fed/log\n" * 8,
                    "cosigned_at": NOW,
                }
            ],
        },
        "0004": {
            "answer_vectors": [
                {
                    "query_id": "q-0001",
                    "batch": False,
                    "layout_id": "2026.1/" + "ab" * 32,
                    "audience": "bank-1,court-1",
                    "item_ids": "",
                    "vectors": bytes(range(16)),
                    "masks": bytes(range(16, 32)),
                    "answered_at": NOW,
                }
            ],
        },
        # 0005 adds records.contest_due_at (null: no contest open) and review notices.
        "0005": {
            "review_notices": [
                {
                    "review_id": "r-0001",
                    "verdict_id": "v-0001",
                    "query_id": "q-0001",
                    "subject_ref": HASH,
                    "statement": "the late payment was the bank's error",
                    "requested_at": NOW,
                    "received_at": NOW + timedelta(seconds=1),
                    "answered_query": True,
                    "notice": b"\x0a\x02rn" * 30,
                }
            ],
        },
    },
    seeded={"node_counters": [{"name": "record_generation", "value": 0}]},
)

REGISTRY = Component(
    name="registry",
    script_location=Path(registry_database.__file__).resolve().parent / "migrations",
    create_engine=registry_database.create_engine_for,
    schema_head=registry_database.schema_head,
    base=registry_models.Base,
    rows={
        "0001": {
            "members": [
                {
                    "member_id": "bank-a",
                    "display_name": "Bank A",
                    "role": "company",
                    "state": "active",
                    "endpoint": "bank-a.example:443",
                    "signing_key": REF,
                    "signing_kid": "kid-bank-a",
                    "record_kinds": "",
                    "identity_verifier": False,
                    "allowed_purposes": "credit_check",
                    "allowed_kinds": "blacklist,credit",
                    "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n...",
                    "certificate_pem": "-----BEGIN CERTIFICATE-----\n...",
                    "certificate_serial": "1a2b3c",
                    "created_at": NOW - timedelta(days=3),
                    "updated_at": NOW,
                }
            ],
            "revoked_serials": [{"serial": "0ff1ce", "member_id": "bank-b", "revoked_at": NOW}],
            "manifests": [
                {
                    "version": 3,
                    "issued_at": NOW,
                    "expires_at": NOW + timedelta(days=1),
                    "envelope": b"\x0a\x08manifest" * 10,
                }
            ],
            "bindings": [
                {
                    "subject_ref": "aa" * 32,
                    "subject_kid": "kid-subject",
                    "identity_member": "idv-1",
                    "binding_token": "eyJhbGciOiJFZERTQSJ9.e30.sig",
                    "registered_at": NOW,
                    "expires_at": NOW + timedelta(days=365),
                }
            ],
            "grants": [
                {
                    "grant_id": "g-0001",
                    "kind": "consent",
                    "subject_ref": "aa" * 32,
                    "requester": "bank-a",
                    "purpose": "credit_check",
                    "scope": "blacklist,credit",
                    "issued_at": NOW,
                    "not_before": NOW,
                    "expires_at": NOW + timedelta(days=30),
                    "max_uses": 3,
                    "uses": 1,
                    "data_life_seconds": 86400,
                    "token": "eyJhbGciOiJFZERTQSJ9.e30.sig",
                    "legal_basis": None,
                    "embargo_until": None,
                    "revoked_at": None,
                }
            ],
            "log_entries": [
                {
                    "idx": 0,
                    "query_id": "q-0001",
                    "requester": "bank-a",
                    "subject_type": 1,
                    "subject_ref": REF,
                    "purpose": 2,
                    "kinds": "1,2",
                    "grant_id": "g-0001",
                    "basis": "consent g-0001",
                    "outcome": "dispatched",
                    "reason": "",
                    "issued_at": NOW,
                    "salt": bytes(16),
                    "commitment": HASH,
                    "embargo_until": NOW + timedelta(days=2),
                }
            ],
            "subject_usage": [{"requester": "bank-a", "day": "2026-11-28", "subject_ref": REF}],
        },
        "0002": {
            "merkle_nodes": [{"level": 0, "idx": 2**33, "hash": HASH}],
            "tree_heads": [
                {"tree_size": 1, "root": HASH, "signed_at": NOW, "envelope": b"\x0a\x02th" * 30}
            ],
            "contests": [
                {
                    "contest_id": "contest-1",
                    "subject_ref": "aa" * 32,
                    "agency": "agency-1",
                    "record_kind": "court_judgment",
                    "statement": "this debt was settled in 2025",
                    "state": "upheld",
                    "records_flagged": 2,
                    "filed_at": NOW,
                    "resolved_at": NOW + timedelta(days=3),
                    "resolution_note": "corrected at the source",
                }
            ],
            "used_subject_proofs": [{"jti": "jti-0001", "expires_at": NOW + timedelta(minutes=5)}],
        },
        "0003": {
            "rate_buckets": [{"requester": "bank-a", "tokens": 399.5, "updated_at": NOW}],
        },
        # 0004 adds columns to grants (checked by test_registry_0004_* below).
        "0004": {},
        # 0005 adds members.witness_key (null: members enrolled before witnessed nothing).
        "0005": {},
        # 0006 adds the operator's console: admin token hashes, admin actions, node alarms.
        "0006": {
            "admin_tokens": [
                {
                    "token_hash": "ab" * 32,
                    "name": "operator",
                    "created_at": NOW,
                    "expires_at": NOW + timedelta(days=90),
                }
            ],
            "admin_actions": [
                {
                    "id": 1,
                    "at": NOW,
                    "admin": "operator",
                    "action": "suspend",
                    "member_id": "bank-a",
                    "outcome": "ok",
                }
            ],
            "alarms": [
                {
                    "id": 1,
                    "member_id": "court-1",
                    "kind": "missing_entry",
                    "count": 2,
                    "tree_size": 1234,
                    "raised_at": NOW - timedelta(minutes=1),
                    "received_at": NOW,
                }
            ],
        },
        # 0007 counts the subjects noted per requester and day into subject_day_counts
        # (the models' read below finds the one count of 0001's subject_usage row).
        "0007": {},
        # 0008 adds members.agreement_key (null: agencies enrolled before publish none).
        "0008": {},
        # 0009 adds served verdicts, human reviews and contests.due_at (null before it).
        "0009": {
            "verdict_records": [
                {
                    "verdict_id": "v-0001",
                    "query_id": "q-0001",
                    "subject_type": 1,
                    "subject_ref": b"\x01" * 32,
                    "requester": "bank-a",
                    "answered": "court-1,bank-1",
                    "issued_at": NOW,
                    "expires_at": NOW + timedelta(days=30),
                    "explanation": b"\x0a\x02ex" * 30,
                }
            ],
            "reviews": [
                {
                    "review_id": "r-0001",
                    "verdict_id": "v-0001",
                    "query_id": "q-0001",
                    "subject_type": 1,
                    "subject_ref": b"\x01" * 32,
                    "statement": "please have a person look at this",
                    "state": "upheld",
                    "agencies": "court-1",
                    "untold": "bank-1",
                    "requested_at": NOW,
                    "log_index": 2**40,
                    "decided_at": NOW + timedelta(days=2),
                    "reviewer": "operator",
                    "outcome_statement": "checked by hand: the verdict stands",
                    "outcome": b"\x0a\x02ro" * 30,
                }
            ],
        },
    },
    seeded={},
    derived={"0007": ("subject_day_counts",)},
)


@pytest.fixture(params=[NODE, REGISTRY], ids=lambda component: component.name)
def component(request: pytest.FixtureRequest) -> Component:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def engine(database_url: str, component: Component) -> Iterator[Engine]:
    engine = component.create_engine(database_url)
    yield engine
    engine.dispose()


def _migrate(engine: Engine, component: Component, action: str, revision: str) -> None:
    # What Migrations.upgrade does, to any revision and in either direction.
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(component.script_location))
        config.attributes["connection"] = connection
        if action == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)


def _revisions(component: Component) -> list[str]:
    config = Config()
    config.set_main_option("script_location", str(component.script_location))
    scripts = ScriptDirectory.from_config(config)
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def _aware(value: object) -> object:
    # SQLite hands back naive UTC through a reflected DATETIME; PostgreSQL aware.
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _insert(engine: Engine, rows: Rows) -> None:
    # Reflected: the tables as the database has them at this revision, not the models'.
    metadata = MetaData()
    with engine.begin() as connection:
        for name, values in rows.items():
            table = Table(name, metadata, autoload_with=connection)
            connection.execute(table.insert(), values)


def _stored(engine: Engine, names: list[str]) -> Rows:
    metadata = MetaData()
    stored: Rows = {}
    with engine.connect() as connection:
        for name in names:
            table = Table(name, metadata, autoload_with=connection)
            result = connection.execute(select(table))
            stored[name] = [
                {key: _aware(value) for key, value in row.items()} for row in result.mappings()
            ]
    return stored


def _expected(component: Component, up_to: str) -> Rows:
    expected: Rows = {name: list(rows) for name, rows in component.seeded.items()}
    for revision, rows in component.rows.items():
        expected.update(rows)
        if revision == up_to:
            break
    return expected


def _derived(component: Component, up_to: str) -> set[str]:
    revisions = list(component.rows)
    reached = revisions[: revisions.index(up_to) + 1]
    return {table for revision in reached for table in component.derived.get(revision, ())}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _assert_rows(engine: Engine, component: Component, up_to: str) -> None:
    expected = _expected(component, up_to)
    stored = _stored(engine, sorted(expected))
    for name, rows in expected.items():
        # Columns the test left out get their server defaults; compare what it set.
        assert [{key: row[key] for key in rows[0]} for row in stored[name]] == rows, name


def _assert_models_read_everything(engine: Engine, component: Component) -> None:
    with Session(engine) as session:
        for mapper in component.base.registry.mappers:
            objects = session.scalars(select(mapper.class_)).all()
            assert len(objects) == 1, mapper.class_.__name__
            for column in mapper.columns:
                value = getattr(objects[0], column.key)
                if isinstance(value, datetime):
                    assert value.tzinfo is UTC, f"{mapper.class_.__name__}.{column.key}"


def test_every_revision_has_test_rows(component: Component) -> None:
    # A new migration must add its tables' rows above, or the tests below skip it.
    revisions = _revisions(component)
    assert revisions == list(component.rows)
    assert revisions[-1] == component.schema_head()


def test_data_survives_every_upgrade(engine: Engine, component: Component) -> None:
    revisions = _revisions(component)
    assert _tables(engine) == set()
    for revision in revisions:
        _migrate(engine, component, "upgrade", revision)
        _insert(engine, component.rows[revision])
        _assert_rows(engine, component, revision)
    assert _tables(engine) == set(component.base.metadata.tables)
    # The models (UTCDateTime and all) read every table the migrations built.
    _assert_models_read_everything(engine, component)


def test_downgrade_to_base_and_upgrade_again(engine: Engine, component: Component) -> None:
    revisions = _revisions(component)
    # Each revision's rows go in as it is reached: a later revision may add
    # required columns that its own migration fills for the rows already there.
    for revision in revisions:
        _migrate(engine, component, "upgrade", revision)
        _insert(engine, component.rows[revision])
    for below in reversed(revisions[:-1]):
        _migrate(engine, component, "downgrade", below)
        _assert_rows(engine, component, below)
        assert _tables(engine) == set(_expected(component, below)) | _derived(component, below)
    _migrate(engine, component, "downgrade", "base")
    assert _tables(engine) == set()
    _migrate(engine, component, "upgrade", "head")
    assert _tables(engine) == set(component.base.metadata.tables)
    # A fresh schema: only what the migrations themselves insert.
    stored = _stored(engine, sorted(component.base.metadata.tables))
    assert {name: rows for name, rows in stored.items() if rows} == component.seeded


def test_registry_0004_numbers_grants_and_keeps_one_grant_per_request(database_url: str) -> None:
    engine = REGISTRY.create_engine(database_url)
    try:
        _migrate(engine, REGISTRY, "upgrade", "0003")
        older = dict(REGISTRY.rows["0001"]["grants"][0])
        newer = {**older, "grant_id": "g-0002", "issued_at": NOW + timedelta(hours=1)}
        _insert(engine, {"grants": [newer, older]})
        _migrate(engine, REGISTRY, "upgrade", "0004")
        stored = _stored(engine, ["grants"])["grants"]
        # Existing grants get revocation-list bits in issue order; no request recorded.
        assert {row["grant_id"]: row["status_index"] for row in stored} == {
            "g-0001": 0,
            "g-0002": 1,
        }
        assert {row["request_jti"] for row in stored} == {None}
        same_request = {"request_jti": "req-1", "status_index": 2}
        _insert(engine, {"grants": [{**older, "grant_id": "g-0003", **same_request}]})
        with pytest.raises(IntegrityError):
            _insert(engine, {"grants": [{**older, "grant_id": "g-0004", **same_request,
                                         "status_index": 3}]})  # fmt: skip
        with pytest.raises(IntegrityError):
            _insert(engine, {"grants": [{**older, "grant_id": "g-0005", "status_index": 2}]})
        _migrate(engine, REGISTRY, "downgrade", "0003")
        kept = sorted(row["grant_id"] for row in _stored(engine, ["grants"])["grants"])
        assert kept == ["g-0001", "g-0002", "g-0003"]
    finally:
        engine.dispose()
