"""Explanations of credit verdicts over a real federation: mutual TLS, real databases, the CLI.

A registry and three agency nodes (a court, a bank, a telecom: the bank and
the telecom both report payment codes, so a code's summed cost can be twice its
scorecard cost) run in this process. Through the real command line:

* a lender's ``credence verify`` for a credit decision prints the registry's
  signed explanation, whose every figure follows from the sum of the
  node-signed answers the verdict carries (re-added here), and saves it;
  ``credence verdict explain`` checks it against the verdict, and refuses a
  tampered or foreign-signed copy;
* an authority's credit lookup under a mandate carries no explanation, but
  the subject reads it with ``credence me explanations`` once the embargo
  passes; ``me lookups`` names each served verdict;
* another subject's proof lists none of them; the rows go at their data life.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from support.cli_run import run_cli
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node.models import Record
from central_registry import lookup_single
from central_registry.models import VerdictRecord
from central_registry.verdict_records import erase_expired_records
from credence import payloads
from credence.blind.layout import for_scorecard
from credence.blind.sums import add, to_signed
from credence.cli import main
from credence.client.pinned import fetch_manifest
from credence.client.subject import SubjectClient
from credence.dev import synthetic
from credence.envelope import Envelope, sign
from credence.errors import ClaimMismatch, CredenceError, WrongPayloadType
from credence.explanations import open_explanation
from credence.grants import tokens
from credence.keys import SigningKey, load_signing_key, save_signing_key
from credence.rpc.tls import channel_credentials
from credence.storage import session_factory
from credence.v1 import agency_pb2, common_pb2, registry_pb2, registry_pb2_grpc
from credence.verdicts import read_verdict_file, readd_verdict

pytestmark = pytest.mark.slow

# Member ids no reason text or scorecard name contains, so a search of the
# explanation's bytes for them finds them only if an agency is named.
PROFILES = tuple(
    dataclasses.replace(synthetic.AGENCY_PROFILES[index], name=name)
    for index, name in ((0, "ag-k1"), (2, "ag-b2"), (5, "ag-t3"))
)
AGENCIES = tuple(profile.name for profile in PROFILES)
BANK, TELECOM = AGENCIES[1], AGENCIES[2]


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    fed = start_federation("explanations")
    fed.enrol_member("idp", "company", "--identity-verifier")
    fed.enrol_member("acme", "company", "--purposes", "counterparty_verification,credit_assessment")
    fed.enrol_member("police", "authority", "--purposes", "legal_mandate,counterparty_verification")
    for profile in PROFILES:
        fed.add_agency(profile)
    # Each node fetches the manifest listing the agencies enrolled after it, so
    # every node can agree masks with every other one from the first lookup.
    for node in fed.nodes.values():
        assert node.refresher is not None
        node.refresher.run_once()
    return fed


@dataclass
class Person:
    identifier: str
    ref: str
    key: SigningKey
    key_file: Path
    binding_file: Path
    consent_file: Path


def _refs(fed: InProcessFederation, agency: str) -> set[bytes]:
    with fed.node_session(agency) as session:
        return {bytes(ref) for ref in session.scalars(select(Record.subject_ref))}


def _person(fed: InProcessFederation, directory: Path, skip: int = 0) -> Person:
    """A person both payment agencies hold records about, with a consent for acme."""
    held = _refs(fed, BANK) & _refs(fed, TELECOM)
    found = [
        synthetic.person(index)
        for index in range(60)
        if fed.subject(synthetic.person(index)).ref in held
    ]
    identifier = found[skip]
    token, _, key, binding = fed.consent(identifier, requester="acme", idp="idp")
    directory.mkdir(parents=True, exist_ok=True)
    key_file, binding_file = directory / "me.key", directory / "me.binding.jwt"
    consent_file = directory / "consent.jwt"
    save_signing_key(key_file, key)
    binding_file.write_text(binding)
    consent_file.write_text(token)
    return Person(
        identifier, fed.subject(identifier).hex(), key, key_file, binding_file, consent_file
    )


@pytest.fixture(scope="module")
def federation_file(federation: InProcessFederation) -> Path:
    return federation.federation_file("acme", as_company=True)


@pytest.fixture
def cli(
    federation_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """``cli(*args)``: run ``credence ARGS`` against the federation; (code, out, err)."""
    monkeypatch.setenv("CREDENCE_FEDERATION", str(federation_file))

    def run(*args: str | Path) -> tuple[int, str, str]:
        return run_cli(capsys, *args)

    return run


def _me(person: Person) -> list[str | Path]:
    return ["--key", person.key_file, "--binding", person.binding_file]


def _manifest(fed: InProcessFederation) -> Any:
    return fetch_manifest(
        f"https://127.0.0.1:{fed.registry.http_port}",
        ca_pem=fed.ca_pem,
        root_keys=fed.root_keys,
        now=datetime.now(UTC),
    )


def _subject_client(fed: InProcessFederation, ref: str, key: SigningKey) -> SubjectClient:
    return SubjectClient(
        fed.public, fed.ca_pem, subject_key=key, subject_ref_hex=ref, registry_id="registry",
        manifest=lambda: _manifest(fed),
    )  # fmt: skip


@pytest.fixture(scope="module")
def lender_lookup(
    federation: InProcessFederation, federation_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Person, str, Path, Path]:
    """acme's credit decision through ``credence verify``: (person, what it printed, files)."""
    directory = tmp_path_factory.mktemp("lender")
    person = _person(federation, directory / "person")
    verdict_file, explanation_file = directory / "verdict.json", directory / "explanation.json"
    args = ["verify", "--federation", federation_file, "--person", person.identifier,
            "--grant", person.consent_file, "--purpose", "credit_assessment",
            "--out", verdict_file, "--explanation-out", explanation_file]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([str(arg) for arg in args]) == 0
    return person, printed.getvalue(), verdict_file, explanation_file


def test_a_credit_decision_comes_with_an_explanation_that_follows_from_the_sum(
    federation: InProcessFederation,
    lender_lookup: tuple[Person, str, Path, Path],
    cli: Any,
) -> None:
    _, printed, verdict_file, explanation_file = lender_lookup
    manifest = _manifest(federation)
    envelope, _ = read_verdict_file(verdict_file.read_text())
    verdict = registry_pb2.Verdict.FromString(envelope.payload)
    signed = Envelope.from_json(explanation_file.read_text())
    explanation = open_explanation(signed, manifest.registry_keys)

    # The verdict re-adds from the node-signed answers it carries; every agency
    # answered, so the masks cancel and the answers' plain sum is theirs.
    readd_verdict(verdict, manifest)
    assert verdict.coverage.answered == verdict.coverage.expected == len(AGENCIES)
    layout = for_scorecard(manifest.scorecard)
    masked = [agency_pb2.Answer.FromString(answer.payload).masked for answer in verdict.answers]
    summed = add(masked)
    assert explanation.points_total == to_signed(summed[layout.points_index])
    assert explanation.score == verdict.credit.score
    assert [r.reason_code for r in explanation.reasons] == list(verdict.credit.reason_codes)
    assert explanation.reasons, "the person was chosen for payment records at two agencies"
    first = layout.points_index + 1
    slot = {code: first + offset for offset, code in enumerate(layout.reason_codes)}
    for reason in explanation.reasons:
        assert reason.points == -to_signed(summed[slot[reason.reason_code]])
        assert reason.score_without == min(
            950, max(350, explanation.base_points + explanation.points_total - reason.points)
        )
    assert (
        explanation.scorecard_url == f"https://127.0.0.1:{federation.registry.http_port}/scorecard"
    )
    # The explanation names no agency: sums only.
    for agency in AGENCIES:
        assert agency.encode() not in signed.payload

    # The lender read it with the verdict, in words.
    assert "explanation (signed by the registry, checked against the verdict):" in printed
    assert f"Your score is {verdict.credit.score}" in printed
    for reason in explanation.reasons:
        assert f"Reason {reason.reason_code} ({reason.characteristic})" in printed

    # The saved pair checks offline, and reads as a notice.
    code, out, err = cli("verdict", "explain", verdict_file, explanation_file, "--refresh")
    assert code == 0, out + err
    assert out.startswith(f"yes: the explanation of verdict {verdict.verdict_id}")
    assert f"Your score is {verdict.credit.score}" in out
    assert "without them the score would be" in out


def test_the_scorecard_page_is_the_manifests_scorecard(federation: InProcessFederation) -> None:
    from credence.client.pinned import https_get  # noqa: PLC0415

    body = https_get(
        f"https://127.0.0.1:{federation.registry.http_port}/scorecard", federation.ca_pem
    )
    assert json.loads(body)["version"] == _manifest(federation).scorecard.version


def _flipped(signed: Envelope) -> Envelope:
    explanation = registry_pb2.Explanation.FromString(signed.payload)
    explanation.reasons[0].score_without += 1
    return Envelope(signed.payload_type, explanation.SerializeToString(), signed.signatures)


def _resigned(signed: Envelope, key: SigningKey, kind: str = payloads.EXPLANATION) -> Envelope:
    explanation = registry_pb2.Explanation.FromString(signed.payload)
    explanation.score += 40
    return sign(kind, explanation.SerializeToString(deterministic=True), [key])


def test_a_tampered_or_foreign_explanation_is_refused_by_the_cli(
    federation: InProcessFederation,
    lender_lookup: tuple[Person, str, Path, Path],
    cli: Any,
    tmp_path: Path,
) -> None:
    _, _, verdict_file, explanation_file = lender_lookup
    signed = Envelope.from_json(explanation_file.read_text())
    registry_key = load_signing_key(federation.registry_dir / "signing.key")
    cases = {
        "edited": (_flipped(signed), "signature"),
        "signed by another key": (_resigned(signed, SigningKey.generate()), "not trusted"),
        "another payload type": (_resigned(signed, registry_key, payloads.VERDICT), "payload type"),
    }  # fmt: skip
    for name, (envelope, reason) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(envelope.to_json())
        code, out, _ = cli("verdict", "explain", verdict_file, path, "--refresh")
        assert code == 1, name
        assert out.startswith("no: "), name
        assert reason in out, (name, out)


def _mandate(fed: InProcessFederation, ref: str, embargo: timedelta) -> agency_pb2.Grant:
    police = fed.members["police"].credentials
    assert police.signing_key is not None
    now = datetime.now(UTC)
    token = tokens.issue_mandate(
        tokens.MandateTerms(
            subject_ref=ref, requester="police", purpose="legal_mandate", scope=("credit",),
            legal_basis=tokens.LegalBasis(statute="Credit Reporting Act s.9", case="2026-77"),
            not_before=now - timedelta(minutes=1), expires_at=now + timedelta(days=1),
            embargo_until=now + embargo,
        ),
        authority_id="police", authority_key=police.signing_key, now=now,
    )  # fmt: skip
    with fed.requester("police") as client:
        client.register_mandate(token)
    return agency_pb2.Grant(mandate_token=token)


def test_a_mandated_credit_verdict_comes_without_one_and_the_subject_reads_it_after_the_embargo(
    federation: InProcessFederation,
    lender_lookup: tuple[Person, str, Path, Path],
    cli: Any,
) -> None:
    person, _, verdict_file, _ = lender_lookup
    lender_verdict = registry_pb2.Verdict.FromString(
        read_verdict_file(verdict_file.read_text())[0].payload
    )
    embargo = timedelta(seconds=3)
    grant = _mandate(federation, person.ref, embargo)
    police = federation.members["police"].credentials
    credentials = channel_credentials(police.key_pem, police.cert_pem, police.ca_pem)
    with grpc.secure_channel(federation.address, credentials) as channel:
        response = registry_pb2_grpc.RegistryServiceStub(channel).RequestVerdict(
            registry_pb2.RequestVerdictRequest(
                subject=common_pb2.SubjectRef(
                    type=common_pb2.SUBJECT_TYPE_PERSON, ref=bytes.fromhex(person.ref)
                ),
                kinds=[common_pb2.VERDICT_KIND_CREDIT],
                purpose=common_pb2.PURPOSE_LEGAL_MANDATE,
                grant=grant,
            ),
            timeout=30,
        )
    embargo_ends = time.monotonic() + embargo.total_seconds()
    mandated = registry_pb2.Verdict.FromString(response.verdict.payload)
    # Not a credit decision: the requester gets no explanation.
    assert not response.HasField("explanation")

    code, out, err = cli("me", "explanations", *_me(person), "--json")
    assert code == 0, err
    shown = [json.loads(line)["verdict_id"] for line in out.splitlines()]
    assert shown == [lender_verdict.verdict_id], "the mandated verdict is embargoed"

    time.sleep(max(0.0, embargo_ends - time.monotonic()) + 0.5)
    code, out, err = cli("me", "explanations", *_me(person), "--json")
    assert code == 0, err
    shown = [json.loads(line)["verdict_id"] for line in out.splitlines()]
    assert shown == [mandated.verdict_id, lender_verdict.verdict_id], "newest first"
    code, out, err = cli("me", "explanations", *_me(person))
    assert code == 0, err
    assert "for a legal mandate" in out
    assert "for a credit decision" in out
    assert f"Your score is {mandated.credit.score}" in out

    code, out, err = cli("me", "lookups", *_me(person), "--json")
    assert code == 0, err
    named = {json.loads(line).get("verdict_id") for line in out.splitlines()}
    assert {mandated.verdict_id, lender_verdict.verdict_id} <= named


def test_another_subjects_proof_lists_none_of_them(
    federation: InProcessFederation,
    lender_lookup: tuple[Person, str, Path, Path],
    tmp_path: Path,
) -> None:
    person, _, _, _ = lender_lookup
    other = _person(federation, tmp_path / "other", skip=1)
    with _subject_client(federation, other.ref, other.key) as client:
        assert client.explanations() == []
    # Their key naming the first person's reference is refused, and lists nothing.
    with (
        _subject_client(federation, person.ref, other.key) as client,
        pytest.raises(CredenceError, match=r"bound|binding|key"),
    ):
        client.explanations()


def test_the_rows_go_at_their_data_life(
    federation: InProcessFederation, lender_lookup: tuple[Person, str, Path, Path]
) -> None:
    person, _, _, _ = lender_lookup
    with _subject_client(federation, person.ref, person.key) as client:
        assert client.explanations()
    sessions = session_factory(federation.registry.running.engine)
    ref = bytes.fromhex(person.ref)
    count = select(func.count()).select_from(VerdictRecord).where(VerdictRecord.subject_ref == ref)
    with sessions() as session:
        assert session.scalar(count)
    # Consents in this federation give a day of data life; past it, the housekeeping erases.
    with sessions.begin() as session:
        assert erase_expired_records(session, datetime.now(UTC) + timedelta(hours=23)) == 0
    with sessions.begin() as session:
        assert erase_expired_records(session, datetime.now(UTC) + timedelta(days=2)) > 0
    with sessions() as session:
        assert session.scalar(count) == 0
    with _subject_client(federation, person.ref, person.key) as client:
        assert client.explanations() == []
        assert all(not record.verdict_id for record in client.lookups())


def test_the_lender_refuses_an_explanation_that_does_not_follow(
    federation: InProcessFederation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = _person(federation, tmp_path / "person", skip=2)
    real = lookup_single._explanation

    def lying(ctx: Any, manifest: Any, aggregated: Any, verdict: Envelope) -> Envelope:
        # Signed by the registry's own key, but ten points more than the sum gives.
        explanation = registry_pb2.Explanation.FromString(
            real(ctx, manifest, aggregated, verdict).payload
        )
        explanation.points_total += 10
        payload = explanation.SerializeToString(deterministic=True)
        return sign(payloads.EXPLANATION, payload, [ctx.keys.signing])

    def mistyped(ctx: Any, manifest: Any, aggregated: Any, verdict: Envelope) -> Envelope:
        signed = real(ctx, manifest, aggregated, verdict)
        return sign(payloads.VERDICT, signed.payload, [ctx.keys.signing])

    grant = agency_pb2.Grant(consent_token=person.consent_file.read_text())
    for forged, error, reason in ((lying, ClaimMismatch, "score"),
                                  (mistyped, WrongPayloadType, "payload type")):  # fmt: skip
        monkeypatch.setattr(lookup_single, "_explanation", forged)
        with federation.requester("acme") as lender, pytest.raises(error, match=reason):
            lender.request_verdict(
                federation.subject(person.identifier),
                kinds=("blacklist", "credit"),
                purpose="credit_assessment",
                grant=grant,
            )
