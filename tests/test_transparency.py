"""The log nobody can skip, and the subject's rights, over real sockets and TLS.

A registry and two agency nodes run in this process (so the test can doctor
the registry); they talk over loopback mutual TLS exactly as separate
processes would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation
from support.registry import run

from agency_node import database as node_database
from agency_node.models import AuditAlarm
from central_registry.lookup_log import LookupLog
from central_registry.verdict_writes import VerdictOutcome, VerdictWrite
from credence.cli import main
from credence.client.subject import SubjectClient
from credence.dev import synthetic
from credence.errors import InvalidInput
from credence.grants import tokens
from credence.keys import SigningKey
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    fed = start_federation("transparency")
    fed.enrol_member("acme", "company", "--purposes", "counterparty_verification,credit_assessment")
    fed.enrol_member("idp", "company", "--identity-verifier")
    fed.enrol_member("police", "authority")
    fed.add_agency(COURT)
    fed.add_agency(BANK)
    return fed


def _audit_health(fed: InProcessFederation, node: str) -> int:
    acme = fed.members["acme"].credentials
    credentials = channel_credentials(acme.key_pem, acme.cert_pem, acme.ca_pem)
    with grpc.secure_channel(f"127.0.0.1:{fed.nodes[node].port}", credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service="credence.audit"), timeout=5)
    return int(reply.status)


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _alarms(fed: InProcessFederation, node: str) -> list[str]:
    engine = node_database.create_engine_for(node_database.sqlite_url_for(fed.node_dir(node)))
    try:
        with node_database.session_factory(engine)() as session:
            return [alarm.query_id for alarm in session.scalars(select(AuditAlarm))]
    finally:
        engine.dispose()


def test_honest_lookups_pass_the_audit(federation: InProcessFederation, tmp_path: Path) -> None:
    with federation.requester("acme") as acme:
        verdict = acme.verify_organisation(federation.subject(synthetic.organisation(1)))
    assert verdict.status == "listed"
    assert main(["node", "audit", "--dir", str(federation.node_dir("court"))]) == 0
    head = tmp_path / "head.bin"
    args = [
        "audit", "log", "--registry-public", federation.public,
        "--ca", str(federation.registry_dir / "ca.crt"),
        "--root-keys", str(federation.root / "root.jwks.json"),
        "--http", f"https://127.0.0.1:{federation.registry.http_port}",
        "--since-head", str(head),
    ]  # fmt: skip
    assert main(args) == 0
    with federation.requester("acme") as acme:
        acme.verify_organisation(federation.subject(synthetic.organisation(2)))
    assert main(args) == 0, "the grown log must be consistent with the saved head"


def test_a_registry_that_skips_the_log_is_caught(
    federation: InProcessFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = federation.subject(synthetic.organisation(4))
    original = LookupLog.write_verdicts

    def skip_secret(self: LookupLog, writes: Sequence[VerdictWrite]) -> list[VerdictOutcome]:
        def secret_row(write: VerdictWrite) -> bool:
            return write.row is not None and write.row.subject_ref == secret.ref

        logged = [write for write in writes if not secret_row(write)]
        written = iter(original(self, logged) if logged else [])
        # The secret's lookup is told it was logged (at a made-up index); it was not.
        return [VerdictOutcome(index=0) if secret_row(w) else next(written) for w in writes]

    monkeypatch.setattr(LookupLog, "write_verdicts", skip_secret)
    with federation.requester("acme") as acme:
        verdict = acme.verify_organisation(secret)
    monkeypatch.undo()
    # The node answered (the promise was well formed) ...
    assert verdict.status == "clear"
    # ... and its background check finds the entry missing from the log.
    assert _wait_for(lambda: verdict.verdict.query_id in _alarms(federation, "court"))
    assert _wait_for(
        lambda: _audit_health(federation, "court") == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    assert main(["node", "audit", "--dir", str(federation.node_dir("court"))]) == 1


def _subject_client(fed: InProcessFederation, identifier: str, key: SigningKey) -> SubjectClient:
    return SubjectClient(
        fed.public,
        fed.ca_pem,
        subject_key=key,
        subject_ref_hex=fed.subject(identifier).hex(),
        registry_id="registry",
    )


def test_subject_sees_a_consented_lookup(federation: InProcessFederation) -> None:
    person = synthetic.person(0)
    token, grant_id, key, _ = federation.consent(person, requester="acme", idp="idp")
    with federation.requester("acme") as acme:
        acme.request_verdict(
            federation.subject(person),
            kinds=("credit",),
            purpose="credit_assessment",
            grant=agency_pb2.Grant(consent_token=token),
        )
    with _subject_client(federation, person, key) as me:
        lookups = me.lookups()
        grants = me.grants()
    assert [(record.requester, record.basis) for record in lookups] == [
        ("acme", f"consent {grant_id}")
    ]
    assert lookups[0].outcome == "served"
    assert [(grant.grant_id, grant.uses) for grant in grants] == [(grant_id, 1)]


def test_mandate_is_hidden_until_its_embargo_passes(federation: InProcessFederation) -> None:
    person = synthetic.person(3)
    subject = federation.subject(person)
    _, _, key, binding = federation.consent(person, requester="acme", idp="idp")
    police = federation.members["police"].credentials
    assert police.signing_key is not None
    now = datetime.now(UTC)
    mandate = tokens.issue_mandate(
        tokens.MandateTerms(
            subject_ref=subject.hex(),
            requester="police",
            purpose="legal_mandate",
            scope=("blacklist",),
            legal_basis=tokens.LegalBasis(statute="Criminal Procedure Act s.12", case="2026-41"),
            not_before=now - timedelta(minutes=1),
            expires_at=now + timedelta(days=1),
            embargo_until=now + timedelta(seconds=3),
        ),
        authority_id="police",
        authority_key=police.signing_key,
        now=now,
    )
    with federation.requester("police") as client:
        client.register_mandate(mandate)
        client.request_verdict(
            subject,
            kinds=("blacklist",),
            purpose="legal_mandate",
            grant=agency_pb2.Grant(mandate_token=mandate),
        )
    del binding
    with _subject_client(federation, person, key) as me:
        assert [record.requester for record in me.lookups()] == []
        time.sleep(3.5)
        visible = me.lookups()
    assert [record.requester for record in visible] == ["police"]
    assert "Criminal Procedure Act s.12" in visible[0].basis


def test_contest_flags_the_record_and_its_resolution_is_visible(
    federation: InProcessFederation,
) -> None:
    person = synthetic.person(9)  # holds an unsatisfied court judgment
    token, _, key, _ = federation.consent(person, requester="acme", idp="idp")
    grant = agency_pb2.Grant(consent_token=token)
    with federation.requester("acme") as acme:
        before = acme.request_verdict(
            federation.subject(person), kinds=("blacklist",), purpose="credit_assessment",
            grant=grant,
        )  # fmt: skip
    assert before.status == "listed"
    assert not before.verdict.blacklist.disputed
    with _subject_client(federation, person, key) as me:
        # An escape sequence for the operator's terminal is refused, and nothing is filed.
        with pytest.raises(InvalidInput, match="control characters"):
            me.contest("court", "Paid.\x1b]0;owned\x07\x1b[2J")
        assert me.contests() == []
        contest_id, flagged = me.contest("court", "This judgment was paid in full.")
    assert flagged == 1
    with federation.requester("acme") as acme:
        after = acme.request_verdict(
            federation.subject(person), kinds=("blacklist",), purpose="credit_assessment",
            grant=grant,
        )  # fmt: skip
    assert after.verdict.blacklist.disputed, "the next verdict shows the dispute"
    run("node", "disputes", "resolve", "--dir", federation.node_dir("court"), contest_id,
        "--outcome", "removed", "--note", "payment confirmed")  # fmt: skip
    with _subject_client(federation, person, key) as me:
        contests = me.contests()
        lookups = me.lookups()
    assert [(contest.contest_id, contest.state) for contest in contests] == [
        (contest_id, "removed")
    ]
    assert len(lookups) == 2
    with federation.requester("acme") as acme:
        cleared = acme.request_verdict(
            federation.subject(person), kinds=("blacklist",), purpose="credit_assessment",
            grant=grant,
        )  # fmt: skip
    assert cleared.status == "clear", "a removed record no longer counts"
