"""A registry that claims a dropout for an agency that answered is caught (issue 14, point 3).

Registry and three agency nodes in-process over real mTLS sockets; the
nodes read the log's tiles against the quorum-cosigned checkpoint. The test
plays a registry that lies: it drives the registry's own mask recovery
(:func:`central_registry.mask_recovery.recover`: its fan-out, its key, its
log) for a lookup every agency answered, naming one of them missing, to
unmask that agency's answer with the others' shares. The recovery leaf it
had to log is found by that agency's audit: an alarm. A genuine dropout (a
stopped node) leaves a leaf too, which raises nothing at the stopped node
once it is back: it has no answer to that query.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node import database as node_database
from agency_node.answer_vectors import KeptAnswer
from agency_node.audit import AuditReport
from agency_node.models import AuditAlarm, QueryLogEntry
from agency_node.recovery import RECOVERY_MAX_AGE, RECOVERY_PURPOSE, check_recovery
from agency_node.server import RunningNode, start_node
from agency_node.tile_audit import CLAIMED_MISSING
from central_registry import config as registry_config
from central_registry.aggregation import Recovery
from central_registry.fanout import AgencyTarget
from central_registry.keyring import load_keys
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow, recovery_row
from central_registry.mask_recovery import layout_of, recover
from central_registry.models import LogEntry
from credence import payloads
from credence.blind.recovery_leaf import recovery_leaf, recovery_leaves
from credence.dev import synthetic
from credence.envelope import sign
from credence.errors import FailedPrecondition
from credence.storage import session_factory
from credence.v1 import agency_pb2, registry_pb2

PROFILES = synthetic.AGENCY_PROFILES[:3]
SUBJECTS = 20
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    federation = start_federation("claims")
    federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
    settings = {
        "registry_http": f"https://127.0.0.1:{federation.registry.http_port}",
        "audit_interval_seconds": 3600,
        "audit_merge_delay_seconds": 1,
    }
    for profile in PROFILES:
        federation.add_agency(profile, subjects=SUBJECTS, settings=settings)
    return federation


def _lookup(federation: InProcessFederation) -> registry_pb2.Verdict:
    expected = synthetic.expected(PROFILES, SUBJECTS)
    with federation.requester("lender") as client:
        subject = federation.subject(expected.listed_organisations[0])
        return client.verify_organisation(subject).verdict


def _pass_until(node: RunningNode, done: Callable[[AuditReport], bool]) -> AuditReport:
    """Audit passes until ``done`` (the cosigned checkpoint may lag the log by a witness round)."""
    assert node.auditor is not None
    deadline = time.monotonic() + 90
    while True:
        report = node.auditor.run_pass()
        if done(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.3)


def _leaf_index(federation: InProcessFederation, leaf: bytes) -> int | None:
    """Where the registry's log holds ``leaf``, if it does."""
    with session_factory(federation.registry.running.engine)() as session:
        return session.scalar(select(LogEntry.idx).where(LogEntry.commitment == leaf))


def _claim_alarms(node_dir: Path) -> list[str]:
    """The query ids of the node's recorded claimed-missing alarms."""
    engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
    try:
        with node_database.session_factory(engine)() as session:
            return list(
                session.scalars(
                    select(AuditAlarm.query_id).where(AuditAlarm.kind == CLAIMED_MISSING)
                )
            )
    finally:
        engine.dispose()


def _recovery_rows(node_dir: Path, query_id: str) -> list[tuple[str, bytes | None, bytes | None]]:
    """The node's query-log rows of recovery requests for ``query_id``: outcome, leaf, share."""
    engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
    try:
        with node_database.session_factory(engine)() as session:
            rows = session.execute(
                select(
                    QueryLogEntry.outcome, QueryLogEntry.entry_commitment,
                    QueryLogEntry.answer_hash,
                )
                .where(
                    QueryLogEntry.purpose == RECOVERY_PURPOSE,
                    QueryLogEntry.query_id == query_id,
                )
                .order_by(QueryLogEntry.id)
            )  # fmt: skip
            return [(outcome, leaf, share) for outcome, leaf, share in rows]
    finally:
        engine.dispose()


def _target(federation: InProcessFederation, member: str) -> AgencyTarget:
    manifest = federation.registry.running.manifests.current()
    return AgencyTarget(
        member_id=member,
        endpoint=manifest.member(member).endpoint,
        keys=manifest.member_keys(member),
    )


def _forged_recovery(
    federation: InProcessFederation, query_id: str, missing: str, answering: Sequence[str]
) -> Recovery:
    """The registry's own recovery, asked with a missing set it chose."""
    running = federation.registry.running
    manifest = running.manifests.current()
    keys = load_keys(registry_config.load_config(federation.registry_dir))
    layout = layout_of(manifest)
    sessions = session_factory(running.engine)

    def log(rows: Sequence[LogRow]) -> int:
        with sessions.begin() as session:
            return append_entries(session, rows)

    targets = [_target(federation, member) for member in answering]
    return federation.registry.run(
        recover(
            running.fanout, targets, query_id=query_id, missing=[missing],
            log_promise_hash=b"", layout_id=layout.layout_id, count=layout.length,
            batch=False, now=datetime.now(UTC), lifetime=timedelta(seconds=30),
            key=keys.signing, registry_id="registry", log=log,
        )
    )  # fmt: skip


def test_a_registry_that_claims_an_answering_agency_missing_is_caught_by_its_audit(
    federation: InProcessFederation,
) -> None:
    verdict = _lookup(federation)
    answered = sorted(a.member_id for a in verdict.coverage.agencies if a.answer_hash)
    assert len(answered) >= 2
    victim, others = answered[0], answered[1:]
    recovery = _forged_recovery(federation, verdict.query_id, victim, others)
    # The other nodes cannot tell: they give their shares with the victim, which
    # would unmask its answer. But the registry had to log the claim first.
    assert recovery.failure == ""
    assert sorted(recovery.shares) == others
    leaf = recovery_leaf(verdict.query_id, victim)
    index = _leaf_index(federation, leaf)
    assert index is not None

    node = federation.nodes[victim]
    report = _pass_until(node, lambda r: any(kind == CLAIMED_MISSING for kind, _, _ in r.problems))
    claims = [(query, detail) for kind, query, detail in report.problems if kind == CLAIMED_MISSING]
    assert [query for query, _ in claims] == [verdict.query_id]
    detail = claims[0][1]
    assert f"claimed this node ({victim}) missing for {verdict.query_id}" in detail
    assert f"recovery leaf {leaf.hex()} is log entry {index}" in detail
    # The evidence is kept in the node's alarms (and reported to the registry's operator).
    assert _claim_alarms(federation.node_dir(victim)) == [verdict.query_id]
    # The agencies that gave shares hold the promised leaf as a promise of their own,
    # which their audit finds in the log: no alarm there.
    for other in others:
        rows = _recovery_rows(federation.node_dir(other), verdict.query_id)
        assert [(outcome, logged) for outcome, logged, _ in rows] == [("answered", leaf)]
        other_report = _pass_until(federation.nodes[other], lambda r: r.unchecked == 0)
        assert not [p for p in other_report.problems if p[0] == CLAIMED_MISSING]
        assert other_report.unchecked == 0


@pytest.mark.parametrize(
    "promise",
    ["none", "another agency's leaf", "another query's leaf", "an extra leaf"],
)
def test_a_node_gives_no_share_without_the_logs_promise_of_exactly_its_leaves(
    federation: InProcessFederation, promise: str
) -> None:
    # A registry that would rather not log its claim signs a request without the
    # leaves, or with leaves that name someone or something else.
    verdict = _lookup(federation)
    answered = sorted(a.member_id for a in verdict.coverage.agencies if a.answer_hash)
    victim, asked = answered[0], answered[1]
    query_id = verdict.query_id
    leaves = {
        "none": [],
        "another agency's leaf": [recovery_leaf(query_id, asked)],
        "another query's leaf": [recovery_leaf(query_id + "0", victim)],
        "an extra leaf": [recovery_leaf(query_id, victim), recovery_leaf(query_id, asked)],
    }[promise]
    layout = layout_of(federation.registry.running.manifests.current())
    request = agency_pb2.RecoveryRequest(
        query_id=query_id, missing=[victim], answered=answered[1:], layout_id=layout.layout_id,
        count=layout.length, log_leaves=leaves, log_index=0,
    )  # fmt: skip
    now = datetime.now(UTC)
    request.issued_at.FromDatetime(now)
    request.expires_at.FromDatetime(now + timedelta(seconds=30))
    keys = load_keys(registry_config.load_config(federation.registry_dir))
    envelope = sign(payloads.RECOVERY_REQUEST, request.SerializeToString(), [keys.signing])
    running = federation.registry.running
    [reply] = federation.registry.run(
        running.fanout.recover([_target(federation, asked)], envelope)
    )
    # Refused, saying why; no share came back.
    assert isinstance(reply, str), reply
    assert "does not promise the log's recovery leaves of its missing set" in reply
    # The refusal is in the node's query log, holding no leaf to check and no share.
    assert _recovery_rows(federation.node_dir(asked), query_id) == [("refused", None, None)]
    # Nothing changed: no claim is in the log, and the victim's audit finds none.
    assert _leaf_index(federation, recovery_leaf(query_id, victim)) is None
    report = _pass_until(federation.nodes[victim], lambda r: r.tree_size > 0)
    assert query_id not in [query for kind, query, _ in report.problems if kind == CLAIMED_MISSING]


def test_a_genuine_dropout_raises_no_alarm_at_the_stopped_node_once_it_is_back(
    federation: InProcessFederation,
) -> None:
    asked = _lookup(federation).coverage.agencies
    quiet = sorted(a.member_id for a in asked if a.answer_hash)[-1]
    node_dir = federation.node_dir(quiet)
    federation.nodes[quiet].stop(0)
    try:
        verdict = _lookup(federation)
        # The registry recovered the masks the stopped node would have cancelled.
        assert len(verdict.recoveries) >= 1
        assert quiet in [a.member_id for a in verdict.coverage.agencies if not a.answer_hash]
        leaf = recovery_leaf(verdict.query_id, quiet)
        index = _leaf_index(federation, leaf)
        assert index is not None, "the registry logs each recovery's leaves"
    finally:
        federation.nodes[quiet] = start_node(node_dir)
    # Back, the node reads a cosigned checkpoint that holds the leaf, and finds no claim
    # against an answer of its own: it did not answer that query.
    report = _pass_until(federation.nodes[quiet], lambda r: r.tree_size > index)
    assert report.tree_size > index
    assert not [p for p in report.problems if p[0] == CLAIMED_MISSING]
    assert verdict.query_id not in _claim_alarms(node_dir)


def test_the_leaf_is_the_documented_hash_and_its_row_names_no_subject() -> None:
    # docs/protocol.md section 10, with plain hashlib.
    described = hashlib.sha256(b"credence/recovery/v1\x00q-1\x00court-1").digest()
    assert recovery_leaf("q-1", "court-1") == described
    assert recovery_leaves("q-1", ["tax-1", "court-1"]) == [
        described,
        recovery_leaf("q-1", "tax-1"),
    ]
    row = recovery_row(query_id="q-1", missing_agency="court-1", registry="registry", now=NOW)
    assert (row.commitment, row.query_id) == (described, described.hex())
    assert (row.subject_ref, row.subject_type, row.purpose, row.salt) == (
        bytes(32), 0, 0, bytes(16),
    )  # fmt: skip
    assert (row.basis, row.outcome, row.reason) == (
        "mask recovery", "dispatched", "court-1 named missing for q-1",
    )  # fmt: skip


def test_no_share_for_an_answer_older_than_the_recovery_window() -> None:
    kept = KeptAnswer(
        query_id="q-1", batch=False, layout_id="layout/1", audience=("bank-1", "court-1"),
        item_ids=(), vectors=bytes(16), masks=bytes(16), answered_at=NOW,
    )  # fmt: skip
    request = agency_pb2.RecoveryRequest(
        query_id="q-1", missing=["bank-1"], answered=["court-1"], layout_id="layout/1",
        count=2, log_leaves=recovery_leaves("q-1", ["bank-1"]),
    )  # fmt: skip
    later = NOW + RECOVERY_MAX_AGE + timedelta(seconds=1)
    request.issued_at.FromDatetime(later)
    request.expires_at.FromDatetime(later + timedelta(seconds=30))
    with pytest.raises(FailedPrecondition, match="shares are given only while the query"):
        check_recovery(request, kept, member_id="court-1", earlier_missing=None, now=later)
    # Within the window the same request is answered.
    last = NOW + RECOVERY_MAX_AGE
    request.issued_at.FromDatetime(last)
    request.expires_at.FromDatetime(last + timedelta(seconds=30))
    assert check_recovery(request, kept, member_id="court-1", earlier_missing=None, now=last) == (
        "bank-1",
    )
