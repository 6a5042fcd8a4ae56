"""A registry that hides one lookup among thousands is caught at once, in bulk.

The attacker is the registry: it answered 2,500 promised lookups through the
nodes but leaves one out of its log, or forges one proof in a batch of a
thousand, or floods its own proof service. The node's audit proves its
promises a thousand per request against one signed head, so the gap is found
in one pass of a few requests (not hours of one request per promise), only
the doctored entry is flagged, and nothing else is marked checked or changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from support.log_server import AuditBed, audit_bed

from agency_node.audit import AuditThread, log_identity
from agency_node.models import AuditAlarm, QueryLogEntry
from central_registry import transparency
from central_registry.service_public import TransparencyLogServicer
from credence.v1 import registry_pb2

ENTRIES = 2_500
HIDDEN = 1_717  # in the second batch of a thousand


def _count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the log service's proof requests (patched before the server starts)."""
    calls = {"GetInclusionProof": 0, "GetInclusionProofs": 0}
    for name in calls:
        original = getattr(TransparencyLogServicer, name)

        async def counted(self: Any, request: Any, context: Any, *, _name: str = name,
                          _original: Callable[..., Any] = original) -> Any:  # fmt: skip
            calls[_name] += 1
            return await _original(self, request, context)

        monkeypatch.setattr(TransparencyLogServicer, name, counted)
    return calls


def _node_state(bed: AuditBed) -> tuple[list[str], list[tuple[str, str]]]:
    """Query ids still unchecked, and the alarms raised."""
    engine = bed.node_engine()
    try:
        with engine.connect() as connection:
            unchecked = list(
                connection.scalars(
                    select(QueryLogEntry.query_id).where(
                        QueryLogEntry.inclusion_checked_at.is_(None)
                    )
                )
            )
            alarms = [(row.kind, row.query_id) for row in connection.execute(select(AuditAlarm))]
    finally:
        engine.dispose()
    return unchecked, alarms


def _one_pass(bed: AuditBed) -> tuple[Any, list[bool]]:
    statuses: list[bool] = []
    thread = AuditThread(
        bed.auditor(), interval_seconds=3600, on_status=statuses.append, max_lag_seconds=600
    )
    report = thread.run_pass()
    thread.stopping.set()
    return report, statuses


def test_an_entry_left_out_of_the_log_is_caught_in_one_bulk_pass(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_calls(monkeypatch)
    with audit_bed(tmp_path, database_url, ENTRIES, left_out=[HIDDEN]) as bed:
        hidden = bed.promised[HIDDEN].query_id
        report, statuses = _one_pass(bed)
        unchecked, alarms = _node_state(bed)
    # Three requests for 2,500 promises, none of them one at a time.
    assert calls == {"GetInclusionProof": 0, "GetInclusionProofs": 3}
    assert [(kind, query_id) for kind, query_id, _ in report.problems] == [
        ("missing_entry", hidden)
    ]
    assert report.checked == ENTRIES - 1
    assert statuses == [False], "the audit component must report NOT_SERVING"
    # Only the hidden lookup stays unchecked, with its alarm; the lag shows it.
    assert unchecked == [hidden]
    assert alarms == [("missing_entry", hidden)]
    assert (report.unchecked, report.overdue) == (1, 1)
    assert report.lag_seconds > 3_000


def test_one_forged_proof_among_a_thousand_is_caught(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = transparency.inclusion_proofs

    def forge_one(
        session: Any, commitments: Sequence[bytes], tree_size: int
    ) -> list[tuple[int, list[bytes]] | None]:
        proofs = original(session, commitments, tree_size)
        if len(proofs) > 500 and proofs[500] is not None:
            index, path = proofs[500]
            proofs[500] = (index, [bytes(32), *path[1:]])
        return proofs

    monkeypatch.setattr(transparency, "inclusion_proofs", forge_one)
    with audit_bed(tmp_path, database_url, ENTRIES) as bed:
        forged = {bed.promised[500].query_id, bed.promised[1_500].query_id}
        report, statuses = _one_pass(bed)
        unchecked, alarms = _node_state(bed)
    assert {(kind, query_id) for kind, query_id, _ in report.problems} == {
        ("bad_inclusion_proof", query_id) for query_id in forged
    }
    assert report.checked == ENTRIES - 2
    assert statuses == [False]
    assert set(unchecked) == forged
    assert set(alarms) == {("bad_inclusion_proof", query_id) for query_id in forged}


def test_a_batch_answer_with_a_proof_dropped_marks_nothing_checked(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = transparency.inclusion_proofs

    def drop_last(
        session: Any, commitments: Sequence[bytes], tree_size: int
    ) -> list[tuple[int, list[bytes]] | None]:
        return original(session, commitments, tree_size)[:-1]

    monkeypatch.setattr(transparency, "inclusion_proofs", drop_last)
    with audit_bed(tmp_path, database_url, 1_200) as bed:
        report, statuses = _one_pass(bed)
        unchecked, _ = _node_state(bed)
    assert report.checked == 0
    assert {kind for kind, _, _ in report.problems} == {"bad_inclusion_proof"}
    assert "asked for 1000 inclusion proofs, the registry returned 999" in report.problems[0][2]
    assert len(unchecked) == 1_200
    assert statuses == [False]


def test_an_over_limit_proof_request_is_refused(tmp_path: Path, database_url: str) -> None:
    with audit_bed(tmp_path, database_url, 1_200) as bed:
        commitments = [item.commitment for item in bed.promised[:1_001]]
        client = bed.client()
        try:
            head = client.tree_head(log_identity(bed.manifests()))
            with pytest.raises(grpc.RpcError) as refused:
                client.inclusion_proofs(commitments, head.tree_size)
            after = client.tree_head(log_identity(bed.manifests()))
            allowed = client.inclusion_proofs(commitments[:1_000], head.tree_size)
        finally:
            client.close()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 1000 inclusion proofs per call, got 1001" in str(refused.value.details())
    assert (after.tree_size, after.root_hash) == (head.tree_size, head.root_hash)
    assert len(allowed.proofs) == 1_000
    assert all(isinstance(proof, registry_pb2.InclusionProof) for proof in allowed.proofs)
