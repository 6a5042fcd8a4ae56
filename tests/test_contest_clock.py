"""The dispute clock over a real federation: TLS sockets, databases, the CLIs and the console.

A registry with ``contest_deadline_days = 1`` and two agency nodes (court,
bank) run in this process on one federation clock: real time plus an offset
the test moves two days forward, so every member (registry, nodes, the
requester, the subject) agrees on the time, as on a real federation two days
later. A person listed only by a court judgment and scored on a bank default
contests both: until the due date the records still count (the verdict says
disputed); past it the person is CLEAR and the bank's points are gone, the
subject's ``credence me contests`` says OVERDUE, the agency's ``credence node
disputes list`` and its log say so, and the operator's console and metrics
show the contests by age. Resolving restores an upheld record; a removed one
is gone. From the attacker's side: the subject cannot set or move the
deadline, and a re-import keeps an open contest's due date and dispute.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from support.cli_run import run_cli
from support.console import admin_console, admin_token, issue_admin_token
from support.inprocess import FANOUT_DEADLINE_SECONDS, InProcessFederation
from support.registry import init_registry, run

from agency_node import config as node_config
from agency_node.manifest_holder import load_manifest
from agency_node.models import Record
from central_registry.server import RegistryThread
from credence.client.requester import VerifiedVerdict
from credence.client.results import ScreenRow
from credence.client.subject import SubjectClient
from credence.dev import synthetic
from credence.errors import CredenceError
from credence.keys import SigningKey, save_signing_key
from credence.v1 import agency_pb2, registry_pb2

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]
#: Listed only by the court's judgment below; scored on the bank's default.
PERSON = "nin:P7700001"
#: Another of the court's judgments, for the attacker's attempts.
OTHER = "nin:P7700002"
#: Held by no agency: the score of nobody's records.
NOBODY = "nin:P7700003"
DEADLINE = timedelta(days=1)
HEADER = "record_id,identifier,kind,category,status,occurred_at,amount,currency,disputed"


class FederationClock:
    """The federation's time: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def clock() -> FederationClock:
    return FederationClock()


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, clock: FederationClock
) -> Iterator[InProcessFederation]:
    root = tmp_path_factory.mktemp("contest-clock")
    registry_dir = init_registry(
        root / "registry",
        {
            "fanout_deadline_seconds": FANOUT_DEADLINE_SECONDS,
            "contest_deadline_days": 1,
            "console_listen": "127.0.0.1:0",
        },
    )
    federation = InProcessFederation(root, RegistryThread(registry_dir, clock=clock))
    try:
        federation.enrol_member("acme", "company", "--purposes", "credit_assessment")
        federation.enrol_member("idp", "company", "--identity-verifier")
        federation.add_agency(COURT, subjects=10, clock=clock)
        federation.add_agency(BANK, subjects=10, clock=clock)
        _import(federation, COURT.name, "CLK-1", PERSON, "court_judgment,judgment_debt")
        _import(federation, COURT.name, "CLK-2", OTHER, "court_judgment,judgment_debt")
        _import(federation, BANK.name, "CLK-3", PERSON, "loan_default,consumer_loan")
        issue_admin_token(federation)
        yield federation
    finally:
        federation.stop()


def _import(
    fed: InProcessFederation, agency: str, record_id: str, identifier: str, kind: str,
    amount: str = "", disputed: str = "",
) -> None:  # fmt: skip
    """Import one active record into a running node (a re-import updates it in place)."""
    path = fed.node_dir(agency) / f"{record_id}.csv"
    currency = "EUR" if amount else ""
    row = f"{record_id},{identifier},{kind},active,2025-06-01,{amount},{currency},{disputed}"
    path.write_text(f"{HEADER}\n{row}\n")
    run("node", "import", "--dir", fed.node_dir(agency), path)


def _verdict(
    fed: InProcessFederation, clock: FederationClock, identifier: str, token: str
) -> VerifiedVerdict:
    return fed.credit_verdict(identifier, requester="acme", consent=token, clock=clock)


def _subject(
    fed: InProcessFederation, identifier: str, key: SigningKey, clock: FederationClock
) -> SubjectClient:
    return SubjectClient(
        fed.public, fed.ca_pem, subject_key=key, subject_ref_hex=fed.subject(identifier).hex(),
        registry_id="registry", clock=clock,
    )  # fmt: skip


def _contest_due(fed: InProcessFederation, agency: str, record_id: str) -> datetime | None:
    with fed.node_session(agency) as session:
        return session.scalar(select(Record.contest_due_at).where(Record.record_id == record_id))


def _record_exists(fed: InProcessFederation, agency: str, record_id: str) -> bool:
    with fed.node_session(agency) as session:
        return session.scalar(select(Record.id).where(Record.record_id == record_id)) is not None


def _wait_answering(fed: InProcessFederation, clock: FederationClock) -> None:
    """Wait until every node takes queries at the federation's time (a fresh checkpoint)."""
    deadline = time.monotonic() + 60
    for node in fed.nodes.values():
        while node.gate is not None and (reason := node.gate.refusal(clock())) is not None:
            assert time.monotonic() < deadline, f"a node never opened: {reason}"
            time.sleep(0.05)


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return out


def test_the_deadline_comes_from_the_signed_manifest(fed: InProcessFederation) -> None:
    assert fed.registry.running.manifests.current().contest_deadline_days == 1
    for agency in fed.nodes:
        config = node_config.load_config(fed.node_dir(agency))
        assert load_manifest(config, datetime.now(UTC)).contest_deadline == DEADLINE
    # Nothing in a subject's contest request can carry a deadline or a filing time.
    fields = {f.name for f in registry_pb2.ContestRecordsRequest.DESCRIPTOR.fields}
    assert fields == {"subject_proof", "agency", "record_kind", "statement"}


def test_a_record_stops_counting_past_its_contests_due_date_until_resolved(
    fed: InProcessFederation,
    clock: FederationClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, _, key, binding = fed.consent(PERSON, requester="acme", idp="idp")
    second = fed.consent(PERSON, requester="acme", idp="idp")[0]
    screening = [
        ScreenRow(identifier, fed.subject(identifier), agency_pb2.Grant(consent_token=token))
        for identifier in (PERSON, OTHER)
        for token in [fed.consent(identifier, requester="acme", idp="idp")[0]]
    ]
    nobody = _verdict(fed, clock, NOBODY, fed.consent(NOBODY, requester="acme", idp="idp")[0])
    before = _verdict(fed, clock, PERSON, first)
    assert before.status == "listed"
    assert before.verdict.credit.score != nobody.verdict.credit.score, "the default costs points"

    with _subject(fed, PERSON, key, clock) as me:
        court_contest, flagged = me.contest(COURT.name, "This judgment was paid in full.")
        assert flagged == 1
        bank_contest, _ = me.contest(BANK.name, "I never had this loan.")
        contests = {c.contest_id: c for c in me.contests()}
    filed = contests[court_contest].filed_at.ToDatetime(tzinfo=UTC)
    due = contests[court_contest].due_at.ToDatetime(tzinfo=UTC)
    assert due == filed + DEADLINE
    assert not contests[court_contest].overdue
    assert _contest_due(fed, COURT.name, "CLK-1") == due, "the node's clock is the registry's"

    # Before the due date the contested records still count, marked disputed.
    disputed = _verdict(fed, clock, PERSON, first)
    assert disputed.status == "listed"
    assert disputed.verdict.blacklist.disputed
    assert disputed.verdict.credit.disputed
    assert disputed.verdict.credit.score == before.verdict.credit.score

    # Two days later: the court's judgment and the bank's default count for nothing.
    clock.offset = 2 * DEADLINE
    _wait_answering(fed, clock)
    overdue = _verdict(fed, clock, PERSON, first)
    assert overdue.status == "clear", "listed only by a record whose contest is overdue"
    assert not overdue.verdict.credit.disputed
    assert overdue.verdict.credit.score == nobody.verdict.credit.score
    assert list(overdue.verdict.credit.reason_codes) == list(nobody.verdict.credit.reason_codes)
    # The screening path (membership filter, batch reads) stops counting it too.
    with fed.requester("acme", clock=clock) as acme:
        screened = {o.row_key: o for o in acme.screen(screening, purpose="credit_assessment")}
    statuses = {key: o.verdict.status for key, o in screened.items() if o.verdict is not None}
    assert statuses == {PERSON: "clear", OTHER: "listed"}, "the other judgment is uncontested"

    # The subject is told, through the real CLI (their own clock agrees with the federation's).
    monkeypatch.setattr(
        "credence.cli.me.SubjectClient", functools.partial(SubjectClient, clock=clock)
    )
    me_dir = tmp_path / "me"
    me_dir.mkdir()
    save_signing_key(me_dir / "me.key", key)
    (me_dir / "me.binding.jwt").write_text(binding)
    me_args = ("--key", me_dir / "me.key", "--binding", me_dir / "me.binding.jwt",
               "--federation", fed.federation_file("idp"))  # fmt: skip
    shown = " ".join(_cli(capsys, "me", "contests", *me_args).split())  # unwrapped
    assert f"OVERDUE: the agency had until {due:%Y-%m-%d %H:%M} UTC" in shown
    assert "until it answers, the record does not count" in shown
    rows = {row["contest_id"]: row for row in map(json.loads, _cli(
        capsys, "me", "contests", *me_args, "--json").splitlines())}  # fmt: skip
    assert rows[court_contest]["overdue"] is True
    assert rows[bank_contest]["overdue"] is True
    # Each agency's sealed answer says when the record's contest fell due.
    held = " ".join(_cli(capsys, "me", "records", *me_args).split())
    assert f"the agency's answer is due by {due:%Y-%m-%d %H:%M} UTC" in held

    # The agency is told: its disputes list, and one warning per contest in its log.
    monkeypatch.setattr("agency_node.cli.utc_now", clock)
    listed = _cli(capsys, "node", "disputes", "list", "--dir", fed.node_dir(COURT.name))
    assert court_contest in listed
    assert "OVERDUE: its records do not count until you resolve it" in listed
    (row,) = [r for r in json.loads(_cli(capsys, "node", "disputes", "list", "--dir",
              fed.node_dir(COURT.name), "--json")) if r["contest_id"] == court_contest]  # fmt: skip
    assert (row["overdue"], row["age_days"], row["due_at"]) == (
        True, 2, due.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="agency_node.disputes")
    fed.nodes[COURT.name].housekeeping.run_once()
    fed.nodes[COURT.name].housekeeping.run_once()
    warned = [r.getMessage() for r in caplog.records if court_contest in r.getMessage()]
    assert len(warned) == 1, "once per newly overdue contest"
    assert f"due by {due:%Y-%m-%dT%H:%M:%S}Z" in warned[0]
    assert fed.subject(PERSON).hex() not in caplog.text

    # The operator is told: the console's contests page and the metrics, by age, no ids.
    with admin_console(fed, admin_token(fed)) as console:
        page = console.get("/contests")
        scraped = console.get("/metrics").text
    assert page.status_code == 200
    assert "<strong>overdue</strong>" in page.text
    assert f"{due:%Y-%m-%d}" in page.text
    assert "2 d ago" in page.text
    assert court_contest not in page.text
    assert fed.subject(PERSON).hex() not in page.text
    assert re.search(r'credence_registry_open_contests\{age="0-7d"\} [1-9]', scraped)
    assert re.search(r"credence_registry_overdue_contests [1-9]", scraped)
    assert court_contest not in scraped
    assert fed.subject(PERSON).hex() not in scraped
    node_metrics = fed.nodes[BANK.name].metrics
    assert node_metrics is not None
    scraped_node = httpx.get(node_metrics.listener.url, timeout=30).text
    assert 'credence_node_open_contests{age="0-7d"} 1.0' in scraped_node
    assert "credence_node_overdue_contests 1.0" in scraped_node
    assert bank_contest not in scraped_node

    # Resolved: an upheld judgment counts again; a removed default is gone.
    run("node", "disputes", "resolve", "--dir", fed.node_dir(COURT.name), court_contest,
        "--outcome", "upheld", "--note", "the judgment stands")  # fmt: skip
    assert _contest_due(fed, COURT.name, "CLK-1") is None
    upheld = _verdict(fed, clock, PERSON, second)
    assert upheld.status == "listed"
    assert not upheld.verdict.blacklist.disputed
    run("node", "disputes", "resolve", "--dir", fed.node_dir(BANK.name), bank_contest,
        "--outcome", "removed", "--note", "not this person's loan")  # fmt: skip
    assert not _record_exists(fed, BANK.name, "CLK-3")
    removed = _verdict(fed, clock, PERSON, second)
    # The judgment scores again; the default's points are gone for good.
    assert removed.verdict.credit.score == upheld.verdict.credit.score
    assert removed.verdict.credit.score > before.verdict.credit.score
    assert not removed.verdict.credit.disputed
    with _subject(fed, PERSON, key, clock) as me:
        states = {c.contest_id: (c.state, c.overdue) for c in me.contests()}
    assert states[court_contest] == ("upheld", False)
    assert states[bank_contest] == ("removed", False)


def test_the_subject_cannot_move_the_deadline_and_a_reimport_keeps_it(
    fed: InProcessFederation, clock: FederationClock
) -> None:
    _, _, key, _ = fed.consent(OTHER, requester="acme", idp="idp")
    # A proof signed two days in the past: refused, nothing filed, nothing flagged.
    stale = FederationClock()
    stale.offset = clock.offset - 2 * DEADLINE
    with _subject(fed, OTHER, key, stale) as me, pytest.raises(CredenceError):
        me.contest(COURT.name, "filed long ago, so it is overdue already")
    assert _contest_due(fed, COURT.name, "CLK-2") is None
    with _subject(fed, OTHER, key, clock) as me:
        assert me.contests() == []

    # A proof signed a minute ago (still valid): the clock runs from the
    # registry's filing time, not from anything the subject signed.
    early = FederationClock()
    early.offset = clock.offset - timedelta(minutes=1)
    started = clock()
    with _subject(fed, OTHER, key, early) as me:
        contest_id, _ = me.contest(COURT.name, "not my judgment")
        (contest,) = me.contests()
    assert contest.contest_id == contest_id
    due = contest.due_at.ToDatetime(tzinfo=UTC)
    assert due >= started + DEADLINE
    assert _contest_due(fed, COURT.name, "CLK-2") == due

    # The agency re-imports the record, changed and no longer flagged in its file:
    # the open contest keeps its due date and the verdict still shows the dispute.
    _import(fed, COURT.name, "CLK-2", OTHER, "court_judgment,judgment_debt", "120.00", "false")
    assert _contest_due(fed, COURT.name, "CLK-2") == due
    token = fed.consent(OTHER, requester="acme", idp="idp")[0]
    after = _verdict(fed, clock, OTHER, token)
    assert after.status == "listed"
    assert after.verdict.blacklist.disputed
