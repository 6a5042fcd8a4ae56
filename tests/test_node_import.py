"""Importing records: validation, all-or-nothing, idempotence, purge."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import MakeEngine, Schema

from agency_node import database
from agency_node.importer import (
    ImportRefused,
    ImportReport,
    import_records,
    purge_expired,
)
from agency_node.models import Record, RecordDispute
from credence.errors import InvalidInput
from credence.import_format import FIELDS
from credence.record_kinds import rehabilitation_end
from credence.subjects import PseudonymisationKey, ref_for

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
KEY = PseudonymisationKey.from_bytes(bytes(range(32)))
RID = "cn-rid:11010519491231002X"
USCC = "cn-uscc:91350100M000100Y43"

Row = dict[str, Any]
# Overrides the backend parameter: these tests read the SQLite file itself.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def _row(n: int = 1, **overrides: Any) -> Row:
    row: Row = {
        "record_id": f"SRC-{n:06d}",
        "identifier": f"nin:AB{n:06d}",
        "kind": "court_judgment",
        "category": "judgment_debt",
        "amount": "1234.50",
        "currency": "CNY",
        "status": "active",
        "occurred_at": "2025-06-01",
        "expires_at": "",
        "disputed": "false",
        "days_overdue": "",
    }
    row.update(overrides)
    return row


def _rows(count: int) -> list[Row]:
    return [_row(n) for n in range(1, count + 1)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "node"
    directory.mkdir()
    return directory


@pytest.fixture
def sqlite_url(data_dir: Path) -> str:
    return database.sqlite_url_for(data_dir)


# database_url (conftest.py) runs every test using ``engine`` (support.fixtures) once on
# SQLite, once on PostgreSQL; tests about node.db's bytes pin backend to SQLite.
@pytest.fixture
def schema() -> Schema:
    return database


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def _write(rows: list[Row], name: str = "records.csv", header: list[str] | None = None) -> Path:
        path = tmp_path / name
        columns = header if header is not None else list(FIELDS)
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([row.get(column, "") for column in columns])
        return path

    return _write


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    def _write(documents: list[Any], name: str = "records.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(document) + "\n" for document in documents))
        return path

    return _write


def _import(sessions: sessionmaker[Session], path: Path, **kwargs: Any) -> ImportReport:
    kwargs.setdefault("now", NOW)
    return import_records(sessions, path, KEY, **kwargs)


def _records(sessions: sessionmaker[Session]) -> dict[str, Record]:
    with sessions() as session:
        return {r.record_id: r for r in session.scalars(select(Record))}


def _refused(sessions: sessionmaker[Session], path: Path, **kwargs: Any) -> ImportRefused:
    with pytest.raises(ImportRefused) as caught:
        _import(sessions, path, **kwargs)
    return caught.value


def _file_digest(engine: Engine, data_dir: Path) -> str:
    # Closing every connection checkpoints the WAL into node.db and removes it.
    engine.dispose()
    assert not (data_dir / "node.db-wal").exists()
    return hashlib.sha256((data_dir / "node.db").read_bytes()).hexdigest()


# --- importing ----------------------------------------------------------------


def test_csv_import_stores_normalised_records(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = [
        _row(1, identifier=RID),
        _row(
            2,
            identifier=USCC,
            kind="tax_arrears",
            category="tax_arrears",
            amount="100",
            currency="jpy",
            occurred_at="2025-06-01T08:30:00+08:00",
            expires_at="2026-12-31",
            disputed="TRUE",
        ),
        _row(3, kind="fraud_flag", category="fraud", amount="", currency=""),
        _row(4, kind="late_payment", category="utility", days_overdue="45", amount="0.5"),
    ]
    report = _import(sessions, write_csv(rows))
    assert report == ImportReport(rows=4, inserted=4, updated=0, unchanged=0)
    records = _records(sessions)

    first = records["SRC-000001"]
    assert first.subject_ref == ref_for(KEY, RID).ref
    assert first.subject_type == "person"
    assert (first.amount_minor, first.currency) == (123450, "CNY")
    assert first.occurred_at == datetime(2025, 6, 1, tzinfo=UTC)
    assert first.expires_at == rehabilitation_end("court_judgment", first.occurred_at, None)
    assert first.disputed is False
    assert first.updated_at == NOW

    second = records["SRC-000002"]
    assert second.subject_type == "organisation"
    assert (second.amount_minor, second.currency) == (100, "JPY")
    assert second.occurred_at == datetime(2025, 6, 1, 0, 30, tzinfo=UTC)
    # An explicit expiry earlier than the rehabilitation period wins.
    assert second.expires_at == datetime(2026, 12, 31, tzinfo=UTC)
    assert second.disputed is True

    third = records["SRC-000003"]
    assert (third.amount_minor, third.currency) == (None, None)
    fourth = records["SRC-000004"]
    assert (fourth.days_overdue, fourth.amount_minor) == (45, 50)


def test_explicit_expiry_cannot_extend_the_period(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    _import(sessions, write_csv([_row(1, expires_at="2040-01-01")]))
    record = _records(sessions)["SRC-000001"]
    assert record.expires_at == record.occurred_at + timedelta(days=5 * 365)


def test_optional_columns_may_be_left_out_and_bom_is_accepted(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text(
        "\ufeffoccurred_at,status,record_id,identifier,kind,category\n"
        f"2025-01-01,active,r1,{RID},bankruptcy,liquidation\n",
        encoding="utf-8",
    )
    assert _import(sessions, path).inserted == 1
    record = _records(sessions)["r1"]
    assert (record.kind, record.category, record.amount_minor) == (
        "bankruptcy",
        "liquidation",
        None,
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_jsonl_import(
    sessions: sessionmaker[Session], write_jsonl: Callable[..., Path], suffix: str
) -> None:
    documents = [
        {
            "record_id": "j1",
            "identifier": USCC,
            "kind": "loan_default",
            "category": "mortgage",
            "amount": 1234.5,  # a JSON number stays exact
            "currency": "USD",
            "status": "active",
            "occurred_at": "2024-02-29",
            "disputed": True,
            "days_overdue": None,
        },
        {
            "record_id": "j2",
            "identifier": RID,
            "kind": "late_payment",
            "category": "rent",
            "status": "settled",
            "occurred_at": "2024-03-01T00:00:00Z",
            "days_overdue": 30,
        },
    ]
    report = _import(sessions, write_jsonl(documents, name=f"records{suffix}"))
    assert report == ImportReport(rows=2, inserted=2, updated=0, unchanged=0)
    records = _records(sessions)
    assert (records["j1"].amount_minor, records["j1"].disputed) == (123450, True)
    assert (records["j2"].days_overdue, records["j2"].status) == (30, "settled")


def test_csv_and_jsonl_of_the_same_rows_are_the_same_records(
    sessions: sessionmaker[Session],
    write_csv: Callable[..., Path],
    write_jsonl: Callable[..., Path],
) -> None:
    rows = _rows(5)
    _import(sessions, write_csv(rows))
    # Equal content hashes: nothing to rewrite.
    report = _import(sessions, write_jsonl([{k: v for k, v in r.items() if v} for r in rows]))
    assert report == ImportReport(rows=5, inserted=0, updated=0, unchanged=5)


def test_reimport_changes_nothing(
    sessions: sessionmaker[Session], engine: Engine, write_csv: Callable[..., Path]
) -> None:
    path = write_csv(_rows(50))
    assert _import(sessions, path) == ImportReport(50, 50, 0, 0)
    with engine.connect() as connection:
        generation = database.record_generation(connection)
    before = {rid: (r.id, r.updated_at, r.content_hash) for rid, r in _records(sessions).items()}

    later = NOW + timedelta(days=1)
    assert _import(sessions, path, now=later) == ImportReport(50, 0, 0, 50)
    after = {rid: (r.id, r.updated_at, r.content_hash) for rid, r in _records(sessions).items()}
    assert after == before
    with engine.connect() as connection:
        assert database.record_generation(connection) == generation


def test_updated_file_updates_in_place(
    sessions: sessionmaker[Session], engine: Engine, write_csv: Callable[..., Path]
) -> None:
    rows = _rows(10)
    _import(sessions, write_csv(rows))
    ids_before = {rid: r.id for rid, r in _records(sessions).items()}
    with engine.connect() as connection:
        generation = database.record_generation(connection)

    rows[3]["status"] = "settled"
    rows[7]["amount"] = "99.99"
    # Same values written differently are not a change.
    rows[5]["amount"] = "1234.5000"
    rows[5]["occurred_at"] = "2025-06-01T08:00:00+08:00"
    rows.append(_row(11))
    later = NOW + timedelta(hours=1)
    report = _import(sessions, write_csv(rows, name="v2.csv"), now=later)
    assert report == ImportReport(rows=11, inserted=1, updated=2, unchanged=8)

    records = _records(sessions)
    assert {rid: records[rid].id for rid in ids_before} == ids_before
    assert records["SRC-000004"].status == "settled"
    assert records["SRC-000004"].updated_at == later
    assert records["SRC-000008"].amount_minor == 9999
    assert records["SRC-000006"].updated_at == NOW
    with engine.connect() as connection:
        assert database.record_generation(connection) == generation + 1


def test_progress_reports_bytes_read(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    path = write_csv(_rows(25))
    calls: list[tuple[int, int]] = []
    _import(sessions, path, chunk_size=10, progress=lambda done, total: calls.append((done, total)))
    size = path.stat().st_size
    assert len(calls) == 3
    assert all(total == size for _, total in calls)
    assert calls[-1] == (size, size)


def test_subject_refs_held(sessions: sessionmaker[Session], write_csv: Callable[..., Path]) -> None:
    _import(sessions, write_csv([_row(1, identifier=RID), _row(2, identifier=RID), _row(3)]))
    with sessions() as session:
        refs = set(database.iter_all_subject_refs(session))
    assert refs == {ref_for(KEY, RID).ref, ref_for(KEY, "nin:AB000003").ref}


@SQLITE_ONLY
def test_raw_identifiers_are_never_stored(
    sessions: sessionmaker[Session],
    engine: Engine,
    data_dir: Path,
    write_csv: Callable[..., Path],
) -> None:
    identifiers = [RID, USCC, "nin:ZQ998877", "reg:CN:5544332211", "lei:5493001KJTIIGC8Y1R12"]
    rows = [_row(n, identifier=ident) for n, ident in enumerate(identifiers, start=1)]
    assert _import(sessions, write_csv(rows)).inserted == len(identifiers)
    engine.dispose()
    stored = b"".join(path.read_bytes() for path in data_dir.iterdir())
    for identifier in identifiers:
        value = identifier.split(":", 1)[1]
        assert value.encode() not in stored
        assert value.replace(":", "").encode() not in stored
    assert b"AB000001" not in stored  # the fixture's default, unused here
    assert ref_for(KEY, RID).ref in stored


# --- all or nothing -------------------------------------------------------------


@SQLITE_ONLY
def test_one_bad_row_leaves_the_database_file_unchanged(
    make_engine: MakeEngine,
    engine: Engine,
    data_dir: Path,
    write_csv: Callable[..., Path],
) -> None:
    _import(database.session_factory(engine), write_csv(_rows(30), name="first.csv"))
    digest = _file_digest(engine, data_dir)

    rows = _rows(200)
    for row in rows[:30]:
        row["status"] = "settled"  # updates, written in early chunks before the error
    rows[149]["currency"] = "XXX"
    again = make_engine(False)
    refused = _refused(
        database.session_factory(again), write_csv(rows, name="second.csv"), chunk_size=20
    )
    assert refused.total_errors == 1
    assert [(error.row, error.field) for error in refused.errors] == [(151, "currency")]
    assert (
        str(refused)
        .splitlines()[1]
        .startswith(
            "row 151: currency: 'XXX' is not a supported ISO 4217 currency code (supported: AED, "
        )
    )
    assert _file_digest(again, data_dir) == digest


def test_one_bad_row_leaves_every_record_unchanged(
    sessions: sessionmaker[Session], engine: Engine, write_csv: Callable[..., Path]
) -> None:
    _import(sessions, write_csv(_rows(30), name="first.csv"))
    before = {
        rid: (r.id, r.status, r.updated_at, r.content_hash) for rid, r in _records(sessions).items()
    }
    with engine.connect() as connection:
        generation = database.record_generation(connection)

    rows = _rows(200)
    for row in rows[:30]:
        row["status"] = "settled"  # updates, written in early chunks before the error
    rows[149]["currency"] = "XXX"
    later = NOW + timedelta(hours=1)
    refused = _refused(sessions, write_csv(rows, name="second.csv"), chunk_size=20, now=later)
    assert [(error.row, error.field) for error in refused.errors] == [(151, "currency")]
    after = {
        rid: (r.id, r.status, r.updated_at, r.content_hash) for rid, r in _records(sessions).items()
    }
    assert after == before
    with engine.connect() as connection:
        assert database.record_generation(connection) == generation
    # The temporary duplicate-finding table went with the rollback: a new import works.
    assert _import(sessions, write_csv(rows[:30], name="third.csv"), now=later).updated == 30


def test_error_lists_the_first_20_and_a_count(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = _rows(100)
    for row in rows[::3][:30]:
        row["kind"] = "parking_ticket"
    refused = _refused(sessions, write_csv(rows), chunk_size=7)
    assert refused.total_errors == 30
    assert len(refused.errors) == 20
    message = str(refused).splitlines()
    assert message[0] == "import refused, nothing was imported (30 errors):"
    assert message[1].startswith("row 2: kind: 'parking_ticket' is not a known kind (known: ")
    assert message[20].startswith("row 59: kind:")
    assert message[21] == "and 10 more"
    assert len(message) == 22
    assert _records(sessions) == {}


def test_many_errors_keep_memory_bounded_and_the_first_ones(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    # More errors than the internal buffer: the first 20 by row still win.
    rows = [_row(n, status="open", kind="nope") for n in range(1, 801)]
    refused = _refused(sessions, write_csv(rows), chunk_size=50)
    assert refused.total_errors == 1600
    assert [error.row for error in refused.errors] == [r for r in range(2, 12) for _ in (0, 1)]


def test_refused_is_invalid_input() -> None:
    assert issubclass(ImportRefused, InvalidInput)


# --- validation rules ------------------------------------------------------------

RULES = [
    ({"record_id": ""}, "record_id: is required"),
    ({"record_id": "x" * 129}, "record_id: is 129 characters, at most 128"),
    ({"record_id": "a\tb"}, "record_id: contains a control character"),
    ({"identifier": ""}, "identifier: is required"),
    ({"identifier": "cn-rid:110105194912310021"}, "identifier: cn-rid check character is 1, "),
    ({"identifier": "passport:E1234567"}, "identifier: unknown scheme 'passport'"),
    ({"identifier": "11010519491231002X"}, "identifier: identifier has no scheme"),
    ({"kind": ""}, "kind: is required"),
    ({"kind": "parking"}, "kind: 'parking' is not a known kind"),
    ({"category": ""}, "category: is required"),
    (
        {"category": "fraud"},
        "category: 'fraud' is not a court_judgment category "
        "(allowed: dishonest_debtor, judgment_debt)",
    ),
    ({"status": "pending"}, "status: 'pending' is not a status"),
    ({"status": ""}, "status: is required"),
    ({"occurred_at": ""}, "occurred_at: is required"),
    ({"occurred_at": "01/06/2025"}, "occurred_at: '01/06/2025' is not an ISO 8601 date"),
    ({"occurred_at": "2025-02-30"}, "occurred_at: '2025-02-30' is not an ISO 8601 date"),
    (
        {"occurred_at": "2025-06-01T10:00:00"},
        "occurred_at: '2025-06-01T10:00:00' has no UTC offset; add Z or one like +08:00",
    ),
    (
        {"occurred_at": "2026-11-28T10:00:01Z"},
        "occurred_at: 2026-11-28T10:00:01Z is in the future (now 2026-11-28T10:00:00Z)",
    ),
    ({"expires_at": "2025-05-31"}, "expires_at: 2025-05-31T00:00:00Z is before occurred_at"),
    ({"expires_at": "soon"}, "expires_at: 'soon' is not an ISO 8601"),
    ({"currency": ""}, "currency: is required when amount is given"),
    ({"amount": ""}, "amount: is required when currency is given"),
    ({"currency": "XAU"}, "currency: 'XAU' is not a supported ISO 4217 currency code"),
    ({"currency": "JPY", "amount": "10.5"}, "amount: '10.5' has 1 decimal places, JPY has 0"),
    ({"amount": "12.345"}, "amount: '12.345' has 3 decimal places, CNY has 2"),
    ({"amount": "-5"}, "amount: '-5' is not a non-negative decimal like 1234.56"),
    ({"amount": "1e3"}, "amount: '1e3' is not a non-negative decimal"),
    ({"amount": "1,000"}, "amount: '1,000' is not a non-negative decimal"),
    ({"amount": "99999999999999999999"}, "amount: '99999999999999999999' is too large"),
    ({"disputed": "yes"}, "disputed: 'yes' is not true or false"),
    ({"days_overdue": "-1"}, "days_overdue: '-1' is not a non-negative whole number"),
    ({"days_overdue": "3.5"}, "days_overdue: '3.5' is not a non-negative whole number"),
]


@pytest.mark.parametrize(("change", "message"), RULES, ids=[m.split(":")[0] for _, m in RULES])
def test_each_rule_is_enforced(
    sessions: sessionmaker[Session],
    write_csv: Callable[..., Path],
    change: dict[str, str],
    message: str,
) -> None:
    rows = _rows(3)
    rows[1].update(change)
    refused = _refused(sessions, write_csv(rows))
    assert f"row 3: {message}" in str(refused)
    assert refused.total_errors == 1
    assert _records(sessions) == {}


def test_identifier_errors_never_repeat_the_identifier(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    bad = "cn-rid:110105194912310021"
    refused = _refused(sessions, write_csv([_row(17, identifier=bad)]))
    assert str(refused).splitlines()[1] == (
        "row 2: identifier: cn-rid check character is 1, expected X"
    )
    assert "110105194912310021" not in str(refused)
    assert "11010519491231002" not in str(refused)


def test_row_errors_are_all_collected(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = [_row(1, kind="nope", status="nope", amount="x")]
    refused = _refused(sessions, write_csv(rows))
    # Every field is checked even after the first one fails.
    assert [(e.row, e.field) for e in refused.errors] == [(2, "kind"), (2, "status"), (2, "amount")]
    assert refused.total_errors == 3


def test_duplicate_record_id_in_the_file(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = _rows(6)
    rows[4]["record_id"] = rows[0]["record_id"]
    # chunk_size 2: the two rows land in different chunks; and one within a chunk.
    rows[3]["record_id"] = rows[2]["record_id"]
    refused = _refused(sessions, write_csv(rows), chunk_size=2)
    assert [str(error) for error in refused.errors] == [
        "row 5: record_id: duplicate of the one on row 4",
        "row 6: record_id: duplicate of the one on row 2",
    ]


def test_duplicate_of_an_invalid_row_is_still_a_duplicate(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = [_row(1, kind="nope"), _row(1)]
    refused = _refused(sessions, write_csv(rows))
    assert "row 3: record_id: duplicate of the one on row 2" in str(refused)


def test_row_with_the_wrong_number_of_fields(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "short.csv"
    path.write_text(",".join(FIELDS) + "\nr1,nin:AB1234,court_judgment\n")
    refused = _refused(sessions, path)
    assert str(refused).splitlines()[1] == "row 2: row: has 3 fields, the header has 11"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([*FIELDS, "name"], "row 1: header: unknown column(s) 'name'"),
        ([*FIELDS, "kind"], "row 1: header: column(s) kind appear more than once"),
        (
            [f for f in FIELDS if f not in {"kind", "status"}],
            "row 1: header: required column(s) missing: kind, status",
        ),
    ],
)
def test_header_is_checked(
    sessions: sessionmaker[Session],
    write_csv: Callable[..., Path],
    header: list[str],
    message: str,
) -> None:
    refused = _refused(sessions, write_csv(_rows(2), header=header))
    assert message in str(refused)


def test_empty_file_is_refused(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ImportRefused, match="the file is empty"):
        _import(sessions, path)


def test_not_utf8_is_refused(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(",".join(FIELDS).encode() + b"\nr1,nin:AB1234,caf\xe9\n")
    with pytest.raises(ImportRefused, match="is not UTF-8 text"):
        _import(sessions, path)


def test_unknown_extension_is_refused(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "records.xlsx"
    path.write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"cannot tell the format of records\.xlsx"):
        _import(sessions, path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "row 2: row: is not valid JSON"),
        ("[1, 2]", "row 2: row: is not a JSON object"),
        ('{"record_id": "x", "name": "A. Person"}', "row 2: row: has unknown field(s) 'name'"),
        ('{"record_id": ["x"]}', "row 2: row: a field is a JSON list, expected a string"),
    ],
)
def test_jsonl_rows_are_checked(
    sessions: sessionmaker[Session], tmp_path: Path, line: str, message: str
) -> None:
    good = {k: v for k, v in _row(1).items() if v}
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(good) + "\n" + line + "\n\n")
    refused = _refused(sessions, path)
    assert message in str(refused)
    assert refused.total_errors == 1


# --- purge ---------------------------------------------------------------------------


def test_purge_deletes_only_expired_records_and_their_disputes(
    sessions: sessionmaker[Session], engine: Engine, write_csv: Callable[..., Path]
) -> None:
    rows = [
        _row(1, expires_at="2025-07-01"),
        _row(2, expires_at="2025-07-02"),
        _row(3),
    ]
    _import(sessions, write_csv(rows))
    with sessions.begin() as session:
        record = session.scalars(select(Record).where(Record.record_id == "SRC-000001")).one()
        record.disputes.append(RecordDispute(contest_id="c1", state="open", note="", at=NOW))
    with engine.connect() as connection:
        generation = database.record_generation(connection)

    with sessions.begin() as session:
        assert purge_expired(session, datetime(2025, 7, 1, tzinfo=UTC)) == 1
    assert sorted(_records(sessions)) == ["SRC-000002", "SRC-000003"]
    with sessions() as session:
        assert session.scalars(select(RecordDispute)).all() == []
    with engine.connect() as connection:
        assert database.record_generation(connection) == generation + 1

    with sessions.begin() as session:
        assert purge_expired(session, datetime(2025, 7, 1, tzinfo=UTC)) == 0
    with engine.connect() as connection:
        assert database.record_generation(connection) == generation + 1


# --- checking in a worker process ----------------------------------------------------


def test_worker_process_checks_rows_the_same_way(
    sessions: sessionmaker[Session], write_csv: Callable[..., Path]
) -> None:
    rows = _rows(40)
    rows[5]["identifier"] = RID
    path = write_csv(rows)
    assert _import(sessions, path, workers=1, chunk_size=7) == ImportReport(40, 40, 0, 0)
    # The same file checked here gives the same content hashes: nothing changes.
    assert _import(sessions, path, workers=0) == ImportReport(40, 0, 0, 40)
    assert _records(sessions)["SRC-000006"].subject_ref == ref_for(KEY, RID).ref

    rows[12]["currency"] = "XXX"
    rows[30]["record_id"] = rows[2]["record_id"]
    refused = _refused(sessions, write_csv(rows, name="bad.csv"), workers=2, chunk_size=7)
    assert [(e.row, e.field) for e in refused.errors] == [(14, "currency"), (32, "record_id")]
