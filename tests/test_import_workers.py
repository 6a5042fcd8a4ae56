"""Worker processes stage the chunks they check themselves (agency_node.import_workers).

Each chunk's rows go straight from its worker into the staging database at
``seq`` = rows read before the chunk + 1, whatever order the workers finish
in, so a file is applied whole and in file order; the importer only marks
record ids, in file order, so repeats are reported on their later row.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from agency_node import database
from agency_node.import_staging import staging_files
from agency_node.importer import ImportRefused, ImportReport, import_records
from agency_node.models import Record
from credence.import_format import FIELDS
from credence.subjects import PseudonymisationKey, ref_for

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
KEY = PseudonymisationKey.from_bytes(bytes(range(32)))
ROWS = 120


@pytest.fixture
def schema() -> Schema:
    return database


def _identifier(n: int) -> str:
    # Several rows per subject, as real files have.
    return f"nin:AB{n // 3:06d}"


def _write(path: Path, rows: int, *, repeat: tuple[int, int] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        for n in range(1, rows + 1):
            record_id = f"SRC-{(repeat[0] if repeat and n == repeat[1] else n):06d}"
            fields = {
                "record_id": record_id,
                "identifier": _identifier(n),
                "kind": "court_judgment",
                "category": "judgment_debt",
                "amount": f"{n}.50",
                "currency": "CNY",
                "status": "active",
                "occurred_at": f"2025-{1 + n % 12:02d}-01",
            }
            writer.writerow([fields.get(name, "") for name in FIELDS])
    return path


def test_two_workers_stage_every_chunk_once_in_file_order(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = _write(tmp_path / "records.csv", ROWS)
    staging = tmp_path / "staging"
    report = import_records(
        sessions, path, KEY, now=NOW, workers=2, chunk_size=7, staging_dir=staging
    )
    assert report == ImportReport(ROWS, ROWS, 0, 0)
    with sessions() as session:
        records = session.scalars(select(Record).order_by(Record.id)).all()
    # Applied in file order (the staged seq), each row once, with its own subject.
    assert [r.record_id for r in records] == [f"SRC-{n:06d}" for n in range(1, ROWS + 1)]
    assert [r.subject_ref for r in records] == [
        ref_for(KEY, _identifier(n)).ref for n in range(1, ROWS + 1)
    ]
    assert [r.amount_minor for r in records] == [n * 100 + 50 for n in range(1, ROWS + 1)]
    # Nothing staged is left behind: the rows, the seen ids, their journals.
    assert not [leftover for leftover in staging_files(staging / "staging.db") if leftover.exists()]
    # Checked in this process, the same file hashes the same: nothing changes.
    assert import_records(sessions, path, KEY, now=NOW, workers=0) == ImportReport(ROWS, 0, 0, ROWS)


def test_a_repeat_in_a_chunk_another_worker_checked_is_refused_on_its_later_row(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Row 100 (line 101) repeats row 3's record id; seven rows a chunk, two workers.
    path = _write(tmp_path / "repeat.csv", ROWS, repeat=(3, 100))
    with pytest.raises(ImportRefused) as refused:
        import_records(sessions, path, KEY, now=NOW, workers=2, chunk_size=7)
    assert [(e.row, e.field, e.reason) for e in refused.value.errors] == [
        (101, "record_id", "duplicate of the one on row 4")
    ]
    with sessions() as session:
        assert session.scalars(select(Record)).all() == []
