"""Human review of a verdict through the real CLI, against a federation over mutual TLS.

A registry (with its console), a court and a bank run in this process; a
lender looks a person up with their consent. The person asks for review of
that verdict (``credence me review``); both agencies that answered hold the
registry's notice (``credence node reviews``); the operator's queue lists it
(``credence registry reviews list`` and the console's /reviews page over
HTTPS); the operator decides and the person sees the registry-signed outcome
(``credence me reviews``). From the attacker's side: another subject's
verdict, an unknown one, an oversized statement, a second review while one
is open, a replayed or re-aimed proof are refused with nothing stored and
nothing sent; forged notices (another key, another audience, another payload
type) and a caller that is not the registry are refused by the node with
nothing stored; a tampered outcome is refused by the client; a second
decision is refused.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from support.cli_run import run_cli
from support.console import admin_console, admin_token, csrf_of, issue_admin_token
from support.inprocess import FANOUT_DEADLINE_SECONDS, InProcessFederation
from support.registry import init_registry, run

from agency_node.models import ReviewNotice
from central_registry import config as registry_config
from central_registry import review_notices
from central_registry.console.app import MAX_FORM_BYTES
from central_registry.keyring import load_keys
from central_registry.models import AdminAction, LogEntry, Review, VerdictRecord
from central_registry.server import RegistryThread
from credence import payloads
from credence.client.subject import SubjectClient
from credence.dev import synthetic
from credence.envelope import sign
from credence.errors import ClaimMismatch, FailedPrecondition, VerificationError
from credence.grants.subject_proofs import sign_subject_proof
from credence.keys import SigningKey, save_signing_key
from credence.rpc.tls import channel_credentials
from credence.statements import MAX_STATEMENT
from credence.storage import session_factory
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2, registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]
LENDER = "lender"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessFederation]:
    root = tmp_path_factory.mktemp("reviews")
    registry_dir = init_registry(
        root / "registry",
        {"console_listen": "127.0.0.1:0", "fanout_deadline_seconds": FANOUT_DEADLINE_SECONDS},
    )
    federation = InProcessFederation(root, RegistryThread(registry_dir))
    try:
        federation.enrol_member("idp", "company", "--identity-verifier")
        federation.enrol_member(LENDER, "company")
        federation.add_agency(COURT)
        federation.add_agency(BANK)
        issue_admin_token(federation)
        yield federation
    finally:
        federation.stop()


@dataclass
class Person:
    identifier: str
    ref: str
    consent: str
    key: SigningKey
    args: list[str]


def _listed_people(fed: InProcessFederation) -> list[str]:
    """People the court lists (so both its and the bank's answers count)."""
    with (fed.node_dir(COURT.name) / "records.csv").open(newline="") as rows:
        return sorted(
            {
                row["identifier"]
                for row in csv.DictReader(rows)
                if not row["identifier"].startswith("reg:")
            }
        )


@pytest.fixture(scope="module")
def people(fed: InProcessFederation, tmp_path_factory: pytest.TempPathFactory) -> list[Person]:
    federation_file = fed.federation_file(LENDER)
    found = []
    for index, identifier in enumerate(_listed_people(fed)[:2]):
        consent, _, key, binding = fed.consent(identifier, requester=LENDER, idp="idp")
        directory = tmp_path_factory.mktemp(f"person{index}")
        save_signing_key(directory / "me.key", key)
        (directory / "me.binding.jwt").write_text(binding)
        args = ["--key", str(directory / "me.key"), "--binding", str(directory / "me.binding.jwt"),
                "--federation", str(federation_file)]  # fmt: skip
        found.append(Person(identifier, fed.subject(identifier).hex(), consent, key, args))
    return found


def _verdict(fed: InProcessFederation, person: Person) -> registry_pb2.Verdict:
    return fed.credit_verdict(person.identifier, requester=LENDER, consent=person.consent).verdict


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _registry_counts(fed: InProcessFederation) -> tuple[int, int]:
    """(reviews kept, log entries) at the registry."""
    with session_factory(fed.registry.running.engine)() as session:
        reviews = session.scalar(select(func.count()).select_from(Review)) or 0
        entries = session.scalar(select(func.count()).select_from(LogEntry)) or 0
    return int(reviews), int(entries)


def _notices(fed: InProcessFederation, agency: str) -> list[ReviewNotice]:
    with fed.node_session(agency) as session:
        return list(session.scalars(select(ReviewNotice)))


def test_a_subject_asks_for_review_the_agencies_and_operator_see_it_and_the_outcome_comes_back(
    fed: InProcessFederation,
    people: list[Person],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    person = people[0]
    verdict = _verdict(fed, person)

    # The subject finds the verdict among their lookups and asks for review.
    code, out, _ = run_cli(capsys, "me", "lookups", *person.args, "--json")
    assert code == 0
    assert verdict.verdict_id in {row.get("verdict_id") for row in _json_lines(out)}
    statement = "The court judgment was paid in full in March; please look again."
    code, out, err = run_cli(capsys, "me", "review", *person.args, verdict.verdict_id,
                          "--statement", statement)  # fmt: skip
    assert code == 0, err
    found = re.search(r"review ([0-9a-f]{32}) of verdict", out)
    assert found, out
    review_id = found.group(1)
    assert f"of verdict {verdict.verdict_id} asked for" in out
    assert f"agencies told: {BANK.name}, {COURT.name}" in out

    # Each agency that answered holds the registry's notice, its own answer found.
    for agency in (COURT.name, BANK.name):
        code, out, _ = run_cli(capsys, "node", "reviews", "--dir", fed.node_dir(agency), "--json")
        assert code == 0
        (row,) = [r for r in _json_lines(out) if r["review_id"] == review_id]
        assert row["verdict_id"] == verdict.verdict_id
        assert row["query_id"] == verdict.query_id
        assert row["answered_query"] is True
        assert row["statement"] == statement
    code, out, _ = run_cli(capsys, "node", "reviews", "--dir", fed.node_dir(COURT.name))
    assert f"{review_id}  verdict {verdict.verdict_id}" in out
    assert "answered here" in out
    # One line per node and one at the registry, with ids only: no subject, no statement.
    lines = [r.getMessage() for r in caplog.records if review_id in r.getMessage()]
    noted = [r for r in caplog.records if r.name == "agency_node.review_notices"]
    assert len([r for r in noted if review_id in r.getMessage()]) == 2
    assert any(f"of verdict {verdict.verdict_id} (query" in line for line in lines)
    for line in lines:
        assert person.ref not in line
        assert "paid in full" not in line

    # The operator's queue: the command line and the console.
    code, out, _ = run_cli(
        capsys, "registry", "reviews", "list", "--dir", fed.registry_dir, "--json"
    )
    assert code == 0
    (queued,) = [r for r in _json_lines(out) if r["review_id"] == review_id]
    assert queued["verdict_id"] == verdict.verdict_id
    assert queued["agencies_told"] == [BANK.name, COURT.name]
    assert queued["statement"] == statement
    with admin_console(fed, admin_token(fed)) as console:
        page = console.get("/reviews")
        assert page.status_code == 200
        assert review_id in page.text
        assert statement in page.text
        assert person.ref not in page.text  # the queue names no subject
        decided = console.post("/reviews/decide", data={
            "csrf": csrf_of(page.text), "review_id": review_id, "outcome": "corrected",
            "statement": "The bank's record was out of date; it is corrected.",
        })  # fmt: skip
        assert decided.status_code == 303
        after = console.get(decided.headers["location"])
        assert f"Review {review_id} corrected" in after.text
        assert f'id="review-{review_id}"' not in after.text
        # A second decision, from the console: refused, and says why.
        again = console.post("/reviews/decide", data={
            "csrf": csrf_of(after.text), "review_id": review_id, "outcome": "upheld",
            "statement": "no",
        })  # fmt: skip
        assert again.status_code == 409
        assert "decided already (corrected by alice)" in again.text
    with session_factory(fed.registry.running.engine)() as session:
        logged = [
            (a.admin, a.action, a.outcome)
            for a in session.scalars(select(AdminAction).where(AdminAction.action.like("review%")))
        ]
    assert ("alice", "review corrected", f"ok: review {review_id}") in logged
    assert any(outcome.startswith(f"refused: review {review_id}") for _, _, outcome in logged)

    # The subject sees the registry-signed outcome.
    code, out, _ = run_cli(capsys, "me", "reviews", *person.args, "--json")
    assert code == 0
    (mine,) = [r for r in _json_lines(out) if r["review_id"] == review_id]
    assert mine["state"] == "corrected"
    assert mine["outcome"]["reviewer"] == "alice"
    assert mine["outcome"]["statement"] == "The bank's record was out of date; it is corrected."
    code, out, _ = run_cli(capsys, "me", "reviews", *person.args)
    assert "corrected on " in out
    assert "by alice: The bank's record was out of date" in out

    # Deciding twice from the command line is refused too.
    code, _, err = run_cli(capsys, "registry", "reviews", "decide", "--dir", fed.registry_dir,
                        review_id, "--outcome", "upheld", "--statement", "no")  # fmt: skip
    assert code != 0
    assert "decided already" in err

    # The review is in the log, under the subject, with ids only.
    code, out, _ = run_cli(capsys, "me", "lookups", *person.args, "--json")
    (entry,) = [r for r in _json_lines(out) if r.get("query_id") == review_id]
    assert entry["basis"] == "human review"
    assert verdict.verdict_id in entry["outcome"]
    assert "paid in full" not in json.dumps(entry)


def test_the_operator_decides_from_the_command_line_and_the_subject_reads_it_in_words(
    fed: InProcessFederation, people: list[Person], capsys: pytest.CaptureFixture[str]
) -> None:
    person = people[1]
    verdict = _verdict(fed, person)
    with _client(fed, person) as client:
        review = client.request_review(verdict.verdict_id, "Not my debt.")
        (open_view,) = [v for v in client.reviews() if v.record.review_id == review.review_id]
    assert open_view.outcome is None
    assert open_view.record.state == "open"
    code, out, _ = run_cli(capsys, "me", "reviews", *person.args)
    words = " ".join(out.split())  # the text is wrapped to 80 columns
    assert f"review {review.review_id} of verdict {verdict.verdict_id}" in words
    assert f"open since {datetime.now(UTC):%Y-%m-%d}" in words
    assert f"agencies told: {BANK.name}, {COURT.name}" in words
    code, out, err = run_cli(capsys, "registry", "reviews", "decide", "--dir", fed.registry_dir,
                          review.review_id, "--outcome", "upheld", "--statement",
                          "The court's judgment stands.")  # fmt: skip
    assert code == 0, err
    assert f"review {review.review_id} upheld" in out
    with _client(fed, person) as client:
        (view,) = [v for v in client.reviews() if v.record.review_id == review.review_id]
    assert view.outcome is not None
    assert view.outcome.outcome == "upheld"
    assert view.outcome.reviewer.startswith("cli:")
    assert view.outcome.statement == "The court's judgment stands."


def _client(fed: InProcessFederation, person: Person) -> SubjectClient:
    """The person's client, checking what the registry signs against its verified manifest."""
    return SubjectClient(
        fed.public, fed.ca_pem, subject_key=person.key, subject_ref_hex=person.ref,
        registry_id="registry", manifest=fed.registry.running.manifests.current,
    )  # fmt: skip


def _raw_review(
    fed: InProcessFederation, proof: str, verdict_id: str, statement: str = "look again"
) -> grpc.RpcError:
    request = registry_pb2.RequestReviewRequest(
        subject_proof=proof, verdict_id=verdict_id, statement=statement
    )
    with grpc.secure_channel(
        fed.public, grpc.ssl_channel_credentials(root_certificates=fed.ca_pem)
    ) as channel:
        stub: Any = registry_pb2_grpc.SubjectAccessServiceStub(channel)
        try:
            stub.RequestReview(request, timeout=30)
        except grpc.RpcError as refusal:
            return refusal
    raise AssertionError("the registry took the request")


def _proof(person: Person, target: str, *, action: str = "request-review") -> str:
    return sign_subject_proof(
        subject_key=person.key, subject_ref_hex=person.ref, registry_id="registry",
        action=action, now=datetime.now(UTC), target=target,
    )  # fmt: skip


def test_requests_an_attacker_makes_are_refused_with_nothing_stored_and_nothing_sent(
    fed: InProcessFederation, people: list[Person]
) -> None:
    victim, attacker = people
    verdict = _verdict(fed, victim)
    before = _registry_counts(fed), len(_notices(fed, COURT.name)), len(_notices(fed, BANK.name))

    def nothing_changed() -> None:
        after = _registry_counts(fed), len(_notices(fed, COURT.name)), len(_notices(fed, BANK.name))
        assert after == before

    # Another subject's verdict, and one that does not exist: the same words.
    for verdict_id in (verdict.verdict_id, "f" * 32):
        refusal = _raw_review(fed, _proof(attacker, verdict_id), verdict_id)
        assert refusal.code() is grpc.StatusCode.NOT_FOUND
        assert f"no verdict {verdict_id!r} about you" in (refusal.details() or "")
    nothing_changed()
    # An oversized statement, and a proof aimed at another verdict.
    refusal = _raw_review(fed, _proof(victim, verdict.verdict_id), verdict.verdict_id, "x" * 4001)
    assert refusal.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "1..4000 characters" in (refusal.details() or "")
    refusal = _raw_review(fed, _proof(victim, "e" * 32), verdict.verdict_id)
    assert refusal.code() is grpc.StatusCode.PERMISSION_DENIED
    nothing_changed()

    # The genuine request is taken once; its proof replayed, or a second request, is not.
    proof = _proof(victim, verdict.verdict_id)
    with _client(fed, victim) as client:
        request = registry_pb2.RequestReviewRequest(
            subject_proof=proof, verdict_id=verdict.verdict_id, statement="look again"
        )
        with grpc.secure_channel(
            fed.public, grpc.ssl_channel_credentials(root_certificates=fed.ca_pem)
        ) as channel:
            review = (
                registry_pb2_grpc.SubjectAccessServiceStub(channel)
                .RequestReview(request, timeout=30)
                .review
            )
        taken = _registry_counts(fed), len(_notices(fed, COURT.name)), len(_notices(fed, BANK.name))
        replayed = _raw_review(fed, proof, verdict.verdict_id)
        assert replayed.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "was used before" in (replayed.details() or "")
        still_open = f"review {review.review_id} of verdict {verdict.verdict_id} is still open"
        with pytest.raises(FailedPrecondition, match=still_open):
            client.request_review(verdict.verdict_id, "and again")
    assert (
        _registry_counts(fed),
        len(_notices(fed, COURT.name)),
        len(_notices(fed, BANK.name)),
    ) == taken


def _registry_tls(fed: InProcessFederation) -> grpc.ChannelCredentials:
    tls_key, tls_cert, ca_cert = (
        (fed.registry_dir / name).read_bytes() for name in ("tls.key", "tls.crt", "ca.crt")
    )
    return channel_credentials(tls_key, tls_cert, ca_cert)


def _notify(
    fed: InProcessFederation, credentials: grpc.ChannelCredentials, notice: Any
) -> grpc.RpcError | agency_pb2.NotifyReviewResponse:
    court = f"127.0.0.1:{fed.nodes[COURT.name].port}"
    with grpc.secure_channel(court, credentials) as channel:
        stub: Any = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        try:
            response: agency_pb2.NotifyReviewResponse = stub.NotifyReview(
                agency_pb2.NotifyReviewRequest(notice=notice), timeout=30
            )
            return response
        except grpc.RpcError as refusal:
            return refusal


def test_a_node_refuses_forged_notices_and_callers_other_than_the_registry(
    fed: InProcessFederation,
) -> None:
    registry_key = load_keys(registry_config.load_config(fed.registry_dir)).signing
    notice = agency_pb2.ReviewNotice(
        review_id="a" * 32, verdict_id="b" * 32, query_id="c" * 32,
        subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes(32)),
        statement="forged?", agency=COURT.name,
    )  # fmt: skip
    notice.requested_at.FromDatetime(datetime.now(UTC))
    other_audience = agency_pb2.ReviewNotice()
    other_audience.CopyFrom(notice)
    other_audience.agency = BANK.name
    idp_key = fed.members["idp"].credentials.signing_key
    assert idp_key is not None
    forged: dict[str, tuple[Callable[[], Any], grpc.StatusCode, str]] = {
        "another key": (
            lambda: sign(payloads.REVIEW_NOTICE, notice.SerializeToString(), [idp_key]),
            grpc.StatusCode.UNAUTHENTICATED, "",
        ),
        "another audience": (
            lambda: sign(payloads.REVIEW_NOTICE, other_audience.SerializeToString(),
                         [registry_key]),
            grpc.StatusCode.PERMISSION_DENIED, f"is for agency {BANK.name!r}",
        ),
        "another payload type": (
            lambda: sign(payloads.CONTEST, notice.SerializeToString(), [registry_key]),
            grpc.StatusCode.INVALID_ARGUMENT, "expected 'application/vnd.credence.review-notice",
        ),
    }  # fmt: skip
    registry_tls = _registry_tls(fed)
    for what, (envelope, code, reason) in forged.items():
        refusal = _notify(fed, registry_tls, envelope().to_proto())
        assert isinstance(refusal, grpc.RpcError), what
        assert refusal.code() is code, (what, refusal.details())
        assert reason in (refusal.details() or ""), what
    assert [n for n in _notices(fed, COURT.name) if n.review_id == notice.review_id] == []

    genuine = sign(payloads.REVIEW_NOTICE, notice.SerializeToString(), [registry_key]).to_proto()
    idp = fed.members["idp"].credentials
    refusal = _notify(fed, channel_credentials(idp.key_pem, idp.cert_pem, idp.ca_pem), genuine)
    assert isinstance(refusal, grpc.RpcError)
    assert refusal.code() is grpc.StatusCode.PERMISSION_DENIED
    assert [n for n in _notices(fed, COURT.name) if n.review_id == notice.review_id] == []

    # The registry's genuine notice is kept once, however often it comes.
    for _ in range(2):
        taken = _notify(fed, registry_tls, genuine)
        assert isinstance(taken, agency_pb2.NotifyReviewResponse)
        assert taken.answered_query is False  # this node never answered query "ccc..."
    kept = [n for n in _notices(fed, COURT.name) if n.review_id == notice.review_id]
    assert len(kept) == 1


def test_a_tampered_outcome_is_refused_by_the_client(
    fed: InProcessFederation, people: list[Person]
) -> None:
    person = people[0]
    verdict = _verdict(fed, person)
    registry_key = load_keys(registry_config.load_config(fed.registry_dir)).signing
    with _client(fed, person) as client:
        review = client.request_review(verdict.verdict_id, "tamper test")
    run("registry", "reviews", "decide", "--dir", fed.registry_dir, review.review_id,
        "--outcome", "upheld", "--statement", "it stands")  # fmt: skip
    sessions = session_factory(fed.registry.running.engine)
    with sessions() as session:
        stored = session.get(Review, review.review_id)
        assert stored is not None
        assert stored.outcome is not None
        genuine = stored.outcome
    outcome = registry_pb2.ReviewOutcome(
        review_id=review.review_id, verdict_id=verdict.verdict_id,
        subject=common_pb2.SubjectRef(
            type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes.fromhex(person.ref)
        ),
        outcome="upheld", statement="it stands", reviewer="alice",
    )  # fmt: skip
    elsewhere = registry_pb2.ReviewOutcome()
    elsewhere.CopyFrom(outcome)
    elsewhere.review_id = "d" * 32
    tampered = {
        "another key": (sign(payloads.REVIEW_OUTCOME, outcome.SerializeToString(),
                             [SigningKey.generate()]), VerificationError),
        "another payload type": (sign(payloads.CONTEST_RESOLUTION, outcome.SerializeToString(),
                                      [registry_key]), VerificationError),
        "another review's outcome": (sign(payloads.REVIEW_OUTCOME, elsewhere.SerializeToString(),
                                          [registry_key]), ClaimMismatch),
    }  # fmt: skip
    try:
        for what, (envelope, error) in tampered.items():
            with sessions.begin() as session:
                stored = session.get(Review, review.review_id)
                assert stored is not None
                stored.outcome = envelope.to_bytes()
            with _client(fed, person) as client, pytest.raises(error):
                client.reviews()
            assert what
    finally:
        with sessions.begin() as session:
            stored = session.get(Review, review.review_id)
            assert stored is not None
            stored.outcome = genuine
    with _client(fed, person) as client:
        assert any(
            v.outcome is not None and v.outcome.statement == "it stands" for v in client.reviews()
        )


def test_an_agency_not_reached_does_not_fail_the_request_and_is_told_on_a_later_pass(
    fed: InProcessFederation, people: list[Person]
) -> None:
    person = people[1]
    sessions = session_factory(fed.registry.running.engine)
    now = datetime.now(UTC)
    verdict_id, query_id = "7" * 32, "8" * 32
    with sessions.begin() as session:
        # A verdict built from the court and from an agency the registry cannot reach.
        session.add(VerdictRecord(
            verdict_id=verdict_id, query_id=query_id, subject_type=1,
            subject_ref=bytes.fromhex(person.ref), requester=LENDER,
            answered=f"{COURT.name},gone", issued_at=now, expires_at=now + timedelta(days=1),
        ))  # fmt: skip
    with _client(fed, person) as client:
        review = client.request_review(verdict_id, "Who is 'gone'?")
    assert review.state == "open"
    assert list(review.agencies) == [COURT.name]
    assert [n.review_id for n in _notices(fed, COURT.name) if n.query_id == query_id] == [
        review.review_id
    ]
    assert not [n for n in _notices(fed, COURT.name) if n.query_id == query_id and n.answered_query]

    # The agency becomes reachable (here: the verdict's second agency is the bank).
    with sessions.begin() as session:
        record = session.get(VerdictRecord, verdict_id)
        stored = session.get(Review, review.review_id)
        assert record is not None
        assert stored is not None
        assert stored.untold == "gone"
        record.answered, stored.untold = f"{COURT.name},{BANK.name}", BANK.name
    running = fed.registry.running
    key = load_keys(registry_config.load_config(fed.registry_dir)).signing

    def retry(at: datetime) -> int:
        return fed.registry.run(
            review_notices.retry_notices(
                sessions=sessions,
                fanout=running.fanout,
                manifest=running.manifests.current(),
                key=key,
                deadline=FANOUT_DEADLINE_SECONDS,
                now=at,
            )
        )

    assert retry(datetime.now(UTC)) == 0  # the request's own attempt is not raced
    assert retry(datetime.now(UTC) + review_notices.RETRY_AFTER) == 1
    assert [n.review_id for n in _notices(fed, BANK.name) if n.query_id == query_id] == [
        review.review_id
    ]
    with _client(fed, person) as client:
        (view,) = [v for v in client.reviews() if v.record.review_id == review.review_id]
    assert list(view.record.agencies) == [COURT.name, BANK.name]
    # Everyone told: the next pass retries nothing, and the court kept its notice once.
    assert retry(datetime.now(UTC) + review_notices.RETRY_AFTER) == 0
    assert len([n for n in _notices(fed, COURT.name) if n.query_id == query_id]) == 1


def test_the_console_decides_nothing_without_an_admin_session_and_its_csrf_token(
    fed: InProcessFederation, people: list[Person]
) -> None:
    person = people[1]
    sessions = session_factory(fed.registry.running.engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        session.add(VerdictRecord(
            verdict_id="6" * 32, query_id="5" * 32, subject_type=1,
            subject_ref=bytes.fromhex(person.ref), requester=LENDER, answered=COURT.name,
            issued_at=now, expires_at=now + timedelta(days=1),
        ))  # fmt: skip
    with _client(fed, person) as client:
        review = client.request_review("6" * 32, "Console test.")
    decision = {"review_id": review.review_id, "outcome": "corrected", "statement": "forged"}

    with admin_console(fed, None) as anonymous:
        assert anonymous.get("/reviews").headers["location"] == "/login"
        # A pre-login session's CSRF token is no admin's.
        csrf = csrf_of(anonymous.get("/login").text)
        refused = anonymous.post("/reviews/decide", data={**decision, "csrf": csrf})
        assert refused.status_code == 401
    with admin_console(fed, admin_token(fed)) as console:
        for form in ({**decision}, {**decision, "csrf": "x" * 43}):
            refused = console.post("/reviews/decide", data=form)
            assert refused.status_code == 401
            assert "did not come from your console session" in refused.text
        page = console.get("/reviews")
        wrong = console.post("/reviews/decide", data={**decision, "outcome": "removed",
                                                       "csrf": csrf_of(page.text)})  # fmt: skip
        assert wrong.status_code == 400
        assert "outcome must be one of upheld, corrected" in wrong.text
        assert f'id="review-{review.review_id}"' in wrong.text  # still queued
    with sessions() as session:
        stored = session.get(Review, review.review_id)
        assert stored is not None
        assert (stored.state, stored.outcome, stored.reviewer) == ("open", None, "")

    # The queue's size by age is a metric, with no review, verdict or subject in it.
    with admin_console(fed, None) as anonymous:
        scraped = anonymous.get("/metrics").text
    counts = re.findall(r'^credence_registry_open_reviews\{age="under_1d"\} (\S+)$', scraped, re.M)
    assert counts
    assert float(counts[0]) >= 1
    for secret in (review.review_id, "6" * 32, person.ref):
        assert secret not in scraped

    # The longest statement in any script fits the console's form; one more byte
    # of form than the bound is refused unread, and decides nothing.
    longest = "审" * MAX_STATEMENT
    with admin_console(fed, admin_token(fed)) as console:
        csrf = csrf_of(console.get("/reviews").text)
        too_big = console.post("/reviews/decide", data={
            **decision, "csrf": csrf, "statement": longest, "pad": "x" * MAX_FORM_BYTES,
        })  # fmt: skip
        assert too_big.status_code == 400
        with sessions() as session:
            stored = session.get(Review, review.review_id)
            assert stored is not None
            assert stored.state == "open"
        decided = console.post("/reviews/decide", data={**decision, "csrf": csrf,
                                                         "statement": longest})  # fmt: skip
        assert decided.status_code == 303
    with sessions() as session:
        stored = session.get(Review, review.review_id)
        assert stored is not None
        assert (stored.state, stored.outcome_statement) == ("corrected", longest)
