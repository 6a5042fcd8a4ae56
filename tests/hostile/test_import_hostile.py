"""A hostile import file: refused fast with one line, and it never blocks answers.

Each test writes the file an attacker (or a broken export) would hand the
operator and shows both the refusal and that the node database did not change.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from support.blind import unmask
from support.fixtures import Schema

from agency_node import config as node_config
from agency_node import database
from agency_node.import_staging import Staging
from agency_node.importer import STAGING_DIR_NAME, ImportRefused, import_records
from agency_node.models import Record
from agency_node.offline_node import write_node_dir
from agency_node.server import RunningNode, start_node
from credence import payloads
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, verify_message
from credence.errors import FailedPrecondition
from credence.import_format import FIELDS
from credence.keys import KeySet
from credence.rpc.tls import channel_credentials
from credence.subjects import PseudonymisationKey
from credence.v1 import agency_pb2, agency_pb2_grpc

KEY = PseudonymisationKey.from_bytes(bytes(range(32)))
REPO = Path(__file__).resolve().parents[2]


def _line(n: int) -> str:
    return (
        f"SRC-{n:07d},nin:AB{n:07d},court_judgment,judgment_debt,"
        "10.00,CNY,active,2025-06-01,,false,\n"
    )


def _write(path: Path, rows: int, start: int = 1) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(FIELDS) + "\n")
        out.writelines(_line(n) for n in range(start, start + rows))
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The node's own file name, so the SQLite runs use the database a node would."""
    return database.sqlite_url_for(tmp_path)


@pytest.fixture
def schema() -> Schema:
    """The node's database: ``engine`` (support.fixtures) on SQLite and on PostgreSQL."""
    return database


@pytest.fixture
def seeded(sessions: sessionmaker[Session], tmp_path: Path) -> sessionmaker[Session]:
    import_records(sessions, _write(tmp_path / "seed.csv", 3), KEY, now=NOW)
    return sessions


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Record)) or 0)


def _refused_lines(sessions: sessionmaker[Session], path: Path) -> list[str]:
    with pytest.raises(ImportRefused) as refused:
        import_records(sessions, path, KEY, now=NOW, workers=0)
    lines = str(refused.value).splitlines()[1:]
    assert all(len(line) <= 200 for line in lines)
    assert _count(sessions) == 3  # the seed, untouched
    return lines


def test_a_header_of_24k_repeated_names_is_refused_at_once(
    seeded: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(["kind"] * 1600) + "\n")
    assert _refused_lines(seeded, path) == [
        "row 1: header: has 1600 columns, at most 64 (MAX_COLUMNS)"
    ]
    # Wider still, the line-length limit stops it before any column is split.
    path.write_text(",".join(["kind"] * 24_000) + "\n")
    assert _refused_lines(seeded, path) == [
        "row 1: row: line is longer than 8192 bytes (MAX_LINE_BYTES)"
    ]


def test_a_50_mb_quoted_multiline_field_gives_one_line(
    seeded: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "open-quote.csv"
    with path.open("w") as out:
        out.write(",".join(FIELDS) + "\n" + _line(10) + 'SRC-X,"')
        chunk = "x" * 99 + "\n"
        for _ in range(50 * 1024 * 1024 // len(chunk)):
            out.write(chunk)
    lines = _refused_lines(seeded, path)
    assert lines == [
        "row 3: row: a field is longer than 1024 characters (MAX_FIELD_CHARS); "
        "is a quote left open?"
    ]


def test_a_long_line_names_the_limit(seeded: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(",".join(FIELDS) + "\n" + "x" * 10_000 + "\n")
    assert _refused_lines(seeded, path) == [
        "row 2: row: line is longer than 8192 bytes (MAX_LINE_BYTES)"
    ]


def test_deep_json_gives_one_line(seeded: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"record_id": ' + "[" * 3000 + "]" * 3000 + "}\n")
    assert _refused_lines(seeded, path) == [
        "row 1: row: JSON is nested 3001 deep, at most 8 (MAX_JSON_DEPTH)"
    ]


def test_bad_utf8_is_reported_on_its_own_line(
    seeded: sessionmaker[Session], tmp_path: Path
) -> None:
    # Line 30,002: the header, 30,000 good rows, then the bad byte.
    path = tmp_path / "latin1.csv"
    _write(path, 30_000, start=100)
    with path.open("ab") as out:
        out.write(b"SRC-BAD,nin:AB\xe9,court_judgment,judgment_debt,,,active,2025-06-01,,,\n")
        out.write(_line(99).encode())
    lines = _refused_lines(seeded, path)
    assert lines == ["row 30002: row: is not UTF-8 text (byte 15: invalid continuation byte)"]


def test_a_date_out_of_range_gives_one_line(seeded: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(
        ",".join(FIELDS)
        + "\nSRC-OLD,nin:AB000001,court_judgment,judgment_debt,,,active,"
        + "0001-01-01T00:00:00+01:00,,,\n"
    )
    assert _refused_lines(seeded, path) == [
        "row 2: occurred_at: '0001-01-01T00:00:00+01:00' is out of range once converted to UTC"
    ]


def test_a_full_disk_gives_one_line_and_changes_nothing(
    seeded: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Staging, "write", full)
    with pytest.raises(FailedPrecondition) as failed:
        import_records(seeded, _write(tmp_path / "more.csv", 10, start=50), KEY, now=NOW)
    assert len(str(failed.value).splitlines()) == 1
    assert "no space left" in str(failed.value)
    assert _count(seeded) == 3


def test_strict_refuses_formula_identifiers(seeded: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "formula.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(FIELDS)
        writer.writerow(
            [
                "=HYPERLINK(1)",
                "nin:AB000001",
                "court_judgment",
                "judgment_debt",
                "",
                "",
                "active",
                "2025-06-01",
                "",
                "",
                "",
            ]
        )
    with pytest.raises(ImportRefused) as refused:
        import_records(seeded, path, KEY, now=NOW, strict=True)
    assert "row 2: record_id: begins with '='" in str(refused.value)
    assert _count(seeded) == 3
    import_records(seeded, path, KEY, now=NOW)  # without --strict, kept as given
    assert _count(seeded) == 4


# --- processes ----------------------------------------------------------------

_IMPORT_SCRIPT = """
import os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from agency_node import database, import_staging
from agency_node.importer import import_records
from credence.storage import immediate_writer
from credence.subjects import PseudonymisationKey

url, path, staging, kill_after = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
key = PseudonymisationKey.from_bytes(bytes.fromhex(sys.argv[6]))
if kill_after:
    real, seen = import_staging.Staging.save_undo, []
    def save_undo(self, old, new_ids):
        seen.append(1)
        if len(seen) > kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, old, new_ids)
    import_staging.Staging.save_undo = save_undo
engine = database.create_engine_for(url)
print("ready", flush=True)
import_records(database.session_factory(immediate_writer(engine)), path,
               key, workers=int(sys.argv[5]),
               staging_dir=staging, now=datetime(2026, 11, 28, 10, 0, tzinfo=UTC))
print("done", flush=True)
"""


def _start_import(
    tmp_path: Path,
    path: Path,
    *,
    kill_after: int = 0,
    workers: int = 0,
    url: str | None = None,
    staging: Path | None = None,
    key: PseudonymisationKey = KEY,
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_IMPORT_SCRIPT),
            url or database.sqlite_url_for(tmp_path),
            str(path),
            str(staging or tmp_path / "staging"),
            str(kill_after),
            str(workers),
            key.secret.hex(),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    return process


def _reap(process: subprocess.Popen[str]) -> None:
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_killing_the_import_leaves_no_worker_holding_the_key(
    seeded: sessionmaker[Session], tmp_path: Path, database_url: str
) -> None:
    path = _write(tmp_path / "big.csv", 200_000, start=1000)
    process = _start_import(tmp_path, path, workers=1, url=database_url)
    children: set[int] = set()
    deadline = threading.Event()
    for _ in range(600):  # the worker appears once the pool starts
        children = {pid for pid in _children(process.pid) if _alive(pid)}
        if children and process.poll() is None:
            break
        deadline.wait(0.05)
    assert children, "the import started no worker process"
    process.kill()
    _reap(process)
    for _ in range(200):
        if not any(_alive(pid) for pid in children):
            break
        deadline.wait(0.05)
    assert not any(_alive(pid) for pid in children)
    assert _count(seeded) == 3


def test_an_import_killed_while_applying_is_undone_by_the_next(
    seeded: sessionmaker[Session], tmp_path: Path, database_url: str
) -> None:
    # Changes a seeded row and adds many: killed after two applied chunks.
    with seeded() as session:
        before = {r.record_id: r.content_hash for r in session.scalars(select(Record))}
    path = tmp_path / "update.csv"
    _write(path, 3000, start=10)
    with path.open("a") as out:
        out.write(_line(1).replace("10.00", "99.00"))
    process = _start_import(tmp_path, path, kill_after=2, url=database_url)
    _reap(process)
    assert process.returncode == -signal.SIGKILL
    assert _count(seeded) > 3  # half applied until someone recovers it
    # The next import, of another file, first undoes the killed one.
    import_records(
        seeded,
        _write(tmp_path / "two.csv", 1, start=2),
        KEY,
        now=NOW,
        staging_dir=tmp_path / "staging",
    )
    with seeded() as session:
        after = {r.record_id: r.content_hash for r in session.scalars(select(Record))}
    assert after == before


# --- a running node -------------------------------------------------------------

COURT = "court-1"
# The registry's fan-out deadline (registry.toml fanout_deadline_seconds), twenty
# times the ~100 ms an import may make an answer wait: a node that misses it
# shows as INCOMPLETE in the verdict.
FANOUT_DEADLINE_S = 2.0
SEEDED_ORG = 9_000_001


def _org_line(n: int, status: str = "active") -> str:
    return (
        f"J-{n:07d},reg:CN:ORG{n:07d},court_judgment,judgment_debt,"
        f"10.00,CNY,{status},2025-06-01,,false,\n"
    )


def _write_orgs(path: Path, rows: int, start: int = 1, *, first: str = "") -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write(",".join(FIELDS) + "\n" + first)
        out.writelines(_org_line(n) for n in range(start, start + rows))
    return path


@pytest.fixture
def federation() -> Federation:
    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    federation.enrol("acme")
    return federation


@pytest.fixture
def node_dir(federation: Federation, tmp_path: Path) -> Path:
    """A node's data directory whose database lists one organisation."""
    data_dir = write_node_dir(federation, tmp_path, COURT)
    engine = database.create_engine_for(database.sqlite_url_for(data_dir))
    try:
        import_records(
            database.session_factory(engine),
            _write_orgs(tmp_path / "seed-orgs.csv", 1, start=SEEDED_ORG),
            federation.pseudonymisation_key,
            now=NOW,
        )
    finally:
        engine.dispose()
    return data_dir


@contextlib.contextmanager
def _registry_stub(
    federation: Federation, node: RunningNode
) -> Iterator[agency_pb2_grpc.AgencyNodeServiceStub]:
    member = federation.members[REGISTRY_ID]
    credentials = channel_credentials(
        member.tls_key_pem, member.cert_pem, federation.ca.certificate_pem
    )
    with grpc.secure_channel(f"127.0.0.1:{node.port}", credentials) as channel:
        yield agency_pb2_grpc.AgencyNodeServiceStub(channel)


def _listed(stub: agency_pb2_grpc.AgencyNodeServiceStub, federation: Federation, org: int) -> bool:
    """Ask as the registry does (one signed query, the fan-out deadline); verify the answer."""
    query = federation.query(federation.subject(f"reg:CN:ORG{org:07d}"))
    response = stub.AnswerQuery(
        agency_pb2.AnswerQueryRequest(query=query.to_proto()), timeout=FANOUT_DEADLINE_S
    )
    answer = verify_message(
        Envelope.from_proto(response.answer),
        payloads.ANSWER,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.Answer,
    )
    return unmask(answer, federation, agency=COURT, label=answer.query_id).listed


def test_a_running_node_answers_every_query_during_a_large_import(
    federation: Federation, node_dir: Path, tmp_path: Path
) -> None:
    """Every signed query gets its answer within the fan-out deadline all through an import.

    Each answer also writes the node's query log, so the import must leave the
    write lock free too; an import that held it from start to end (several
    seconds here) made answers miss the deadline.
    """
    path = _write_orgs(tmp_path / "big.csv", 100_000)
    answered = 0
    failures: list[str] = []
    node = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        with _registry_stub(federation, node) as stub:
            assert _listed(stub, federation, SEEDED_ORG)  # serving before the import starts
            process = _start_import(
                tmp_path,
                path,
                url=database.sqlite_url_for(node_dir),
                staging=node_dir / STAGING_DIR_NAME,
                key=federation.pseudonymisation_key,
            )
            try:
                while process.poll() is None:
                    try:
                        # The seeded record is never touched: it must stay listed.
                        assert _listed(stub, federation, SEEDED_ORG)
                        _listed(stub, federation, 1 + answered % 100_000)
                        answered += 2
                    except grpc.RpcError as error:
                        failures.append(f"{error.code().name}: {error.details()}")
            finally:
                _reap(process)
            assert _listed(stub, federation, 100_000)  # the import's last row, answered
    finally:
        node.stop(0)
    assert process.returncode == 0
    assert failures == []
    assert answered > 10


def test_a_node_started_after_an_import_killed_mid_apply_answers_from_the_old_state(
    federation: Federation, node_dir: Path, tmp_path: Path
) -> None:
    # The file settles the seeded listing (first chunk) and lists 3,000 more
    # organisations; the import is killed after two applied chunks.
    path = _write_orgs(tmp_path / "new.csv", 3000, first=_org_line(SEEDED_ORG, status="settled"))
    process = _start_import(
        tmp_path,
        path,
        kill_after=2,
        url=database.sqlite_url_for(node_dir),
        staging=node_dir / STAGING_DIR_NAME,
        key=federation.pseudonymisation_key,
    )
    _reap(process)
    assert process.returncode == -signal.SIGKILL
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    half_applied = _count(database.session_factory(engine))
    engine.dispose()
    assert half_applied > 1  # half applied, until someone recovers it

    node = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        with _registry_stub(federation, node) as stub:
            assert _listed(stub, federation, SEEDED_ORG)  # not settled: the old record
            assert not _listed(stub, federation, 1)  # not listed: never imported
    finally:
        node.stop(0)
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    assert _count(database.session_factory(engine)) == 1
    engine.dispose()
    assert not (node_dir / STAGING_DIR_NAME / "staging.db").exists()


_HOSTILE_FILES = {
    "wide.csv": (",".join(["kind"] * 1600) + "\n").encode(),
    "deep.jsonl": ('{"record_id": ' + "[" * 3000 + "]" * 3000 + "}\n").encode(),
    "latin1.csv": (",".join(FIELDS) + "\n").encode()
    + b"SRC-BAD,nin:AB\xe9,court_judgment,judgment_debt,,,active,2025-06-01,,,\n",
    "old.csv": (
        ",".join(FIELDS) + "\nSRC-OLD,reg:CN:OLD,court_judgment,judgment_debt,,,active,"
        "0001-01-01T00:00:00+01:00,,,\n"
    ).encode(),
}


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("wide.csv", "row 1: header: has 1600 columns, at most 64 (MAX_COLUMNS)"),
        ("deep.jsonl", "row 1: row: JSON is nested 3001 deep, at most 8 (MAX_JSON_DEPTH)"),
        ("latin1.csv", "row 2: row: is not UTF-8 text"),
        ("old.csv", "row 2: occurred_at: '0001-01-01T00:00:00+01:00' is out of range"),
    ],
)
def test_node_import_command_refuses_a_hostile_file_in_one_line(
    node_dir: Path, tmp_path: Path, name: str, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(_HOSTILE_FILES[name])
    db_file = node_dir / node_config.DATABASE_FILE
    before = db_file.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "credence.cli", "node", "import", "--dir", str(node_dir), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("credence: import refused, nothing was imported: " + says)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert db_file.read_bytes() == before


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "'quoted"])
def test_screen_output_never_starts_a_cell_with_a_formula(cell: str, tmp_path: Path) -> None:
    from credence.client.screening import COLUMNS, _Writer, done_row_keys, escape_cell  # noqa: PLC0415

    out = tmp_path / "results.csv"
    with out.open("w", newline="") as handle:
        _Writer(handle, jsonl=False, write_header=True).write(
            [cell] + [""] * (len(COLUMNS) - 1), "invalid"
        )
    with out.open(newline="") as handle:
        written = list(csv.reader(handle))[1][0]
    assert written == "'" + cell
    assert done_row_keys(out) == {cell}  # --resume still finds the row
    assert escape_cell("\rx") == "'\rx"


def test_screen_output_reads_back_cell_for_cell(tmp_path: Path) -> None:
    """CR, LF, quotes and formula prefixes in any cell: every row reads back whole."""
    from credence.client.screening import COLUMNS, _Writer, done_row_keys, unescape_cell  # noqa: PLC0415

    hostile = ["a\rb", "a\nb", "a\r\nb", 'say "hi"', "=1+1", "\rstarts", "-2", "'q", "plain"]
    rows = [[key, *([key] * (len(COLUMNS) - 1))] for key in hostile]
    out = tmp_path / "results.csv"
    with out.open("w", newline="") as handle:
        writer = _Writer(handle, jsonl=False, write_header=True)
        for row in rows:
            writer.write(row, "invalid")
    with out.open(newline="") as handle:
        read = list(csv.reader(handle))
    assert read[0] == list(COLUMNS)
    assert [[unescape_cell(cell) for cell in row] for row in read[1:]] == rows
    assert all(
        not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for row in read for cell in row
    )
    assert done_row_keys(out) == set(hostile)
