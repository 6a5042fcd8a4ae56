"""Sealed subject access over real sockets, mutual TLS and real databases.

A registry and two agency nodes run in this process, so the test can look at
everything the registry handles: ``credence me records`` shows the subject
every agency's records, while the registry's database, its log output and the
messages it relays hold only ciphertext. From the attacker's side: another key
cannot open an answer, a relabelled answer does not open, and a replayed,
forged, expired or re-aimed subject proof is refused with nothing relayed, as
are oversized requests and a registry that swaps in its own key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node.models import Record
from agency_node.subject_records import RecordDesk, amount_band
from central_registry.record_access import RecordAccess, RecordAccessLimits
from credence import sealed_records
from credence.cli import main
from credence.dev import synthetic
from credence.envelope import Envelope
from credence.errors import VerificationError
from credence.grants import tokens
from credence.grants.subject_proofs import sign_subject_proof
from credence.jws import parse_compact, parse_json_object
from credence.keys import SigningKey, save_signing_key
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2_grpc, registry_pb2_grpc, subject_records_pb2

pytestmark = pytest.mark.slow

COURT, BANK = synthetic.AGENCY_PROFILES[0], synthetic.AGENCY_PROFILES[2]
AGENCIES = (COURT.name, BANK.name)


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    fed = start_federation("sealed")
    fed.enrol_member("idp", "company", "--identity-verifier")
    fed.add_agency(COURT)
    fed.add_agency(BANK)
    return fed


@dataclass
class Subject:
    ref: str
    key: SigningKey
    binding: str
    binding_file: Path
    key_file: Path


def _records(fed: InProcessFederation, agency: str) -> list[Record]:
    with fed.node_session(agency) as session:
        return list(session.scalars(select(Record)))


def _held_by_every_agency(fed: InProcessFederation, skip: int = 0) -> str:
    """A subject reference (hex) every agency holds records about."""
    held = [{bytes(r.subject_ref) for r in _records(fed, agency)} for agency in AGENCIES]
    common = sorted(set.intersection(*held))
    assert len(common) > skip, "the synthetic data holds too few subjects known to both agencies"
    return common[skip].hex()


def _bind(fed: InProcessFederation, ref: str, directory: Path) -> Subject:
    key = SigningKey.generate()
    idp_key = fed.members["idp"].credentials.signing_key
    assert idp_key is not None
    binding = tokens.issue_binding(
        subject_ref_hex=ref, subject_key=key.public, member_id="idp", member_key=idp_key,
        now=datetime.now(UTC), validity=timedelta(days=30),
    )  # fmt: skip
    with fed.requester("idp") as client:
        client.register_binding(binding)
    directory.mkdir(parents=True, exist_ok=True)
    binding_file, key_file = directory / "me.binding.jwt", directory / "me.key"
    binding_file.write_text(binding)
    save_signing_key(key_file, key)
    return Subject(ref, key, binding, binding_file, key_file)


@dataclass
class Seen:
    """What the registry's relay handled, and how often each node was asked."""

    messages: list[bytes]
    node_calls: list[str]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Seen:
    seen = Seen([], [])
    relay, desk = RecordAccess.records, RecordDesk.records

    async def spy_relay(
        self: RecordAccess, request: subject_records_pb2.ListMyRecordsRequest
    ) -> subject_records_pb2.ListMyRecordsResponse:
        seen.messages.append(request.SerializeToString())
        response = await relay(self, request)
        seen.messages.append(response.SerializeToString())
        return response

    def spy_desk(self: RecordDesk, request: subject_records_pb2.ListSubjectRecordsRequest) -> Any:
        seen.node_calls.append(self._member_id)
        return desk(self, request)

    monkeypatch.setattr(RecordAccess, "records", spy_relay)
    monkeypatch.setattr(RecordDesk, "records", spy_desk)
    return seen


def _cleartext_marks(fed: InProcessFederation, ref: str) -> list[bytes]:
    """Byte strings only a record's cleartext holds: each held record's encoding, bands, advice."""
    marks: list[bytes] = [b"If a record is wrong, contest it"]
    for agency in AGENCIES:
        for record in _records(fed, agency):
            if record.subject_ref.hex() != ref:
                continue
            held = subject_records_pb2.HeldRecord(
                kind=record.kind,
                category=record.category,
                status=record.status,
                disputed=record.disputed,
            )
            held.occurred_at.FromDatetime(record.occurred_at)
            held.expires_at.FromDatetime(record.expires_at)
            marks.append(held.SerializeToString()[:24])
            if record.amount_minor is not None:
                marks.append(amount_band(record.amount_minor, record.currency).encode())
    return marks


def _registry_bytes(fed: InProcessFederation) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(fed.registry_dir.glob("registry.db*")))


def test_the_subject_reads_every_agencys_records_and_the_registry_sees_only_ciphertext(
    federation: InProcessFederation,
    seen: Seen,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation), tmp_path)
    federation_file = federation.federation_file("idp")
    caplog.set_level(logging.DEBUG)
    args = ["me", "records", "--key", str(subject.key_file), "--binding",
            str(subject.binding_file), "--federation", str(federation_file)]  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    shown_json = capsys.readouterr().out
    rows = {row["agency"]: row for row in map(json.loads, shown_json.splitlines())}

    # The subject sees every agency's records of them, as each node holds them.
    assert sorted(rows) == sorted(AGENCIES)
    for agency in AGENCIES:
        held = [r for r in _records(federation, agency) if r.subject_ref.hex() == subject.ref]
        shown = rows[agency]["records"]
        assert rows[agency]["total"] == len(held) == len(shown)
        assert sorted((r["kind"], r["category"], r["status"]) for r in shown) == sorted(
            (r.kind, r.category, r.status) for r in held
        )
        assert {r.get("amount_band", "") for r in shown} == {
            amount_band(r.amount_minor, r.currency) for r in held
        }
        assert f"--agency {agency}" in rows[agency]["how_to_contest"]
    assert sorted(seen.node_calls) == sorted(AGENCIES)

    # The registry relayed, stored and logged ciphertext only.
    marks = _cleartext_marks(federation, subject.ref)
    handled = b"".join(seen.messages)
    stored = _registry_bytes(federation)
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("central_registry")
    )
    assert len(seen.messages) == 2
    # The marks are the records' cleartext: the subject's own output holds the readable ones.
    readable = [mark.decode() for mark in marks if mark.isascii() and mark[:1].isalnum()]
    assert len(readable) >= 2
    assert all(mark in shown_json for mark in readable)
    for mark in marks:
        assert mark not in handled, mark
        assert mark not in stored, mark
        assert mark.decode(errors="replace") not in logged, mark
    assert any(
        "sealed records from 2 of 2 agencies relayed" in r.getMessage() for r in caplog.records
    )

    # The same command in words: one block per agency.
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in (f"{COURT.name}: ", f"{BANK.name}: ", "record(s)", "credence me contest --agency"):
        assert line in out


def _ask(
    fed: InProcessFederation, subject: Subject, *, recipient: sealed_records.RecipientKey,
    proof: str | None = None, binding: str | None = None, key: bytes | None = None,
) -> subject_records_pb2.ListMyRecordsResponse:  # fmt: skip
    proof = proof or sign_subject_proof(
        subject_key=subject.key, subject_ref_hex=subject.ref, registry_id="registry",
        action="list-records", now=datetime.now(UTC), target=recipient.target,
    )  # fmt: skip
    request = subject_records_pb2.ListMyRecordsRequest(
        subject_proof=proof,
        binding=subject.binding if binding is None else binding,
        recipient_key=recipient.public_bytes if key is None else key,
    )
    with grpc.secure_channel(
        fed.public, grpc.ssl_channel_credentials(root_certificates=fed.ca_pem)
    ) as channel:
        stub: Any = registry_pb2_grpc.SubjectAccessServiceStub(channel)
        return stub.ListMyRecords(request, timeout=30)  # type: ignore[no-any-return]


def _refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def _request_id(proof: str) -> str:
    return str(parse_json_object(parse_compact(proof).payload, "proof")["jti"])


def test_another_key_cannot_open_an_answer_nor_a_relabelled_one(
    federation: InProcessFederation, tmp_path: Path
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation, skip=1), tmp_path)
    recipient = sealed_records.RecipientKey.generate()
    proof = sign_subject_proof(
        subject_key=subject.key, subject_ref_hex=subject.ref, registry_id="registry",
        action="list-records", now=datetime.now(UTC), target=recipient.target,
    )  # fmt: skip
    response = _ask(federation, subject, recipient=recipient, proof=proof)
    request_id = _request_id(proof)
    manifest = federation.registry.running.manifests.current()
    sealed = {a.agency: Envelope.from_proto(a.sealed) for a in response.agencies}
    court_keys = manifest.member_keys(COURT.name)
    opened = recipient.open(
        sealed[COURT.name], agency_keys=court_keys, agency=COURT.name, request_id=request_id
    )
    assert opened.records

    # Another key: refused by its hash, and the ciphertext itself does not open.
    other = sealed_records.RecipientKey.generate()
    with pytest.raises(VerificationError):
        other.open(sealed[COURT.name], agency_keys=court_keys, agency=COURT.name,
                   request_id=request_id)  # fmt: skip
    body = subject_records_pb2.SealedRecords.FromString(sealed[COURT.name].payload)
    with pytest.raises(InvalidTag):
        sealed_records.SUITE.decrypt(
            body.ciphertext, other._private, info=sealed_records.seal_info(COURT.name, request_id)
        )
    # The right key, but the court's ciphertext passed off as the bank's: it does not open.
    with pytest.raises(InvalidTag):
        sealed_records.SUITE.decrypt(
            body.ciphertext,
            recipient._private,
            info=sealed_records.seal_info(BANK.name, request_id),
        )
    # ... and the bank's signature check refuses the court's envelope first.
    with pytest.raises(VerificationError):
        recipient.open(sealed[COURT.name], agency_keys=manifest.member_keys(BANK.name),
                       agency=BANK.name, request_id=request_id)  # fmt: skip


def test_replayed_forged_expired_or_reaimed_proofs_are_refused_and_nothing_is_relayed(
    federation: InProcessFederation, seen: Seen, tmp_path: Path
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation, skip=2), tmp_path)
    recipient = sealed_records.RecipientKey.generate()
    now = datetime.now(UTC)

    def proof(key: SigningKey = subject.key, **changes: Any) -> str:
        terms: dict[str, Any] = {
            "subject_key": key, "subject_ref_hex": subject.ref, "registry_id": "registry",
            "action": "list-records", "now": now, "target": recipient.target,
        }  # fmt: skip
        return sign_subject_proof(**{**terms, **changes})

    used = proof()
    _ask(federation, subject, recipient=recipient, proof=used)
    assert len(seen.node_calls) == 2
    seen.node_calls.clear()
    status = grpc.StatusCode
    attempts = {
        "replayed": (used, status.ALREADY_EXISTS, "was used before"),
        "forged (a key nobody bound)": (proof(SigningKey.generate()), status.UNAUTHENTICATED, ""),
        "expired": (proof(now=now - timedelta(minutes=10)), status.FAILED_PRECONDITION, "expired"),
        "for another action": (proof(action="list-lookups"), status.PERMISSION_DENIED, "action"),
        "for another registry": (proof(registry_id="elsewhere"), status.PERMISSION_DENIED, ""),
        "naming another key": (
            proof(target=sealed_records.RecipientKey.generate().target),
            status.PERMISSION_DENIED,
            "another recipient key",
        ),
    }
    for what, (token, code, words) in attempts.items():
        refusal = _refused(lambda t=token: _ask(federation, subject, recipient=recipient, proof=t))
        assert refusal.code() is code, (what, refusal.code(), refusal.details())
        assert words in (refusal.details() or ""), (what, refusal.details())
    assert seen.node_calls == [], "a refused request reached no node"


def test_oversized_requests_are_refused_before_any_node_is_asked(
    federation: InProcessFederation, seen: Seen, tmp_path: Path
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation, skip=3), tmp_path)
    recipient = sealed_records.RecipientKey.generate()
    too_long_key = _refused(
        lambda: _ask(federation, subject, recipient=recipient, key=recipient.public_bytes + b"x")
    )
    assert too_long_key.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "1216" in (too_long_key.details() or "")
    long_binding = _refused(
        lambda: _ask(federation, subject, recipient=recipient, binding="e" * 5000)
    )
    assert long_binding.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "binding" in (long_binding.details() or "")
    huge = _refused(lambda: _ask(federation, subject, recipient=recipient, key=bytes(200_000)))
    assert huge.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert seen.node_calls == []


def test_a_node_refuses_a_key_the_subject_did_not_sign_and_any_caller_but_the_registry(
    federation: InProcessFederation, seen: Seen, tmp_path: Path
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation), tmp_path)
    recipient = sealed_records.RecipientKey.generate()
    proof = sign_subject_proof(
        subject_key=subject.key, subject_ref_hex=subject.ref, registry_id="registry",
        action="list-records", now=datetime.now(UTC), target=recipient.target,
    )  # fmt: skip
    # A registry that keeps the subject's proof but swaps in a key of its own.
    swapped = subject_records_pb2.ListSubjectRecordsRequest(
        subject_proof=proof, binding=subject.binding,
        recipient_key=sealed_records.RecipientKey.generate().public_bytes,
    )  # fmt: skip
    tls_key, tls_cert, ca_cert = (
        (federation.registry_dir / name).read_bytes() for name in ("tls.key", "tls.crt", "ca.crt")
    )
    registry_tls = channel_credentials(tls_key, tls_cert, ca_cert)
    court = f"127.0.0.1:{federation.nodes[COURT.name].port}"
    with grpc.secure_channel(court, registry_tls) as channel:
        stub: Any = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        refusal = _refused(lambda: stub.ListSubjectRecords(swapped, timeout=30))
    assert refusal.code() in {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
    assert "another recipient key" in (refusal.details() or "")
    # A member other than the registry, with the subject's genuine request.
    genuine = subject_records_pb2.ListSubjectRecordsRequest(
        subject_proof=proof, binding=subject.binding, recipient_key=recipient.public_bytes
    )
    idp = federation.members["idp"].credentials
    with grpc.secure_channel(
        court, channel_credentials(idp.key_pem, idp.cert_pem, idp.ca_pem)
    ) as channel:
        stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        refusal = _refused(lambda: stub.ListSubjectRecords(genuine, timeout=30))
    assert refusal.code() is grpc.StatusCode.PERMISSION_DENIED
    assert seen.node_calls == [COURT.name]  # the swapped key reached the desk and was refused


def test_one_subject_asking_too_often_is_refused_and_no_node_is_asked(
    federation: InProcessFederation, seen: Seen, tmp_path: Path
) -> None:
    subject = _bind(federation, _held_by_every_agency(federation, skip=3), tmp_path)
    burst = int(RecordAccessLimits().burst)
    for _ in range(burst):
        _ask(federation, subject, recipient=sealed_records.RecipientKey.generate())
    assert len(seen.node_calls) == burst * len(AGENCIES)
    seen.node_calls.clear()
    refusal = _refused(
        lambda: _ask(federation, subject, recipient=sealed_records.RecipientKey.generate())
    )
    assert refusal.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too often" in (refusal.details() or "")
    assert seen.node_calls == []
