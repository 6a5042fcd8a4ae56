"""The sealed-records format without servers: padding, the HPKE labels, the request checks.

Written from the attacker's side: each refusal is shown beside the case that
passes, so none of them could pass by refusing everything.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag

from agency_node.subject_records import amount_band
from credence import sealed_records
from credence.envelope import Envelope
from credence.errors import ClaimMismatch, InvalidInput, UnknownKey, VerificationError
from credence.grants.binding import issue_binding
from credence.grants.subject_proofs import sign_subject_proof
from credence.keys import KeySet, SigningKey
from credence.v1 import subject_records_pb2

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
REF, OTHER_REF = "ab" * 32, "cd" * 32


class Parties:
    def __init__(self) -> None:
        self.idp, self.subject, self.agency = (SigningKey.generate() for _ in range(3))
        self.recipient = sealed_records.RecipientKey.generate()

    def binding(self, ref: str = REF, issuer: SigningKey | None = None) -> str:
        return issue_binding(
            subject_ref_hex=ref, subject_key=self.subject.public, member_id="idp",
            member_key=issuer or self.idp, now=NOW, validity=timedelta(days=1),
        )  # fmt: skip

    def proof(self, ref: str = REF, target: str | None = None) -> str:
        return sign_subject_proof(
            subject_key=self.subject, subject_ref_hex=ref, registry_id="registry",
            action="list-records", now=NOW, target=target or self.recipient.target,
        )  # fmt: skip

    def verify(self, *, proof: str | None = None, binding: str | None = None,
               key: bytes | None = None) -> sealed_records.RecordsRequest:  # fmt: skip
        return sealed_records.verify_request(
            subject_proof=proof or self.proof(),
            binding=binding or self.binding(),
            recipient_key=self.recipient.public_bytes if key is None else key,
            identity_keys=KeySet([self.idp.public]),
            registry_id="registry",
            now=NOW,
        )


@pytest.fixture
def parties() -> Parties:
    return Parties()


def _sealed(parties: Parties, agency: str = "court") -> tuple[sealed_records.RecordsRequest, bytes]:
    request = parties.verify()
    records = subject_records_pb2.SubjectRecordList(
        agency=agency, request_id=request.request_id, total=1,
        records=[subject_records_pb2.HeldRecord(kind="court_judgment", category="unpaid")],
    )  # fmt: skip
    envelope = sealed_records.seal(
        records, request=request, agency=agency, signing_key=parties.agency, now=NOW
    )
    return request, envelope.to_bytes()


def test_padding_hides_the_size_to_a_power_of_two_and_refuses_tampering() -> None:
    for size, padded in ((0, 1024), (1020, 1024), (1021, 2048), (5000, 8192)):
        framed = sealed_records.pad(b"r" * size)
        assert len(framed) == padded
        assert sealed_records.unpad(framed) == b"r" * size
    tampered = bytearray(sealed_records.pad(b"records"))
    tampered[-1] = 1
    with pytest.raises(InvalidInput, match="padded"):
        sealed_records.unpad(bytes(tampered))
    with pytest.raises(InvalidInput, match="padded"):
        sealed_records.unpad(b"\xff\xff\xff\xff" + bytes(1020))


def test_the_request_checks_pass_and_each_forgery_is_refused(parties: Parties) -> None:
    checked = parties.verify()
    assert (checked.subject_ref, checked.recipient_key) == (REF, parties.recipient.public_bytes)
    stranger = SigningKey.generate()
    with pytest.raises(UnknownKey):
        parties.verify(binding=parties.binding(issuer=stranger))  # not an identity verifier
    with pytest.raises(ClaimMismatch, match="different subjects"):
        parties.verify(binding=parties.binding(ref=OTHER_REF))
    with pytest.raises(ClaimMismatch, match="another recipient key"):
        parties.verify(key=sealed_records.RecipientKey.generate().public_bytes)
    with pytest.raises(InvalidInput, match="1216"):
        parties.verify(key=parties.recipient.public_bytes[:-1])


def test_the_subject_opens_its_answer_and_nothing_else_does(parties: Parties) -> None:
    request, envelope_bytes = _sealed(parties)
    envelope = Envelope.from_bytes(envelope_bytes)
    keys = KeySet([parties.agency.public])
    opened = parties.recipient.open(
        envelope, agency_keys=keys, agency="court", request_id=request.request_id
    )
    assert [record.kind for record in opened.records] == ["court_judgment"]
    for cleartext in (b"court_judgment", b"unpaid"):
        assert cleartext not in envelope_bytes

    with pytest.raises(VerificationError):  # another agency's key
        parties.recipient.open(envelope, agency_keys=KeySet([SigningKey.generate().public]),
                               agency="court", request_id=request.request_id)  # fmt: skip
    with pytest.raises(ClaimMismatch):  # passed off as another request
        parties.recipient.open(envelope, agency_keys=keys, agency="court", request_id="other")
    body = subject_records_pb2.SealedRecords.FromString(envelope.payload)
    info = sealed_records.seal_info("court", request.request_id)
    assert sealed_records.unpad(
        sealed_records.SUITE.decrypt(body.ciphertext, parties.recipient._private, info=info)
    )
    other = sealed_records.RecipientKey.generate()
    with pytest.raises(InvalidTag):  # another key
        sealed_records.SUITE.decrypt(body.ciphertext, other._private, info=info)
    for agency, request_id in (("bank", request.request_id), ("court", "another-request")):
        with pytest.raises(InvalidTag):  # relabelled
            sealed_records.SUITE.decrypt(
                body.ciphertext,
                parties.recipient._private,
                info=sealed_records.seal_info(agency, request_id),
            )


def test_amounts_leave_as_bands() -> None:
    assert amount_band(None, None) == ""
    assert amount_band(9_999, "EUR") == "0-99 EUR"
    assert amount_band(10_000, "EUR") == "100-999 EUR"
    assert amount_band(123_456, "CZK") == "1,000-9,999 CZK"
    assert amount_band(99_999_999, "EUR") == "100,000-999,999 EUR"
    assert amount_band(100_000_000, "EUR") == "1,000,000 or more EUR"
