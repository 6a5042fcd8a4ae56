"""The node's audit from tiles in a real federation: promises found, a withheld one stops answers.

Registry and nodes in-process over real TLS sockets (the registry's HTTP side
serves the log's tiles; its witnesses are the nodes). Each node reads the
tiles it needs, checked against the latest quorum-cosigned checkpoint. The
audit threads are driven by hand (their interval is an hour) so a test can
see each pass.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node import database as node_database
from agency_node.audit import AuditReport
from agency_node.models import AuditAlarm, QueryLogEntry
from agency_node.server import RunningNode
from agency_node.tile_audit import ROUND_ALLOWANCE
from central_registry import config as registry_config
from central_registry.keyring import load_keys
from credence.cli import main
from credence.dev import synthetic
from credence.transparency.checkpoint import Checkpoint, parse_checkpoint, sign_checkpoint
from credence.transparency.note import parse_note
from credence.transparency.tiles import TileRef
from credence.v1 import common_pb2

PROFILES = synthetic.AGENCY_PROFILES[:3]
SUBJECTS = 20
MERGE_DELAY_SECONDS = 2


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    federation = start_federation("tiles")
    federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
    settings = {
        "registry_http": f"https://127.0.0.1:{federation.registry.http_port}",
        "audit_interval_seconds": 3600,
        "audit_merge_delay_seconds": MERGE_DELAY_SECONDS,
    }
    for profile in PROFILES:
        federation.add_agency(profile, subjects=SUBJECTS, settings=settings)
    return federation


def _lookups(federation: InProcessFederation, count: int) -> list[common_pb2.Coverage]:
    expected = synthetic.expected(PROFILES, SUBJECTS)
    subjects = (expected.listed_organisations + expected.clear_organisations)[:count]
    assert len(subjects) == count
    with federation.requester("lender") as client:
        return [
            client.verify_organisation(federation.subject(subject)).verdict.coverage
            for subject in subjects
        ]


def _pass_until(node: RunningNode, done: Callable[[AuditReport], bool]) -> AuditReport:
    """Audit passes until ``done`` (the cosigned checkpoint may lag the log by a witness round)."""
    assert node.auditor is not None
    deadline = time.monotonic() + 60
    while True:
        report = node.auditor.run_pass()
        if done(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.3)


def _rows(node_dir: Path) -> list[QueryLogEntry]:
    engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
    try:
        with node_database.session_factory(engine)() as session:
            return list(
                session.scalars(select(QueryLogEntry).where(QueryLogEntry.outcome == "answered"))
            )
    finally:
        engine.dispose()


def test_each_node_finds_its_promises_in_the_cosigned_tiles(
    federation: InProcessFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    coverages = _lookups(federation, 3)
    for coverage in coverages:
        assert coverage.answered == coverage.expected >= 2
    # The agencies asked (those holding blacklist kinds) audit their promises.
    asked = {agency.member_id for agency in coverages[0].agencies}
    for profile in PROFILES:
        if profile.name not in asked:
            continue
        node = federation.nodes[profile.name]
        report = _pass_until(node, lambda r: r.unchecked == 0)
        assert report.problems == []
        assert report.unchecked == 0
        assert report.tree_size >= 3
        rows = _rows(federation.node_dir(profile.name))
        assert len(rows) >= 3
        assert all(row.inclusion_checked_at is not None for row in rows)
        assert node.gate is not None
        assert node.gate.refusal(datetime.now(UTC)) is None
    # The operator's command re-checks every answered query, from tiles, in its own reader.
    name = PROFILES[0].name
    capsys.readouterr()
    assert main(["node", "audit", "--dir", str(federation.node_dir(name)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True
    assert result["checked"] == len(_rows(federation.node_dir(name)))


def test_a_registry_that_withholds_a_promised_entry_stops_getting_answers(
    federation: InProcessFederation,
) -> None:
    # The registry promised this node an entry (the node answered the query) and
    # never logged it: the node's query log holds the promise, the log does not.
    name = PROFILES[0].name  # the court: asked about every organisation
    node = federation.nodes[name]
    assert node.gate is not None
    withheld = f"q-withheld-{secrets.token_hex(4)}"
    # And one promised just now, not yet due: no alarm for it.
    recent = f"q-recent-{secrets.token_hex(4)}"
    # Due before the registry signed its latest checkpoint, a witnessing round allowed.
    overdue = timedelta(seconds=MERGE_DELAY_SECONDS) + ROUND_ALLOWANCE + timedelta(seconds=30)
    engine = node_database.create_engine_for(
        node_database.sqlite_url_for(federation.node_dir(name))
    )
    try:
        with node_database.session_factory(engine).begin() as session:
            session.execute(
                insert(QueryLogEntry),
                [{
                    "query_id": query_id, "requester": "lender",
                    "received_at": datetime.now(UTC) - age,
                    "purpose": "counterparty_verification", "kinds": "blacklist",
                    "outcome": "answered", "status_code": "OK", "reason": "",
                    "entry_commitment": secrets.token_bytes(32),
                } for query_id, age in ((withheld, overdue), (recent, timedelta(0)))],
            )  # fmt: skip
        report = _pass_until(node, lambda r: bool(r.problems))
        assert [(kind, query) for kind, query, _ in report.problems] == [
            ("missing_entry", withheld)
        ]
        assert "past the merge delay of 2 s" in report.problems[0][2]
        assert report.unchecked == 2
        refusal = node.gate.refusal(datetime.now(UTC))
        assert refusal is not None
        assert withheld in refusal
        # The node refuses the next lookup; the other agencies still answer it.
        [coverage] = _lookups(federation, 1)
        assert coverage.answered == coverage.expected - 1
        [refused] = [agency for agency in coverage.agencies if agency.member_id == name]
        assert "answers no queries" in refused.reason
        assert withheld in refused.reason
        with node_database.session_factory(engine)() as session:
            alarms = session.scalars(
                select(AuditAlarm).where(AuditAlarm.query_id == withheld)
            ).all()
        assert [alarm.kind for alarm in alarms] == ["missing_entry"]
        # Once every promise checks out again (here: the forged one is gone), the gate opens.
        with node_database.session_factory(engine).begin() as session:
            session.query(QueryLogEntry).filter(
                QueryLogEntry.query_id.in_((withheld, recent))
            ).delete()
        assert node.auditor is not None
        assert node.auditor.run_pass().problems == []
        assert node.gate.refusal(datetime.now(UTC)) is None
    finally:
        engine.dispose()


def test_audit_log_checks_the_quorum_the_tiles_and_the_saved_checkpoint(
    federation: InProcessFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "log.state"
    command = [
        "audit", "log", "--registry-public", federation.public,
        "--ca", str(federation.registry_dir / "ca.crt"),
        "--root-keys", str(federation.root / "root.jwks.json"),
        "--http", f"https://127.0.0.1:{federation.registry.http_port}", "--state", str(state),
    ]  # fmt: skip
    capsys.readouterr()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "no saved checkpoint yet: this one is trusted from now on" in out
    assert "cosigned by" in out
    assert "of 3 witnesses" in out
    assert "the manifest requires 2" in out
    first = parse_checkpoint(parse_note(state.read_bytes()).text)
    _lookups(federation, 1)
    deadline = time.monotonic() + 60
    while True:
        assert main(command) == 0
        out = capsys.readouterr().out
        grown = parse_checkpoint(parse_note(state.read_bytes()).text)
        if grown.size > first.size or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert grown.size > first.size
    assert "consistent: extends the saved checkpoint of" in out
    # The registry once showed this auditor another view: a checkpoint it signed
    # over a tree whose first entry differs. The log served now does not extend it.
    keys = load_keys(registry_config.load_config(federation.registry_dir))
    other = Checkpoint(grown.origin, 1, secrets.token_bytes(32))
    state.write_bytes(sign_checkpoint(other, keys.signing))
    before = state.read_bytes()
    assert main(command) == 3
    out = capsys.readouterr().out
    assert "FAILED: the log of" in out
    assert "does not extend the checkpoint of 1 saved before" in out
    assert state.read_bytes() == before


def test_a_registry_serving_a_doctored_tile_is_refused_and_stops_getting_answers(
    federation: InProcessFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry swaps one entry in the bundles it serves (to pass off a
    # promise it withheld, say): the bundle no longer hashes to the root.
    http = federation.registry.running.http
    genuine = http._tile
    assert genuine is not None

    def doctored(ref: TileRef) -> bytes:
        data = bytearray(genuine(ref))
        if ref.entries:
            data[2] ^= 0xFF
        return bytes(data)

    name = PROFILES[0].name
    node = federation.nodes[name]
    assert node.auditor is not None
    assert node.gate is not None
    monkeypatch.setattr(http, "_tile", doctored)
    report = node.auditor.run_pass()
    assert [kind for kind, _, _ in report.problems] == ["bad_tile"]
    assert "does not hash to the checked leaf" in report.problems[0][2]
    refusal = node.gate.refusal(datetime.now(UTC))
    assert refusal is not None
    assert "the log's tiles are refused" in refusal
    # Served genuine again: the next pass clears it.
    monkeypatch.setattr(http, "_tile", genuine)
    assert node.auditor.run_pass().problems == []
    assert node.gate.refusal(datetime.now(UTC)) is None


def test_node_audit_says_when_a_promise_is_not_yet_in_a_cosigned_checkpoint(
    federation: InProcessFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    name = PROFILES[0].name
    engine = node_database.create_engine_for(
        node_database.sqlite_url_for(federation.node_dir(name))
    )
    query_id = f"q-fresh-{secrets.token_hex(4)}"
    try:
        with node_database.session_factory(engine).begin() as session:
            session.execute(
                insert(QueryLogEntry),
                [{
                    "query_id": query_id, "requester": "lender", "received_at": datetime.now(UTC),
                    "purpose": "counterparty_verification", "kinds": "blacklist",
                    "outcome": "answered", "status_code": "OK", "reason": "",
                    "entry_commitment": secrets.token_bytes(32),
                }],
            )  # fmt: skip
        capsys.readouterr()
        assert main(["node", "audit", "--dir", str(federation.node_dir(name))]) == 0
        out = capsys.readouterr().out
        # The fresh promise (and any lookup newer than the checkpoint) is not yet due.
        assert re.search(r"\d+ answered quer(y is|ies are) not in the log's latest cosigned "
                         r"checkpoint yet, none past the merge delay", out), out  # fmt: skip
        assert "every answered query is in the registry's log" not in out
    finally:
        with node_database.session_factory(engine).begin() as session:
            session.query(QueryLogEntry).filter(QueryLogEntry.query_id == query_id).delete()
        engine.dispose()
