"""The node's log audit in bulk: many promises per request, and the lag it reports.

A registry log service (on both database backends) runs on a loopback TLS port
in this process; the node's data directory holds answered queries whose
promises the log does, or does not, contain.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from support.log_server import AuditBed, audit_bed

from agency_node import config as node_config
from agency_node import database as node_database
from agency_node.audit import AuditThread, log_identity
from agency_node.models import QueryLogEntry
from central_registry import transparency
from central_registry.database import create_engine_for, session_factory
from credence.cli import main
from credence.cli.progress import Progress
from credence.errors import ClaimMismatch, InvalidInput
from credence.transparency import merkle
from credence.transparency.log_audit import (
    BAD_INCLUSION_PROOF,
    MISSING_ENTRY,
    TrustedHead,
    check_inclusions,
)
from credence.v1 import registry_pb2

ENTRIES = 2_500


@pytest.fixture
def setup(tmp_path: Path, database_url: str) -> Iterator[AuditBed]:
    with audit_bed(tmp_path, database_url, ENTRIES) as bed:
        yield bed


def _checked(node_dir: Path) -> int:
    engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
    try:
        with node_database.session_factory(engine)() as session:
            return len(
                session.scalars(
                    select(QueryLogEntry.id).where(QueryLogEntry.inclusion_checked_at.is_not(None))
                ).all()
            )
    finally:
        engine.dispose()


def test_one_request_proves_a_thousand_promises(setup: AuditBed) -> None:
    client = setup.client()
    try:
        head = client.tree_head(log_identity(setup.manifests()))
        commitments = [item.commitment for item in setup.promised[:1_000]]
        response = client.inclusion_proofs(commitments, head.tree_size)
        # Proofs against another size than the head's: the batch as a whole is refused.
        other_size = client.inclusion_proofs(commitments, 2_000)
    finally:
        client.close()
    check = check_inclusions(head, commitments, response)
    assert check.included == list(range(1_000))
    assert check.failed == []
    with pytest.raises(ClaimMismatch, match="for tree size 2000, the head signs 2500"):
        check_inclusions(head, commitments, other_size)


def test_the_background_audit_proves_every_promise_and_reports_no_lag(setup: AuditBed) -> None:
    statuses: list[bool] = []
    thread = AuditThread(
        setup.auditor(), interval_seconds=3600, on_status=statuses.append, max_lag_seconds=600
    )
    report = thread.run_pass()
    thread.stopping.set()
    assert (report.checked, report.problems, report.tree_size) == (ENTRIES, [], ENTRIES)
    assert (report.unchecked, report.overdue, report.lag_seconds) == (0, 0, 0.0)
    assert statuses == [True]
    assert _checked(setup.node_dir) == ENTRIES


def test_audit_node_reports_progress_and_lag_as_json(
    setup: AuditBed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "audit", "--dir", str(setup.node_dir), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["ok"] is True
    assert (result["checked"], result["unchecked"], result["overdue"]) == (ENTRIES, 0, 0)
    assert result["lag_seconds"] == 0
    # Off a terminal: progress lines on stderr, the last one at the end.
    assert f"audit node: {ENTRIES:,}/{ENTRIES:,} promises checked" in captured.err


def test_lag_is_reported_and_turns_health_not_serving_when_the_registry_is_away(
    setup: AuditBed, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.server.stop()
    statuses: list[bool] = []
    thread = AuditThread(
        setup.auditor(), interval_seconds=3600, on_status=statuses.append, max_lag_seconds=600
    )
    with caplog.at_level(logging.INFO, logger="agency_node.audit"):
        report = thread.run_pass()
    thread.stopping.set()
    assert (report.unchecked, report.overdue) == (ENTRIES, ENTRIES)
    # Received an hour ago, merge delay 300 s: about 3,300 s past it.
    assert 3_200 < report.lag_seconds < 3_700
    assert statuses == [False]
    assert any("NOT_SERVING" in record.getMessage() for record in caplog.records)
    # The command line reports the same lag, with the registry unreachable too.
    capsys.readouterr()
    assert main(["node", "audit", "--dir", str(setup.node_dir), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert (result["checked"], result["unchecked"], result["overdue"]) == (0, ENTRIES, ENTRIES)
    assert 3_200 < result["lag_seconds"] < 3_700
    assert [problem["kind"] for problem in result["problems"]] == ["registry_unreachable"]
    assert main(["node", "audit", "--dir", str(setup.node_dir)]) == 1
    out = capsys.readouterr().out
    assert f"lag: {ENTRIES} promise(s) unchecked, {ENTRIES} past their merge delay" in out
    assert "cannot reach the registry's log" in out
    assert "missing what it promised" not in out, "an outage is not evidence of misbehaviour"


def test_plain_output_names_the_lag(setup: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "audit", "--dir", str(setup.node_dir)]) == 0
    out = capsys.readouterr().out
    assert f"checked {ENTRIES} answered queries" in out
    assert "lag: 0 promise(s) unchecked, 0 past their merge delay" in out


def test_bulk_proofs_match_single_proofs(setup: AuditBed) -> None:
    engine = create_engine_for(setup.registry_url)
    try:
        with session_factory(engine)() as session:
            commitments = [item.commitment for item in setup.promised[::7]]
            bulk = transparency.inclusion_proofs(session, commitments, 2_000)
            for commitment, proof in zip(commitments, bulk, strict=True):
                index = transparency.inclusion_proof(session, commitment, ENTRIES)[0]
                if index >= 2_000:
                    assert proof is None
                else:
                    assert proof == transparency.inclusion_proof(session, commitment, 2_000)
    finally:
        engine.dispose()


def test_check_inclusions_refuses_a_batch_with_a_proof_too_few() -> None:
    store = merkle.MemorySubtrees()
    leaves = [bytes([n]) * 32 for n in range(5)]
    for index, leaf in enumerate(leaves):
        merkle.append(store, index, merkle.leaf_hash(leaf))
    head_root = merkle.root(store, 5)
    head = TrustedHead(5, head_root, "log", None)  # type: ignore[arg-type]
    response = registry_pb2.GetInclusionProofsResponse(
        tree_size=5,
        proofs=[
            registry_pb2.InclusionProof(
                included=True, leaf_index=i, path=merkle.inclusion_proof(store, i, 5)
            )
            for i in range(4)
        ],
    )
    with pytest.raises(ClaimMismatch, match="asked for 5 inclusion proofs"):
        check_inclusions(head, leaves, response)
    response.proofs.add()  # the fifth: "not included"
    check = check_inclusions(head, leaves, response)
    assert check.included == [0, 1, 2, 3]
    assert [(position, kind) for position, kind, _ in check.failed] == [(4, MISSING_ENTRY)]
    response.proofs[4].CopyFrom(response.proofs[3])  # leaf 3's proof offered for leaf 4
    check = check_inclusions(head, leaves, response)
    assert [(position, kind) for position, kind, _ in check.failed] == [(4, BAD_INCLUSION_PROOF)]


def test_the_lag_bound_is_configured_in_node_toml(tmp_path: Path) -> None:
    settings = node_config.NodeConfig(data_dir=tmp_path, member_id="court-1")
    text = node_config.render_config(settings)
    assert "audit_max_lag_seconds = 600" in text
    parsed = node_config.parse_config(text.replace("= 600", "= 42"), tmp_path, environ={})
    assert parsed.audit_max_lag_seconds == 42
    with pytest.raises(InvalidInput, match="audit_max_lag_seconds must be at least 1"):
        node_config.parse_config(text.replace("= 600", "= 0"), tmp_path, environ={})


def test_a_stopping_node_ends_its_pass_between_batches(setup: AuditBed) -> None:
    stop = threading.Event()
    auditor = setup.auditor()
    try:
        report = auditor.run_once(stop=stop, progress=lambda done, total: stop.set())
    finally:
        auditor.close()
    # The batch already asked for is still checked; none after it is asked for.
    assert (report.checked, report.unchecked) == (2_000, ENTRIES - 2_000)
    assert _checked(setup.node_dir) == 2_000


def test_progress_on_a_terminal_is_one_updated_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream, "audit node", "promises checked")
    progress(1_000, 3_000)
    progress(3_000, 3_000)
    progress.end()
    lines = stream.getvalue().split("\r")
    assert lines[1].startswith("audit node: 1,000/3,000 promises checked")
    assert lines[2].startswith("audit node: 3,000/3,000 promises checked")
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().count("\n") == 1
