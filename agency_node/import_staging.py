"""The staging area of an import: a scratch SQLite database, and its undo journal.

An import never holds the node database's write lock while it reads or checks
the file. It streams every checked row into ``staging.db`` in a staging
directory (``staged`` holds the rows in file order, each at its own
``seq``, so worker processes stage the chunks they check themselves:
:func:`open_staged_rows`, :func:`stage_rows`) and the record ids it has seen
into ``staging-seen.db`` beside it (``seen`` catches a repeated
``record_id``; a file of its own, so the importer marks ids while a worker
holds ``staging.db``'s write lock). Only a file with no error at all is
applied.

Applying copies the staged rows to ``records`` in short transactions, so
answers and the query log wait at most one such transaction: the first takes
:data:`APPLY_CHUNK` rows, and each later one as many as held the write lock
about :data:`APPLY_TARGET_SECONDS` in the one before (:func:`next_chunk_size`).
On SQLite the import checkpoints the write-ahead log itself after each
transaction, outside the lock, so that a serving node's commit (its query log)
never has to copy an import's pages back into the database. All-or-nothing holds through an undo
journal kept in ``staging.db``: in each chunk's transaction, with the node's
write lock held, the rows the chunk will overwrite are read and written to
``undo`` (committed there first), then the chunk is upserted. On SQLite the
node connection attaches ``staging.db`` and a chunk is a range of ``seq``: the
old rows are found by a join, the chunk is upserted by one ``INSERT ...
SELECT``, and its new rows are journaled by the range alone (``reached``,
committed after the old rows): undoing deletes the range's rows that are not
in ``undo``. No row passes through Python unless it existed before. On
PostgreSQL the rows go through the driver and new record ids are journaled
one by one. The state row
moves ``validating`` -> ``applying`` -> ``done``; ``done`` is the commit point.
An import that stops while ``applying`` (an error, Ctrl-C, a full disk, a
``kill -9``) is rolled back from ``undo``: at once when the process can, else
by the next import (or :func:`recover`) that finds the staging directory.
Restoring is idempotent, so a rollback that is itself killed is simply run
again. The node undoes a killed import when it starts
(:func:`agency_node.importer.recover_interrupted_import`), so it never
serves one after a restart.

What a reader sees while an import applies, precisely: each row is always a
whole old or a whole new row. The node's answerer first checks a subject
against its membership filter, rebuilt only when the record generation
changes, and :func:`apply` bumps the generation once, after the last chunk.
So (once the node has built its filter, at its first answer) the records of
subjects it did not hold before become visible all at once at the commit
point, while a new or changed record of a subject it
already held is visible from its chunk's commit on. The window lasts as long
as the apply phase (tens of seconds for a million rows on a busy 2-core
machine) and only ever shows rows the operator asked to import; a killed
import's rows stay visible to a running node until it restarts or the next
import runs. Closing the window for held subjects would need every record
read to filter on an import marker, or a swap of the whole table (on SQLite,
a copy of it under the write lock): neither is cheap, so the window stays.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from agency_node.database import bump_record_generation
from agency_node.import_rows import RowError, stage_time
from agency_node.models import Record
from credence.errors import FailedPrecondition, InvalidInput
from credence.storage import IMMEDIATE_OPTION

__all__ = [
    "APPLY_CHUNK",
    "APPLY_CHUNK_MAX",
    "APPLY_TARGET_SECONDS",
    "COLUMNS",
    "Staging",
    "apply",
    "next_chunk_size",
    "open_staged_rows",
    "out_of_space",
    "recover",
    "stage_rows",
    "staging_files",
]

#: Rows in the first apply transaction (and each undo transaction).
APPLY_CHUNK = 500
#: The most rows one apply transaction takes, however fast the machine.
APPLY_CHUNK_MAX = 10_000
# Sizes are multiples of this: each size is its own ``IN (...)`` statement in
# the driver's statement cache (128 entries), so few sizes keep memory flat.
_APPLY_CHUNK_STEP = 250
#: How long one apply transaction aims to hold the node's write lock: half the
#: ~100 ms an import may make an answer wait, leaving room for a slow one.
APPLY_TARGET_SECONDS = 0.05

#: The ``records`` columns an import writes, in the order the row checker gives them.
COLUMNS = (
    "subject_ref",
    "subject_type",
    "record_id",
    "kind",
    "category",
    "amount_minor",
    "currency",
    "status",
    "occurred_at",
    "expires_at",
    "days_overdue",
    "disputed",
    "content_hash",
    "updated_at",
)
_TIMES = tuple(COLUMNS.index(name) for name in ("occurred_at", "expires_at", "updated_at"))
_DISPUTED = COLUMNS.index("disputed")
_RECORD_ID = COLUMNS.index("record_id")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS staged (seq INTEGER PRIMARY KEY, {", ".join(COLUMNS)});
CREATE TABLE IF NOT EXISTS undo (record_id TEXT PRIMARY KEY, existed INTEGER NOT NULL, {
    ", ".join(name for name in COLUMNS if name != "record_id")
});
"""

# Built from the constant column names above, never from input.
_OTHERS = tuple(name for name in COLUMNS if name != "record_id")
_SEEN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (record_id TEXT PRIMARY KEY, row INTEGER NOT NULL) "
    "WITHOUT ROWID"
)
_INSERT_STAGED = (
    f"INSERT INTO staged (seq, {', '.join(COLUMNS)}) "  # noqa: S608
    f"VALUES (?, {', '.join('?' * len(COLUMNS))})"
)
# A worker waits this long for staging.db's write lock (another worker's chunk).
_STAGING_BUSY_SECONDS = 600.0
_SELECT_STAGED = f"SELECT seq, {', '.join(COLUMNS)} FROM staged WHERE seq > ? ORDER BY seq LIMIT ?"  # noqa: S608
_INSERT_UNDO = (
    f"INSERT INTO undo (record_id, existed, {', '.join(_OTHERS)}) "  # noqa: S608
    f"VALUES (?, 1, {', '.join('?' * len(_OTHERS))}) ON CONFLICT DO NOTHING"
)
_SELECT_UNDO = (
    f"SELECT record_id, existed, {', '.join(_OTHERS)} FROM undo "  # noqa: S608
    "WHERE record_id > ? ORDER BY record_id LIMIT ?"
)
_SELECT_SEEN = "SELECT record_id, row FROM seen WHERE record_id IN ({})"

# On SQLite the node connection attaches staging.db as ``stg`` and applies a
# chunk (a range of ``seq``) in SQL, without the rows passing through Python.
# A write that changes nothing: it takes the node's write lock, and only the
# node's (BEGIN IMMEDIATE would also lock staging.db, where the undo journal
# is being written by the staging connection).
_TAKE_LOCK = "DELETE FROM main.records WHERE 0"
_SELECT_EXISTING = (
    f"SELECT {', '.join('r.' + name for name in COLUMNS)} FROM stg.staged s "  # noqa: S608
    "JOIN main.records r ON r.record_id = s.record_id WHERE s.seq > ? AND s.seq <= ?"
)
_UPSERT_STAGED = (
    f"INSERT INTO main.records ({', '.join(COLUMNS)}) "  # noqa: S608
    f"SELECT {', '.join(COLUMNS)} FROM stg.staged WHERE seq > ? AND seq <= ? "
    f"ON CONFLICT (record_id) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in _OTHERS)} "
    "WHERE content_hash != excluded.content_hash"
)
# The rows of applied chunks that did not exist before: not in the journal.
_DELETE_ADDED = (
    "DELETE FROM main.records WHERE record_id IN (SELECT s.record_id FROM stg.staged s "
    "WHERE s.seq > ? AND s.seq <= ? "
    "AND NOT EXISTS (SELECT 1 FROM stg.undo u WHERE u.record_id = s.record_id))"
)


def out_of_space(exc: BaseException) -> bool:
    """Whether an error means the disk (or the database's quota) is full."""
    if isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return True
    message = str(exc).lower()
    return "disk is full" in message or "no space left" in message


def staging_files(path: Path) -> list[Path]:
    """Every file a staging database at ``path`` may leave, its journals included."""
    seen = _seen_path(path)
    return [
        Path(f"{db}{suffix}") for db in (path, seen) for suffix in ("", "-wal", "-shm", "-journal")
    ]


def _seen_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}-seen{path.suffix}")


def open_staged_rows(path: Path) -> sqlite3.Connection:
    """A connection that stages rows into the staging database ``path`` made by :class:`Staging`.

    For a worker process that stages the chunks it checks (:func:`stage_rows`).
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=_STAGING_BUSY_SECONDS)
    # Scratch until the import applies (Staging._durability).
    db.execute("PRAGMA synchronous=OFF")
    return db


def stage_rows(db: sqlite3.Connection, first_seq: int, values: list[tuple[Any, ...]]) -> None:
    """Stage checked rows at ``seq`` ``first_seq``, ``first_seq + 1``, ... (one transaction).

    A chunk's first ``seq`` is one more than the rows read before it, so a
    file without errors is staged at ``seq`` 1 to its row count, whoever
    stages which chunk in whatever order.
    """
    with db:
        db.execute("BEGIN")
        db.executemany(_INSERT_STAGED, [(seq, *row) for seq, row in enumerate(values, first_seq)])


class Staging:
    """``staging.db``: the checked rows and the undo journal; and the record ids seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._durability(self.state)
        self._seen = sqlite3.connect(_seen_path(path), isolation_level=None)
        self._seen.execute("PRAGMA journal_mode=WAL")
        # Only used while validating, and never needed after a crash.
        self._seen.execute("PRAGMA synchronous=OFF")
        self._seen.execute(_SEEN_SCHEMA)

    def _durability(self, state: str) -> None:
        # Until it applies, an import has nothing to undo: a staging database
        # lost with the machine is simply staged again, so it need not reach
        # the disk (OFF still survives the process being killed). The undo
        # journal is kept as durably as the node database is (NORMAL).
        level = "NORMAL" if state == "applying" else "OFF"
        self._db.execute(f"PRAGMA synchronous={level}")

    def close(self) -> None:
        """Close the databases (the caller deletes their files: :func:`staging_files`)."""
        self._seen.close()
        self._db.close()

    @property
    def state(self) -> str:
        """``validating``, ``applying`` or ``done``."""
        row = self._db.execute("SELECT value FROM state WHERE name = 'state'").fetchone()
        return str(row[0]) if row else "validating"

    def set_state(self, value: str) -> None:
        """Record the import's state (committed at once)."""
        self._durability(value)
        self._db.execute(
            "INSERT INTO state VALUES ('state', ?) ON CONFLICT (name) DO UPDATE SET value = ?",
            (value, value),
        )

    def write(
        self, values: list[tuple[Any, ...]], marks: list[tuple[str, int]], first_seq: int
    ) -> list[RowError]:
        """Remember the chunk's record ids and stage its rows at ``first_seq`` on.

        ``values`` is empty when a worker staged the chunk's rows itself
        (:func:`stage_rows`); ids are always marked here, in file order, so
        a repeat is reported on its later row.

        Returns:
            An error for each record id seen on an earlier row.
        """
        with self._seen:
            self._seen.execute("BEGIN")
            duplicates = self._duplicates(marks)
        if values:
            stage_rows(self._db, first_seq, values)
        return duplicates

    def _duplicates(self, marks: list[tuple[str, int]]) -> list[RowError]:
        if not marks:
            return []
        cursor = self._seen.executemany(
            "INSERT INTO seen VALUES (?, ?) ON CONFLICT DO NOTHING", marks
        )
        if cursor.rowcount == len(marks):
            return []
        first: dict[str, int] = {}
        ids = [mark[0] for mark in marks]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            first.update(
                self._seen.execute(
                    _SELECT_SEEN.format(",".join("?" * len(part))),
                    part,
                ).fetchall()
            )
        return [
            RowError(row, "record_id", f"duplicate of the one on row {first[record_id]}")
            for record_id, row in marks
            if first[record_id] != row
        ]

    def last_seq(self) -> int:
        """How many rows are staged: their ``seq`` runs from 1 to this, in file order."""
        row = self._db.execute("SELECT max(seq) FROM staged").fetchone()
        return int(row[0] or 0)

    @property
    def reached(self) -> int:
        """The last ``seq`` an apply may have written (0: none, or rows journaled by id)."""
        row = self._db.execute("SELECT value FROM state WHERE name = 'reached'").fetchone()
        return int(row[0]) if row else 0

    def reach(self, seq: int) -> None:
        """Journal that staged rows up to ``seq`` may be applied (committed at once).

        Undoing deletes the rows of that range that are not in ``undo``: the
        ones that did not exist before. Call it after :meth:`save_undo` of the
        same rows, so the range never covers a row whose old version is missing.
        """
        self._db.execute(
            "INSERT INTO state VALUES ('reached', ?) ON CONFLICT (name) DO UPDATE SET value = ?",
            (str(seq), str(seq)),
        )

    def staged_chunks(self, size: Callable[[], int]) -> Iterator[list[tuple[Any, ...]]]:
        """The staged rows in file order, ``size()`` (asked before each chunk) at a time."""
        last = 0
        while True:
            rows = self._db.execute(
                _SELECT_STAGED,
                (last, size()),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(row[1:]) for row in rows]

    def save_undo(self, old: list[tuple[Any, ...]], new_ids: list[str]) -> None:
        """Journal the rows a chunk will overwrite and the ids it will add (committed)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                _INSERT_UNDO,
                [(row[_RECORD_ID], *row[:_RECORD_ID], *row[_RECORD_ID + 1 :]) for row in old],
            )
            self._db.executemany(
                "INSERT INTO undo (record_id, existed) VALUES (?, 0) ON CONFLICT DO NOTHING",
                [(record_id,) for record_id in new_ids],
            )

    def undo_chunks(self, size: int) -> Iterator[tuple[list[str], list[tuple[Any, ...]]]]:
        """(ids the import added, old rows it overwrote), ``size`` journal rows at a time."""
        last = ""
        while True:
            rows = self._db.execute(
                _SELECT_UNDO,
                (last, size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            added = [row[0] for row in rows if not row[1]]
            old = [
                (*row[2 : 2 + _RECORD_ID], row[0], *row[2 + _RECORD_ID :]) for row in rows if row[1]
            ]
            yield added, old


# --- the node database ---------------------------------------------------------


def _dialect_insert(dialect_name: str, table: Table) -> Any:
    # ON CONFLICT is spelled the same by SQLite and PostgreSQL, but SQLAlchemy
    # builds it per dialect.
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    raise InvalidInput(f"import supports SQLite and PostgreSQL databases, not {dialect_name}")


def _upsert_statement(dialect_name: str) -> Insert:
    table: Table = Record.__table__  # type: ignore[assignment]
    insert = _dialect_insert(dialect_name, table)
    excluded = insert.excluded
    statement: Insert = insert.on_conflict_do_update(
        index_elements=[table.c.record_id],
        set_={name: excluded[name] for name in COLUMNS if name != "record_id"},
        # An unchanged row is not rewritten, so it does not count as updated.
        where=table.c.content_hash != excluded.content_hash,
    )
    return statement


class _Node:
    """The node database's side of applying and undoing: driver-level SQL, typed per dialect."""

    def __init__(self, connection: Connection, *, in_sql: bool) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        #: Whether staging.db is attached as ``stg`` (SQLite): chunks are applied in SQL.
        self.in_sql = in_sql
        compiled = _upsert_statement(self.dialect).compile(
            dialect=connection.dialect, column_keys=list(COLUMNS)
        )
        self._upsert_sql = str(compiled)
        self._named = not compiled.positional
        self._order: list[int] | None = None
        if compiled.positional:
            order = [COLUMNS.index(name) for name in compiled.positiontup or ()]
            self._order = None if order == list(range(len(COLUMNS))) else order
        table = Record.__table__
        self._select_old = select(*[table.c[name] for name in COLUMNS]).where(
            table.c.record_id.in_(bindparam("ids", expanding=True))
        )
        self._delete = delete(Record).where(Record.record_id.in_(bindparam("ids", expanding=True)))
        self._times: dict[str, Any] = {}

    def to_driver(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A staged row (times as SQLite text) in the node driver's types."""
        if self.dialect == "sqlite":
            return row
        values = list(row)
        for index in _TIMES:
            values[index] = self._time(values[index])
        values[_DISPUTED] = bool(values[_DISPUTED])
        return tuple(values)

    def _time(self, staged: str) -> datetime:
        when = self._times.get(staged)
        if when is None:
            if len(self._times) > 50_000:
                self._times.clear()
            when = self._times[staged] = datetime.fromisoformat(staged).replace(tzinfo=UTC)
        return when

    def old_rows(self, ids: list[str]) -> list[tuple[Any, ...]]:
        """The current rows with these record ids, in staged form."""
        rows = self.connection.execute(self._select_old, {"ids": ids}).all()
        # UTCDateTime hands back aware datetimes on both backends.
        return [_staged(tuple(row)) for row in rows]

    def upsert(self, rows: list[tuple[Any, ...]]) -> int:
        """Upsert staged rows; how many rows the database changed."""
        params: list[Any] = [self.to_driver(row) for row in rows]
        if self._named:
            params = [dict(zip(COLUMNS, row, strict=True)) for row in params]
        elif self._order is not None:
            params = [tuple(row[i] for i in self._order) for row in params]
        return int(self.connection.exec_driver_sql(self._upsert_sql, params).rowcount)

    def take_lock(self) -> None:
        """Take the node database's write lock in the transaction begun (SQLite)."""
        self.connection.exec_driver_sql(_TAKE_LOCK)

    def existing(self, after: int, through: int) -> list[tuple[Any, ...]]:
        """The node's rows with the record ids of staged rows ``(after, through]``, as stored.

        As stored on SQLite is the staged form: times as text, ``disputed`` as 0 or 1.
        """
        rows = self.connection.exec_driver_sql(_SELECT_EXISTING, (after, through))
        return [tuple(row) for row in rows]

    def upsert_staged(self, after: int, through: int) -> int:
        """Upsert staged rows ``(after, through]`` in SQL; how many rows the database changed."""
        return int(self.connection.exec_driver_sql(_UPSERT_STAGED, (after, through)).rowcount)

    def delete_added(self, after: int, through: int) -> None:
        """Delete the rows staged rows ``(after, through]`` added (not in the undo journal)."""
        self.connection.exec_driver_sql(_DELETE_ADDED, (after, through))

    def delete(self, ids: list[str]) -> None:
        """Delete the records with these ids (their disputes cascade)."""
        self.connection.execute(self._delete, {"ids": ids})

    def checkpoint(self) -> None:
        """On SQLite, copy the write-ahead log into the database (no lock held; PASSIVE).

        Called between transactions: a checkpoint never waits for or blocks
        readers and writers, it copies what no reader still needs.
        """
        if self.dialect == "sqlite" and not self.connection.in_transaction():
            # main only: unqualified, it would checkpoint staging.db too.
            _driver(self.connection).execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchall()


def _driver(connection: Connection) -> sqlite3.Connection:
    driver = connection.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        raise InvalidInput("the node database's SQLite driver is not sqlite3")
    return driver


def _staged(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    for index in _TIMES:
        values[index] = stage_time(values[index].astimezone(UTC))
    values[_DISPUTED] = int(bool(values[_DISPUTED]))
    values[0] = bytes(values[0])
    values[COLUMNS.index("content_hash")] = bytes(values[COLUMNS.index("content_hash")])
    return tuple(values)


@contextlib.contextmanager
def _node_connection(engine: Engine, staged: Path) -> Iterator[_Node]:
    # Deferred transactions: on SQLite each one takes the node's write lock
    # with its first statement, and never locks the attached staging.db.
    with engine.connect().execution_options(**{IMMEDIATE_OPTION: False}) as connection:
        restore: list[str] = []
        temp_store = 0
        sqlite_node = connection.dialect.name == "sqlite"
        if sqlite_node:
            # The serving engine maps the database into memory with a large
            # page cache; pages an import touches would stay resident. 20 MB
            # of cache leaves room for the statement journal kept in memory
            # (below) under the import's memory bound. The import
            # checkpoints by itself, between its transactions.
            settings = (("mmap_size", 0), ("cache_size", -20 * 1024), ("wal_autocheckpoint", 0))
            for pragma, value in settings:
                current = connection.exec_driver_sql(f"PRAGMA {pragma}").scalar()
                restore.append(f"PRAGMA {pragma}={int(current or 0)}")
                connection.exec_driver_sql(f"PRAGMA {pragma}={value}")
            connection.commit()
            driver = _driver(connection)
            # Each chunk's INSERT ... SELECT keeps a statement journal: in
            # memory, not a temporary file written, synced and closed per chunk
            # (outside a transaction: SQLite refuses the change inside one).
            temp_store = int(driver.execute("PRAGMA temp_store").fetchone()[0])
            driver.execute("PRAGMA temp_store=MEMORY")
            driver.execute("ATTACH DATABASE ? AS stg", (str(staged),))
        try:
            yield _Node(connection, in_sql=sqlite_node)
        finally:
            with contextlib.suppress(Exception):
                connection.rollback()
            if sqlite_node:
                try:
                    _driver(connection).execute("DETACH DATABASE stg")
                    _driver(connection).execute(f"PRAGMA temp_store={temp_store}")
                except sqlite3.Error:
                    # Never hand the pool a connection that still sees staging.db.
                    connection.invalidate()
            with contextlib.suppress(Exception):
                for statement in restore:
                    connection.exec_driver_sql(statement)
                connection.commit()


def next_chunk_size(size: int, held: float, target: float = APPLY_TARGET_SECONDS) -> int:
    """Rows for the next apply transaction, after ``size`` rows held the lock ``held`` seconds.

    Aims at ``target`` seconds a transaction. One step at most doubles the
    size or quarters it, so a single slow or fast measure (a busy machine)
    moves it little; it is a multiple of 250 within ``[250, APPLY_CHUNK_MAX]``.
    """
    wanted = 2 * size if held <= 0 else int(size * target / held)
    bounded = min(APPLY_CHUNK_MAX, 2 * size, max(size // 4, wanted))
    return max(_APPLY_CHUNK_STEP, bounded // _APPLY_CHUNK_STEP * _APPLY_CHUNK_STEP)


class _Pace:
    """How many rows the next apply transaction takes (:func:`next_chunk_size`)."""

    def __init__(self) -> None:
        self.size = APPLY_CHUNK

    def rows(self) -> int:
        return self.size

    def held(self, rows: int, seconds: float) -> None:
        self.size = next_chunk_size(rows, seconds)


def _apply_in_sql(node: _Node, staging: Staging) -> Iterator[tuple[int, int]]:
    """Apply chunks as ranges of ``seq`` in SQL (SQLite); yields (inserted, changed) per chunk."""
    pace = _Pace()
    last, end = 0, staging.last_seq()
    while last < end:
        through = min(end, last + pace.rows())
        with node.connection.begin():
            node.take_lock()  # held from here to the commit
            locked = time.perf_counter()
            old = node.existing(last, through)
            # The journal is committed before the chunk is.
            staging.save_undo(old, [])
            staging.reach(through)
            changed = node.upsert_staged(last, through)
        pace.held(through - last, time.perf_counter() - locked)
        # Staged seqs are contiguous: every row of the range was staged.
        yield through - last - len(old), changed
        last = through


def _apply_rows(node: _Node, staging: Staging) -> Iterator[tuple[int, int]]:
    """Apply chunks row by row through the driver (PostgreSQL); yields (inserted, changed)."""
    pace = _Pace()
    for chunk in staging.staged_chunks(pace.rows):
        ids = [row[_RECORD_ID] for row in chunk]
        with node.connection.begin():
            # The lock is held from here to the commit.
            locked = time.perf_counter()
            old = node.old_rows(ids)
            known = {row[_RECORD_ID] for row in old}
            new_ids = [record_id for record_id in ids if record_id not in known]
            # The undo is committed before the chunk is.
            staging.save_undo(old, new_ids)
            changed = node.upsert(chunk)
        pace.held(len(chunk), time.perf_counter() - locked)
        yield len(new_ids), changed


def apply(
    staging: Staging, engine: Engine, *, on_chunk: Callable[[], None] | None = None
) -> tuple[int, int]:
    """Copy the staged rows to ``records`` in short transactions; undo all on failure.

    Returns:
        (rows inserted, rows updated).

    Raises:
        FailedPrecondition: the disk filled up; everything was undone.
    """
    inserted = changed = 0
    staging.set_state("applying")
    try:
        with _node_connection(engine, staging.path) as node:
            chunks = _apply_in_sql(node, staging) if node.in_sql else _apply_rows(node, staging)
            for chunk_inserted, chunk_changed in chunks:
                inserted += chunk_inserted
                changed += chunk_changed
                # Outside the lock, and a pause in which a waiting writer gets it.
                node.checkpoint()
                if on_chunk is not None:
                    on_chunk()
            if changed:
                with node.connection.begin():
                    bump_record_generation(node.connection)
        staging.set_state("done")
    except BaseException as exc:
        # Ctrl-C included: undo what was applied, then let the error go on.
        # A failing undo leaves the journal for the next import to finish.
        with contextlib.suppress(Exception):
            recover(staging, engine)
        if out_of_space(exc):
            raise FailedPrecondition(
                "the node database's disk is full; nothing was imported: free space and retry"
            ) from None
        raise
    return inserted, changed - inserted


def recover(staging: Staging, engine: Engine) -> bool:
    """Undo an import stopped while applying; a no-op for any other state.

    Returns:
        Whether anything was undone.
    """
    if staging.state != "applying":
        return False
    with _node_connection(engine, staging.path) as node:
        reached = staging.reached
        for after in range(0, reached, APPLY_CHUNK):
            with node.connection.begin():
                node.delete_added(after, min(reached, after + APPLY_CHUNK))
            node.checkpoint()
        for added, old in staging.undo_chunks(APPLY_CHUNK):
            with node.connection.begin():
                if added:
                    node.delete(added)
                if old:
                    node.upsert(old)
            node.checkpoint()
        with node.connection.begin():
            bump_record_generation(node.connection)
    staging.set_state("undone")
    return True
