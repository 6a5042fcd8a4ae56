"""An import that fails while applying leaves every record exactly as it was.

The apply step writes the node database in many short transactions and keeps
all-or-nothing through an undo journal (:mod:`agency_node.import_staging`):
on SQLite a chunk is upserted in SQL from the attached staging database and
its new rows are journaled as a range, on PostgreSQL row by row. Each test
breaks the import at a chosen point, on both backends, and compares every
column of every record (primary keys, dispute flags and times included)
with the state before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Row, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from support.fixtures import Schema

from agency_node import database, import_staging
from agency_node.importer import import_records
from agency_node.models import Record
from credence.dev.offline_federation import NOW
from credence.import_format import FIELDS
from credence.subjects import PseudonymisationKey

KEY = PseudonymisationKey.from_bytes(bytes(range(32)))
SEEDED = 2000


class Broken(Exception):
    """The failure a test injects."""


@pytest.fixture
def schema() -> Schema:
    """The node's database: ``engine`` (support.fixtures) on SQLite and on PostgreSQL."""
    return database


def _write(path: Path, numbers: range, amount: str = "10.00") -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(FIELDS) + "\n")
        out.writelines(
            f"SRC-{n:07d},nin:AB{n:07d},court_judgment,judgment_debt,"
            f"{amount},CNY,active,2025-06-01,,false,\n"
            for n in numbers
        )
    return path


def _snapshot(sessions: sessionmaker[Session]) -> list[Row[Any]]:
    table = Record.__table__
    with sessions() as session:
        return list(session.execute(select(table).order_by(table.c.id)).all())


@pytest.fixture
def seeded(sessions: sessionmaker[Session], tmp_path: Path) -> list[Row[Any]]:
    """SEEDED records, every tenth flagged by a contest; their snapshot."""
    import_records(sessions, _write(tmp_path / "seed.csv", range(SEEDED)), KEY, now=NOW)
    with sessions.begin() as session:
        session.execute(update(Record).where(Record.id % 10 == 0).values(disputed=True))
    return _snapshot(sessions)


def _mixed_file(tmp_path: Path) -> Path:
    """300 new rows, the seeded rows (first half unchanged, second changed), more new rows.

    The first apply chunk (500 rows) both adds rows and holds existing ones.
    """
    path = _write(tmp_path / "mixed.csv", range(2 * SEEDED, 2 * SEEDED + 300))
    parts = (
        _write(tmp_path / "same.csv", range(SEEDED // 2)),
        _write(tmp_path / "changed.csv", range(SEEDED // 2, SEEDED), amount="99.00"),
        _write(tmp_path / "new.csv", range(SEEDED, 2 * SEEDED - 300)),
    )
    with path.open("a", encoding="utf-8") as out:
        for part in parts:
            out.writelines(part.read_text(encoding="utf-8").splitlines(keepends=True)[1:])
    return path


def _fail_on_call(number: int, real: Callable[..., Any]) -> Callable[..., Any]:
    calls: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == number:
            raise Broken
        return real(*args, **kwargs)

    return failing


def test_a_failure_after_some_chunks_are_committed_restores_every_row(
    sessions: sessionmaker[Session],
    seeded: list[Row[Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # _Pace.held runs right after each chunk's commit, on both backends.
    monkeypatch.setattr(import_staging._Pace, "held", _fail_on_call(3, import_staging._Pace.held))
    with pytest.raises(Broken):
        import_records(sessions, _mixed_file(tmp_path), KEY, now=NOW)
    assert _snapshot(sessions) == seeded


def test_a_failure_while_journaling_a_chunk_deletes_only_rows_the_import_added(
    sessions: sessionmaker[Session],
    seeded: list[Row[Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first chunk added 300 rows and kept 200; the second chunk's rows
    # all exist and were never journaled. Undoing must delete the 300 and
    # nothing else (on SQLite: the journaled range must not yet cover them).
    monkeypatch.setattr(
        import_staging.Staging, "save_undo", _fail_on_call(2, import_staging.Staging.save_undo)
    )
    with pytest.raises(Broken):
        import_records(sessions, _mixed_file(tmp_path), KEY, now=NOW)
    assert _snapshot(sessions) == seeded


def test_a_finished_import_matches_the_file_and_leaves_no_staging_attached(
    engine: Engine,
    sessions: sessionmaker[Session],
    seeded: list[Row[Any]],
    tmp_path: Path,
) -> None:
    report = import_records(sessions, _mixed_file(tmp_path), KEY, now=NOW)
    assert (report.inserted, report.updated, report.unchanged) == (
        SEEDED,
        SEEDED // 2,
        SEEDED // 2,
    )
    after = {row.record_id: row for row in _snapshot(sessions)}
    for before in seeded:
        now = after[before.record_id]
        if int(before.record_id.removeprefix("SRC-")) < SEEDED // 2:
            assert now == before  # unchanged rows are not rewritten
        else:
            assert (now.id, now.amount_minor, now.disputed) == (before.id, 9900, False)
    assert len(after) == 2 * SEEDED
    if engine.dialect.name == "sqlite":
        # Every pooled connection sees the node database alone.
        with engine.connect() as connection:
            names = {row[1] for row in connection.execute(text("PRAGMA database_list"))}
        assert "stg" not in names
