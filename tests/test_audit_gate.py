"""The bulk (gRPC) audit closes the node's log gate too, on both registry backends.

A node without ``registry_http`` proves its promises 1,000 a request on the
public port; a promise the log left out closes the gate (the node answers
nothing, saying which query) exactly as the audit from tiles does, and a
clean pass opens it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.log_server import AuditBed, audit_bed

from agency_node import config as node_config
from agency_node import database as node_database
from agency_node.audit import LogAuditor
from agency_node.log_gate import LogGate
from agency_node.models import QueryLogEntry
from credence.transparency.checkpoint import Checkpoint

ENTRIES = 1_200
HIDDEN = 1_111


@pytest.fixture
def bed(tmp_path: Path, database_url: str) -> Iterator[AuditBed]:
    with audit_bed(tmp_path, database_url, ENTRIES, left_out=[HIDDEN]) as bed:
        yield bed


def _auditor(bed: AuditBed, gate: LogGate) -> LogAuditor:
    config = node_config.load_config(bed.node_dir)
    return LogAuditor(
        engine=node_database.create_engine_for(config.effective_database_url),
        manifests=bed.manifests(),
        client=bed.client(),
        clock=lambda: datetime.now(UTC),
        merge_delay=timedelta(seconds=config.audit_merge_delay_seconds),
        gate=gate,
    )


def test_a_left_out_entry_closes_the_gate_until_a_clean_pass(bed: AuditBed) -> None:
    now = datetime.now(UTC)
    gate = LogGate(timedelta(minutes=5))
    # The node has seen a recent cosigned checkpoint: only the audit can close the gate.
    gate.saw_cosigned(Checkpoint("credence/test-federation/log", 1, bytes(32)), now)
    assert gate.refusal(now) is None
    hidden = bed.promised[HIDDEN].query_id
    auditor = _auditor(bed, gate)
    try:
        report = auditor.run_once()
        assert [(kind, query) for kind, query, _ in report.problems] == [("missing_entry", hidden)]
        refusal = gate.refusal(datetime.now(UTC))
        assert refusal is not None
        assert hidden in refusal
        # The promise is withdrawn from the node's log (here: the row removed): a clean
        # pass opens the gate again.
        engine = bed.node_engine()
        try:
            with node_database.session_factory(engine).begin() as session:
                session.query(QueryLogEntry).filter(QueryLogEntry.query_id == hidden).delete()
        finally:
            engine.dispose()
        assert auditor.run_once().problems == []
        assert gate.refusal(datetime.now(UTC)) is None
    finally:
        auditor.close()
