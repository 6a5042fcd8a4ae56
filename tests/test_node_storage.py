"""The agency node's database: migrations, schema checks, types, replay cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, delete, insert, inspect, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from agency_node import database
from agency_node.answering import RecordReader
from agency_node.batch_store import BatchStore
from agency_node.bloom_filter import BloomFilter
from agency_node.models import Base, QueryLogEntry, Record, RecordDispute, SeenQuery
from agency_node.single_store import SingleStore
from credence.errors import FailedPrecondition

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
TABLES = {
    "records",
    "record_disputes",
    "query_log",
    "seen_queries",
    "node_counters",
    "audit_alarms",
    "seen_tree_heads",
    "witnessed_checkpoints",
    "answer_vectors",
    "review_notices",
}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return database.sqlite_url_for(tmp_path)


@pytest.fixture
def schema() -> Schema:
    """The node's database (``make_engine`` and ``engine`` are in support.fixtures)."""
    return database


def _record(record_id: str = "r1", **overrides: object) -> Record:
    fields: dict[str, object] = {
        "subject_ref": bytes(32),
        "subject_type": "person",
        "record_id": record_id,
        "kind": "court_judgment",
        "category": "judgment_debt",
        "status": "active",
        "occurred_at": NOW - timedelta(days=10),
        "expires_at": NOW + timedelta(days=10),
        "content_hash": bytes(32),
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Record(**fields)


# --- schema -----------------------------------------------------------------


def test_sqlite_url_is_node_db_in_the_data_directory(tmp_path: Path) -> None:
    assert database.sqlite_url_for(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'node.db'}"


def test_migrations_create_the_schema_from_empty(make_engine: Callable[[bool], Engine]) -> None:
    engine = make_engine(False)
    assert set(inspect(engine).get_table_names()) == set()
    database.upgrade_schema(engine)
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    assert database.schema_revision(engine) == database.schema_head()
    assert database.schema_is_current(engine)
    database.require_current_schema(engine)


def test_upgrade_is_idempotent(engine: Engine) -> None:
    database.upgrade_schema(engine)
    assert database.schema_is_current(engine)


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_unmigrated_database_is_refused_with_the_fix(
    make_engine: Callable[[bool], Engine], tmp_path: Path, backend: str
) -> None:
    engine = make_engine(False)
    assert not database.schema_is_current(engine)
    # Only a SQLite file names its data directory; a server URL does not.
    data_dir = tmp_path.resolve() if backend == "sqlite" else "<data dir>"
    expected = (
        f"database schema is at revision none (never migrated), the code needs "
        f"{database.schema_head()}: run `credence node migrate --dir {data_dir}`"
    )
    with pytest.raises(FailedPrecondition) as caught:
        database.require_current_schema(engine)
    assert str(caught.value) == expected


def test_database_at_another_revision_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(FailedPrecondition, match="at revision 0000, the code needs 0005"):
        database.require_current_schema(engine)


def test_sqlite_connections_are_tuned(tmp_path: Path) -> None:
    engine = database.create_engine_for(database.sqlite_url_for(tmp_path))
    with engine.connect() as connection:

        def pragma(name: str) -> object:
            return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("busy_timeout") == 10_000
        assert pragma("cache_size") == -64 * 1024
    engine.dispose()


def test_rollback_undoes_every_statement(sessions: sessionmaker[Session]) -> None:
    # pysqlite's own transaction handling is replaced; prove a rollback is whole.
    session = sessions()
    session.begin()
    session.add(_record("r1"))
    session.flush()
    session.rollback()
    session.close()
    with sessions() as session:
        assert session.scalars(select(Record)).all() == []


# --- types --------------------------------------------------------------------


def test_times_come_back_aware_utc(sessions: sessionmaker[Session]) -> None:
    shanghai = timezone(timedelta(hours=8))
    occurred = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=shanghai)
    with sessions.begin() as session:
        session.add(_record(occurred_at=occurred))
    with sessions() as session:
        stored = session.scalars(select(Record)).one()
    assert stored.occurred_at == occurred
    assert stored.occurred_at.tzinfo is UTC
    assert stored.occurred_at.hour == 0


def test_naive_time_is_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(StatementError, match="must be timezone-aware"), sessions.begin() as session:
        session.add(_record(occurred_at=datetime(2025, 3, 1)))


def test_record_id_is_unique(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.add(_record("r1"))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(_record("r1"))


def test_disputes_cascade_when_a_record_is_deleted(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        record = _record()
        record.disputes.append(RecordDispute(contest_id="c1", state="open", note="", at=NOW))
        session.add(record)
    with sessions.begin() as session:
        # A Core delete: the database's ON DELETE CASCADE must do the work.
        session.execute(delete(Record).execution_options(synchronize_session=False))
    with sessions() as session:
        assert session.scalars(select(RecordDispute)).all() == []


def test_dispute_state_is_checked(sessions: sessionmaker[Session]) -> None:
    record = _record()
    record.disputes.append(RecordDispute(contest_id="c1", state="maybe", note="", at=NOW))
    with pytest.raises(IntegrityError, match="known_state"), sessions.begin() as session:
        session.add(record)


def test_query_log_keeps_refusals_and_replays(sessions: sessionmaker[Session]) -> None:
    entry = {
        "query_id": "q1",
        "received_at": NOW,
        "requester": "bank-a",
        "purpose": "credit_check",
        "kinds": "blacklist,credit",
        "outcome": "refused",
        "status_code": "ALREADY_EXISTS",
        "reason": "query q1 was already received",
    }
    with sessions.begin() as session:
        session.execute(insert(QueryLogEntry), [entry, entry])
    with sessions() as session:
        rows = session.scalars(select(QueryLogEntry)).all()
    assert [row.query_id for row in rows] == ["q1", "q1"]
    assert rows[0].subject_ref is None
    assert rows[0].inclusion_checked_at is None


# --- replay cache -------------------------------------------------------------


def test_replayed_query_id_is_refused_by_the_primary_key(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(insert(SeenQuery).values(query_id="q1", expires_at=NOW))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.execute(insert(SeenQuery).values(query_id="q1", expires_at=NOW))


def test_replay_claim_keeps_the_transaction_usable(engine: Engine) -> None:
    store = BatchStore(engine)
    with engine.begin() as connection:
        assert store.claim(connection, ["q1"], NOW) == {"q1"}
    with engine.begin() as connection:
        assert store.claim(connection, ["q1"], NOW) == set(), "q1 was already received"
        # The refusal can still be logged in the same transaction.
        assert store.claim(connection, ["q2"], NOW) == {"q2"}
    with engine.connect() as connection:
        assert sorted(connection.scalars(select(SeenQuery.query_id))) == ["q1", "q2"]


def test_replay_check_holds_across_engines(make_engine: Callable[[bool], Engine]) -> None:
    first, second = make_engine(True), make_engine(False)
    with first.begin() as connection:
        assert BatchStore(first).claim(connection, ["q1"], NOW) == {"q1"}
    with second.begin() as connection:
        assert BatchStore(second).claim(connection, ["q1"], NOW) == set()


def test_prune_forgets_only_ids_past_expiry_and_skew(sessions: sessionmaker[Session]) -> None:
    skew = timedelta(minutes=5)
    with sessions.begin() as session:
        for query_id, expires_at in (
            ("old", NOW - timedelta(minutes=6)),
            ("edge", NOW - timedelta(minutes=4)),
            ("live", NOW + timedelta(minutes=1)),
        ):
            session.execute(insert(SeenQuery).values(query_id=query_id, expires_at=expires_at))
    with sessions.begin() as session:
        assert database.prune_seen_queries(session, NOW, skew) == 1
    with sessions() as session:
        assert sorted(session.scalars(select(SeenQuery.query_id))) == ["edge", "live"]


# --- record generation and refs ----------------------------------------------


def test_record_generation_starts_at_zero_and_bumps(engine: Engine) -> None:
    with engine.connect() as connection:
        assert database.record_generation(connection) == 0
    with engine.begin() as connection:
        database.bump_record_generation(connection)
    with engine.connect() as connection:
        assert database.record_generation(connection) == 1


def test_subject_refs_are_distinct(sessions: sessionmaker[Session], engine: Engine) -> None:
    with sessions.begin() as session:
        session.add_all(
            [
                _record("r1", subject_ref=b"a" * 32),
                _record("r2", subject_ref=b"a" * 32),
                _record("r3", subject_ref=b"b" * 32),
            ]
        )
    with engine.connect() as connection:
        assert database.record_count(connection) == 3
        assert sorted(database.iter_all_subject_refs(connection, batch=1)) == [
            b"a" * 32,
            b"b" * 32,
        ]


# --- the batch path's driver-level writes -----------------------------------------


def test_batch_claim_refuses_replays_and_repeats_and_keeps_the_rest(engine: Engine) -> None:
    store = BatchStore(engine)
    with engine.begin() as connection:
        assert store.claim(connection, ["q1", "q2"], NOW) == {"q1", "q2"}
    with engine.begin() as connection:
        # q1 replayed, q3 twice in one batch: both refused; q4 is new.
        assert store.claim(connection, ["q1", "q3", "q3", "q4"], NOW) == {"q4"}
    with engine.connect() as connection:
        stored = connection.execute(select(SeenQuery.query_id, SeenQuery.expires_at)).all()
    assert sorted(stored) == [("q1", NOW), ("q2", NOW), ("q4", NOW)]


def test_batch_log_rows_read_back_through_the_model(engine: Engine) -> None:
    store = BatchStore(engine)
    row = (
        "q1",
        store.time(NOW),
        "bank-a",
        "credit_check",
        "blacklist",
        b"r" * 32,
        "answered",
        "OK",
        "",
        b"c" * 32,
        b"promise",
        b"h" * 32,
    )
    with engine.begin() as connection:
        store.log(
            connection, [row, (*row[:6], "refused", "ALREADY_EXISTS", "replay", None, None, None)]
        )
    with Session(engine) as session:
        entries = session.scalars(select(QueryLogEntry).order_by(QueryLogEntry.id)).all()
    assert [(e.outcome, e.received_at, e.subject_ref) for e in entries] == [
        ("answered", NOW, b"r" * 32),
        ("refused", NOW, b"r" * 32),
    ]
    assert entries[0].received_at.tzinfo is UTC
    assert (entries[0].log_promise, entries[1].log_promise) == (b"promise", None)


# --- the single path's driver-level transaction -------------------------------------


def test_single_claim_refuses_a_replay_across_engines(
    make_engine: Callable[[bool], Engine],
) -> None:
    first, second = SingleStore(make_engine(True)), SingleStore(make_engine(False))
    with first.transaction() as transaction:
        assert transaction.claim("q1", NOW) is True
    with second.transaction() as transaction:
        assert transaction.claim("q1", NOW) is False, "q1 was already received"
        assert transaction.claim("q2", NOW) is True, "the transaction stays usable"
    with first.transaction() as transaction:
        assert transaction.claim("q2", NOW) is False


def test_single_transaction_reads_records_and_logs_in_one_commit(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    with sessions.begin() as session:
        session.add_all(
            [
                _record("r1", subject_ref=b"a" * 32, disputed=True, days_overdue=30),
                _record("r2", subject_ref=b"a" * 32),
                _record("r3", subject_ref=b"b" * 32),
            ]
        )
    store = SingleStore(engine)
    with store.transaction() as transaction:
        records = transaction.records(b"a" * 32)
        assert transaction.records(b"c" * 32) == []
        transaction.log(
            ("q1", store.time(NOW), "bank-a", "credit_check", "blacklist", b"a" * 32,
             "answered", "OK", "", b"c" * 32, b"promise", b"h" * 32)
        )  # fmt: skip
    assert len(records) == 2
    assert {(r.disputed, r.days_overdue) for r in records} == {(True, 30), (False, None)}
    assert all(r.occurred_at.tzinfo is UTC for r in records)
    with Session(engine) as session:
        entry = session.scalars(select(QueryLogEntry)).one()
    assert (entry.query_id, entry.received_at, entry.log_promise) == ("q1", NOW, b"promise")


def test_single_transaction_keeps_nothing_when_it_fails(engine: Engine) -> None:
    store = SingleStore(engine)

    def crash_after_the_claim() -> None:
        with store.transaction() as transaction:
            assert transaction.claim("q1", NOW) is True
            raise RuntimeError("crash between the claim and the log row")

    with pytest.raises(RuntimeError, match="crash"):
        crash_after_the_claim()
    with engine.connect() as connection:
        assert list(connection.scalars(select(SeenQuery.query_id))) == []
    with store.transaction() as transaction:
        assert transaction.claim("q1", NOW) is True, "the failed claim left nothing behind"


# --- the Bloom filter behind record reads -------------------------------------


def test_a_stale_filter_never_blocks_reads_and_misses_no_record(
    sessions: sessionmaker[Session], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an import the filter rebuilds in the background; reads go to the database."""
    held, new = bytes([1]) * 32, bytes([2]) * 32
    with sessions.begin() as session:
        session.add(_record("r1", subject_ref=held))
        database.bump_record_generation(session)
    reader = RecordReader(engine)
    reader.warm()
    assert set(reader.records_for([held, new])) == {held}

    release = threading.Event()
    real_build = BloomFilter.build

    def slow_build(refs: Iterable[bytes], expected_items: int) -> BloomFilter:
        assert release.wait(30), "the test never released the rebuild"
        return real_build(refs, expected_items)

    monkeypatch.setattr(BloomFilter, "build", slow_build)
    with sessions.begin() as session:  # an import: a new subject, the generation moves
        session.add(_record("r2", subject_ref=new))
        database.bump_record_generation(session)
    # The rebuild is stuck, yet the read returns at once and finds the new subject.
    assert set(reader.records_for([held, new, bytes([3]) * 32])) == {held, new}
    release.set()
    deadline = time.monotonic() + 30
    while reader._rebuilding is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader._rebuilding is None
    assert set(reader.records_for([held, new, bytes([3]) * 32])) == {held, new}
