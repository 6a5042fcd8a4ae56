"""The registry end to end: every party in its own process, real mutual TLS on loopback.

One federation (registry, three agency nodes, a company, an authority and an
identity verifier) is started once for the module with ``credence.dev.federation``,
exactly as an operator would start it, and stopped at the end. The test that
kills a node runs last.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from credence.cli import main
from credence.client.pinned import fetch_verified_jwks
from credence.client.requester import MemberCredentials, Requester, ScreenRow
from credence.client.subject import SubjectClient
from credence.dev import federation as dev_federation
from credence.envelope import Envelope
from credence.errors import BadSignature, FailedPrecondition, PermissionDenied
from credence.grants import tokens
from credence.keys import KeySet, load_signing_key
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for
from credence.v1 import agency_pb2

pytestmark = pytest.mark.slow


@dataclass
class Federation:
    directory: Path
    document: dict[str, Any]
    pseudonymisation: PseudonymisationKey
    root_keys: KeySet

    def member(self, role: str) -> MemberCredentials:
        files = self.document[role]
        return MemberCredentials.from_files(
            files["member_id"],
            key=Path(files["key"]),
            cert=Path(files["cert"]),
            ca=Path(self.document["registry"]["ca_cert"]),
            signing_key=Path(files["signing_key"]),
        )

    def requester(self, role: str = "company") -> Requester:
        return Requester(
            self.document["registry"]["address"], self.member(role), root_keys=self.root_keys
        )

    def subject(self, identifier: str) -> SubjectRef:
        return ref_for(self.pseudonymisation, identifier)

    def sample(self, name: str, index: int = 0) -> str:
        value = self.document["samples"][name][index]
        return str(value["id"] if isinstance(value, dict) else value)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    directory = tmp_path_factory.mktemp("federation")
    document = dev_federation.up(directory, agencies=3, subjects=80, seed=11)
    try:
        yield Federation(
            directory,
            document,
            PseudonymisationKey.from_bytes(Path(document["pseudonymisation_key"]).read_bytes()),
            KeySet.from_jwks(json.loads(Path(document["registry"]["root_keys"]).read_text())),
        )
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


def test_clear_listed_disputed_and_expired_organisations(federation: Federation) -> None:
    with federation.requester() as company:
        clear = company.verify_organisation(
            federation.subject(federation.sample("clear_organisation"))
        )
        listed = company.verify_organisation(
            federation.subject(federation.sample("listed_organisation"))
        )
        disputed = company.verify_organisation(federation.subject(federation.sample("disputed")))
        expired = company.verify_organisation(
            federation.subject(federation.sample("expired_organisation"))
        )
    # A failure names the agency that did not answer, and why (the coverage line).
    assert clear.status == "clear", clear.coverage
    # Blacklist status comes from the agencies holding listing kinds: court and tax office.
    assert clear.verdict.coverage.answered == clear.verdict.coverage.expected == 2, clear.coverage
    assert listed.status == "listed", listed.coverage
    assert list(listed.categories) == ["dishonest_debtor"]
    assert disputed.status == "listed", disputed.coverage
    assert disputed.verdict.blacklist.disputed
    assert expired.status == "clear", (
        f"a judgment past rehabilitation never counts ({expired.coverage})"
    )
    assert len(listed.verdict.answer_hashes) == 2


def test_person_credit_with_consent(federation: Federation) -> None:
    person = federation.document["samples"]["person_with_consent"][0]
    grant = agency_pb2.Grant(consent_token=Path(person["consent"]).read_text())
    with federation.requester() as company:
        verified = company.request_verdict(
            federation.subject(person["id"]),
            kinds=("blacklist", "credit"),
            purpose="credit_assessment",
            grant=grant,
        )
    assert verified.score is not None
    assert 350 <= verified.score <= 950
    assert verified.band
    assert len(verified.reason_codes) <= 4
    assert verified.verdict.grant_id == person["grant_id"]


def test_person_without_consent_is_refused(federation: Federation) -> None:
    person = federation.document["samples"]["person_with_consent"][0]["id"]
    with federation.requester() as company, pytest.raises(PermissionDenied, match="person"):
        company.request_verdict(
            federation.subject(person),
            kinds=("blacklist",),
            purpose="counterparty_verification",
            grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis()),
        )


def test_grant_for_another_company_is_refused(federation: Federation) -> None:
    person = federation.document["samples"]["person_with_consent"][1]
    grant = agency_pb2.Grant(consent_token=Path(person["consent"]).read_text())
    # The identity verifier is a company too, but the consent names demo-company.
    with federation.requester("identity_verifier") as other, pytest.raises(PermissionDenied):
        other.request_verdict(
            federation.subject(person["id"]),
            kinds=("credit",),
            purpose="credit_assessment",
            grant=grant,
        )


def test_purpose_the_member_may_not_request(federation: Federation) -> None:
    org = federation.subject(federation.sample("clear_organisation"))
    with (
        federation.requester("authority") as authority,
        pytest.raises(PermissionDenied, match="may not request lookups for credit_assessment"),
    ):
        authority.request_verdict(
            org,
            kinds=("blacklist",),
            purpose="credit_assessment",
            grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis()),
        )


def test_revoked_grant_is_refused(federation: Federation) -> None:
    person = federation.document["samples"]["person_with_consent"][2]
    subject = federation.subject(person["id"])
    registry = federation.document["registry"]
    subject_client = SubjectClient(
        registry["public_address"],
        Path(registry["ca_cert"]).read_bytes(),
        subject_key=load_signing_key(Path(person["subject_key"])),
        subject_ref_hex=subject.hex(),
        registry_id=registry["member_id"],
    )
    subject_client.revoke(person["grant_id"])
    grant = agency_pb2.Grant(consent_token=Path(person["consent"]).read_text())
    with federation.requester() as company, pytest.raises(PermissionDenied, match="revoked"):
        company.request_verdict(
            subject, kinds=("credit",), purpose="credit_assessment", grant=grant
        )
    lookups = subject_client.lookups()
    assert any(record.outcome.startswith("refused") for record in lookups)


def test_expired_grant_is_refused(federation: Federation) -> None:
    person = federation.document["samples"]["person_with_consent"][0]
    subject = federation.subject(person["id"])
    idp = federation.member("identity_verifier")
    assert idp.signing_key is not None
    now = datetime.now(UTC)
    subject_key = load_signing_key(Path(person["subject_key"]))
    request = tokens.sign_consent_request(
        tokens.ConsentTerms(
            subject_ref=subject.hex(),
            requester="demo-company",
            purpose="credit_assessment",
            scope=("credit",),
            not_before=now - timedelta(seconds=5),
            expires_at=now + timedelta(seconds=2),
            max_uses=1,
            data_life=timedelta(days=1),
        ),
        subject_key,
        now,
    )
    binding = Path(person["binding"]).read_text()
    with federation.requester() as company:
        token, _ = company.issue_consent(request, binding)
        grant = agency_pb2.Grant(consent_token=token)
        # The token allows 60 s of clock skew: only the registry's own expiry of
        # the grant (stored, checked without skew) refuses it this soon.
        time.sleep(2.5)
        with pytest.raises(FailedPrecondition, match="expired"):
            company.request_verdict(
                subject, kinds=("credit",), purpose="credit_assessment", grant=grant
            )


def test_flipped_byte_fails_verification(federation: Federation) -> None:
    with federation.requester() as company:
        verified = company.verify_organisation(
            federation.subject(federation.sample("clear_organisation"))
        )
        payload = bytearray(verified.envelope.payload)
        payload[len(payload) // 2] ^= 0x01
        tampered = Envelope(
            verified.envelope.payload_type, bytes(payload), verified.envelope.signatures
        )
        with pytest.raises(BadSignature):
            company.verify(tampered)


def test_jws_credential_verifies_with_pyjwt_against_the_jwks(federation: Federation) -> None:
    with federation.requester() as company:
        verified = company.verify_organisation(
            federation.subject(federation.sample("listed_organisation"))
        )
    # The pinned path: the manifest over TLS, verified under the pinned root
    # keys, then the JWKS accepted only as the manifest's registry keys.
    registry = federation.document["registry"]
    jwks = fetch_verified_jwks(
        registry["http_url"],
        ca_pem=Path(registry["ca_cert"]).read_bytes(),
        root_keys=federation.root_keys,
        now=datetime.now(UTC),
    ).to_jwks()
    header = jwt.get_unverified_header(verified.jws)
    key = jwt.PyJWK.from_dict(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(
        verified.jws,
        key=key.key,
        algorithms=["EdDSA"],
        audience="demo-company",
        issuer="registry",
    )
    assert claims["blacklist"]["status"] == "listed"
    tampered = verified.jws[:-4] + ("AAAA" if not verified.jws.endswith("AAAA") else "BBBB")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered, key=key.key, algorithms=["EdDSA"], audience="demo-company")


def test_batch_of_ten_thousand_organisations(federation: Federation) -> None:
    rows = [
        ScreenRow(f"row-{index}", federation.subject(f"reg:CN:BATCH{index:06d}"))
        for index in range(10_000)
    ]
    with federation.requester() as company:
        outcomes = list(company.screen(rows, message_size=1000))
    assert len(outcomes) == 10_000
    assert {outcome.row_key for outcome in outcomes} == {row.row_key for row in rows}
    assert all(outcome.verdict is not None for outcome in outcomes)
    assert {outcome.verdict.status for outcome in outcomes if outcome.verdict} == {"clear"}


def test_screened_persons_on_the_public_register_are_refused_row_by_row(
    federation: Federation,
) -> None:
    # Organisations and persons interleaved: a person after organisations have
    # passed the public-register check is refused as surely as one before.
    person = federation.subject(federation.document["samples"]["person_with_consent"][0]["id"])
    rows = []
    for index in range(12):
        if index % 4 == 3:
            rows.append(ScreenRow(f"person-{index}", person))
        else:
            rows.append(ScreenRow(f"org-{index}", federation.subject(f"reg:CN:MIX{index:06d}")))
    with federation.requester() as company:
        outcomes = {outcome.row_key: outcome for outcome in company.screen(rows, message_size=12)}
    assert len(outcomes) == len(rows)
    for key, outcome in outcomes.items():
        if key.startswith("person"):
            assert outcome.verdict is None
            assert outcome.refusal is not None
            assert outcome.refusal[0] == grpc.StatusCode.PERMISSION_DENIED.value[0]
            assert "person is never looked up on the public-register basis" in outcome.refusal[1]
        else:
            assert outcome.verdict is not None
            assert outcome.verdict.status == "clear"


def test_suspended_member_is_refused_and_reinstated(federation: Federation) -> None:
    registry_dir = federation.document["registry"]["data_dir"]
    org = federation.subject(federation.sample("clear_organisation"))
    with federation.requester("authority") as authority:
        authority.verify_organisation(org)
        assert (
            main(["registry", "members", "suspend", "--dir", registry_dir, "demo-authority"]) == 0
        )
        try:
            time.sleep(1.0)  # the registry checks for a new manifest every 0.5 s
            with pytest.raises(PermissionDenied, match="suspended"):
                authority.verify_organisation(org)
        finally:
            assert (
                main(["registry", "members", "reinstate", "--dir", registry_dir, "demo-authority"])
                == 0
            )


def test_killed_node_yields_incomplete_within_the_deadline(federation: Federation) -> None:
    processes = json.loads((federation.directory / dev_federation.PROCESSES_FILE).read_text())
    tax = next(entry for entry in processes if entry["name"] == "tax-office")
    os.kill(int(tax["pid"]), signal.SIGKILL)
    org = federation.subject(federation.sample("clear_organisation"))
    with federation.requester() as company:
        started = time.monotonic()
        verdict = company.verify_organisation(org)
        elapsed = time.monotonic() - started
        listed = company.verify_organisation(
            federation.subject(federation.sample("listed_organisation"))
        )
    assert verdict.status == "incomplete"
    states = {agency.member_id: agency.state for agency in verdict.verdict.coverage.agencies}
    assert states["tax-office"] != 1
    assert elapsed < 10, "a dead node must not hang the verdict"
    assert listed.status == "listed", "other lookups go on; a listing stays a listing"
