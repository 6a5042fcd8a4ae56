"""The client SDK against a real registry in this process, over TLS on loopback.

A company enrols with :mod:`credence.client.enrol`, the operator approves it
with the CLI, it collects its certificate, then asks for an organisation's
verdict with :class:`credence.client.requester.Requester` (no agencies: INCOMPLETE).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.registry import init_registry, run

from central_registry import config as registry_config
from central_registry.keyring import RegistryKeys, load_keys
from central_registry.server import RegistryThread
from credence.client.enrol import EnrolmentResult, collect_enrolment, enrol
from credence.client.requester import MemberCredentials, Requester, ScreenRow
from credence.envelope import Envelope
from credence.errors import AlreadyExists, InvalidInput, Unauthenticated
from credence.keys import KeySet, SigningKey, private_key_pem
from credence.pki import generate_tls_key, make_csr
from credence.subjects import PseudonymisationKey, ref_for


@dataclass
class Enrolled:
    data_dir: Path
    address: str  # the public port: enrolment
    members_address: str  # the members' port: lookups
    keys: RegistryKeys
    csr: bytes
    signing_key: SigningKey
    pending: EnrolmentResult
    active: EnrolmentResult
    credentials: MemberCredentials


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enrolled]:
    data_dir = tmp_path_factory.mktemp("registry")
    init_registry(data_dir)
    keys = load_keys(registry_config.load_config(data_dir))
    thread = RegistryThread(data_dir)
    try:
        address = f"127.0.0.1:{thread.public_port}"
        ca_pem = keys.ca.certificate_pem
        tls_key = generate_tls_key()
        signing_key = SigningKey.generate()
        csr = make_csr(tls_key, "acme")
        enrol(
            address,
            ca_pem,
            member_id="acme",
            display_name="Acme Ltd",
            role="company",
            csr_pem=csr,
            signing_key=signing_key,
        )
        pending = collect_enrolment(address, ca_pem, member_id="acme", signing_key=signing_key)
        run("registry", "members", "approve", "--dir", data_dir, "acme")
        active = collect_enrolment(address, ca_pem, member_id="acme", signing_key=signing_key)
        credentials = MemberCredentials(
            "acme", private_key_pem(tls_key), active.certificate_pem, active.ca_pem, signing_key
        )
        yield Enrolled(
            data_dir,
            address,
            f"127.0.0.1:{thread.port}",
            keys,
            csr,
            signing_key,
            pending,
            active,
            credentials,
        )
    finally:
        thread.stop()


def test_enrolment_is_pending_then_active(enrolled: Enrolled) -> None:
    assert (enrolled.pending.state, enrolled.pending.certificate_pem) == ("pending", b"")
    assert enrolled.pending.pseudonymisation_key == b""
    assert enrolled.active.state == "active"
    assert enrolled.active.ca_pem == enrolled.keys.ca.certificate_pem
    assert b"BEGIN CERTIFICATE" in enrolled.active.certificate_pem
    assert len(enrolled.active.pseudonymisation_key) == 32
    assert Envelope.from_bytes(enrolled.active.manifest).payload


def test_enrolment_refusals(enrolled: Enrolled) -> None:
    ca_pem = enrolled.keys.ca.certificate_pem

    def enrol_again(role: str) -> None:
        enrol(
            enrolled.address,
            ca_pem,
            member_id="acme",
            display_name="Acme Ltd",
            role=role,
            csr_pem=enrolled.csr,
            signing_key=enrolled.signing_key,
        )

    with pytest.raises(AlreadyExists):
        enrol_again("company")
    with pytest.raises(InvalidInput, match="role must be one of agency, company, authority"):
        enrol_again("bank")
    with pytest.raises(Unauthenticated):
        collect_enrolment(
            enrolled.address, ca_pem, member_id="acme", signing_key=SigningKey.generate()
        )


def test_request_and_screen_a_verdict(enrolled: Enrolled) -> None:
    pseudonymisation = PseudonymisationKey.from_bytes(enrolled.active.pseudonymisation_key)
    subject = ref_for(pseudonymisation, "reg:CN:CLEAR0001")
    root = KeySet([enrolled.keys.root.public])
    with Requester(enrolled.members_address, enrolled.credentials, root_keys=root) as requester:
        assert requester.manifest().member("acme").is_active
        verified = requester.verify_organisation(subject)
        assert verified.status == "incomplete"
        assert verified.verdict.requester == "acme"
        assert requester.verify(verified.envelope, verified.jws).verdict == verified.verdict
        rows = [ScreenRow(f"r{index}", subject) for index in range(5)]
        outcomes = list(requester.screen(rows, message_size=2))
    assert sorted(outcome.row_key for outcome in outcomes) == [f"r{index}" for index in range(5)]
    assert all(
        outcome.verdict is not None and outcome.verdict.status == "incomplete"
        for outcome in outcomes
    )
