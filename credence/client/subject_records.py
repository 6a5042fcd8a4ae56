"""A subject's records from every agency, sealed to a key only the subject holds.

:func:`fetch_records` makes a fresh HPKE key pair (the private half lives in
memory for this one request), asks every agency through the registry
(:meth:`credence.client.subject.SubjectClient.records`), and opens each sealed
answer after checking the agency's signature against the manifest: a registry
that relayed another agency's answer, another request's, or one of its own
making is caught here.
"""

from __future__ import annotations

from dataclasses import dataclass

from credence.client.subject import SubjectClient
from credence.envelope import Envelope
from credence.errors import CredenceError
from credence.manifest import TrustedManifest
from credence.sealed_records import RecipientKey
from credence.v1 import subject_records_pb2

__all__ = ["AgencyAnswer", "fetch_records"]


@dataclass(frozen=True)
class AgencyAnswer:
    """One agency's records of the subject, opened; or why there are none."""

    agency: str
    records: subject_records_pb2.SubjectRecordList | None
    problem: str = ""


def open_answers(
    answers: list[subject_records_pb2.AgencyRecords],
    *,
    recipient: RecipientKey,
    request_id: str,
    manifest: TrustedManifest,
) -> list[AgencyAnswer]:
    """Check and open each relayed answer; one that does not check says why.

    An agency the registry left out of the list is not silently missing:
    every active agency of the manifest gets an entry.
    """
    by_agency = {answer.agency: answer for answer in answers}
    agencies = sorted(
        member.member_id
        for member in manifest.members.values()
        if member.is_active and member.role_name == "agency"
    )
    opened: list[AgencyAnswer] = []
    for agency in sorted({*agencies, *by_agency}):
        answer = by_agency.get(agency)
        if answer is None:
            opened.append(AgencyAnswer(agency, None, "the registry relayed no answer"))
        elif not answer.HasField("sealed"):
            opened.append(AgencyAnswer(agency, None, answer.unavailable or "no answer"))
        else:
            try:
                records = recipient.open(
                    Envelope.from_proto(answer.sealed),
                    agency_keys=manifest.member_keys(agency),
                    agency=agency,
                    request_id=request_id,
                )
            except CredenceError as exc:
                opened.append(AgencyAnswer(agency, None, f"refused: {exc}"))
            else:
                opened.append(AgencyAnswer(agency, records))
    return opened


def fetch_records(
    client: SubjectClient, *, binding: str, manifest: TrustedManifest
) -> list[AgencyAnswer]:
    """Every agency's records of the subject, through the registry, opened here.

    Raises:
        ResourceExhausted: the subject asked too often.
        CredenceError: the registry refused the request or could not be reached.
    """
    recipient = RecipientKey.generate()
    request_id, answers = client.records(binding, recipient.public_bytes, recipient.target)
    return open_answers(answers, recipient=recipient, request_id=request_id, manifest=manifest)
