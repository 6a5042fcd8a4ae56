"""A subject's own view of the registry: who looked me up, my grants, revoking one.

Subjects hold no certificate: the channel checks the registry against the
federation CA, and each call carries a short-lived proof signed with the
subject's personal key (:func:`credence.grants.subject_proofs.sign_subject_proof`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from credence import payloads
from credence.client.channel import ChannelClient
from credence.client.errors import rpc_errors
from credence.clock import Clock, utc_now
from credence.envelope import Envelope, verify_message
from credence.errors import ClaimMismatch, FailedPrecondition
from credence.explanations import check_figures, open_explanation
from credence.grants.subject_proofs import sign_subject_proof
from credence.jws import parse_compact, parse_json_object
from credence.keys import KeySet, SigningKey
from credence.manifest import TrustedManifest
from credence.pki import load_certificate_pem
from credence.v1 import registry_pb2, registry_pb2_grpc, subject_records_pb2

__all__ = ["ReviewView", "SubjectClient"]

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ReviewView:
    """A review of a verdict, with its outcome checked.

    Attributes:
        record: the review as the registry lists it.
        outcome: the registry-signed outcome, verified; None while the review is open.
    """

    record: registry_pb2.ReviewRecord
    outcome: registry_pb2.ReviewOutcome | None


class SubjectClient(ChannelClient):
    """A subject's connection to the registry's SubjectAccessService.

    Args:
        address: the registry's ``host:port``.
        ca_pem: the federation CA certificate.
        subject_key: the personal key bound to the subject reference.
        subject_ref_hex: the subject reference, 64 hex digits.
        registry_id: the registry's member id (the proofs' audience).
        timeout: the deadline of each call in seconds.
        clock: the time the proofs are signed at.
        manifest: the verified federation manifest (called when needed); what
            the registry signs for the subject is checked against its keys.

    Raises:
        InvalidInput: the CA certificate is unreadable.
    """

    def __init__(
        self,
        address: str,
        ca_pem: bytes,
        *,
        subject_key: SigningKey,
        subject_ref_hex: str,
        registry_id: str,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
        manifest: Callable[[], TrustedManifest] | None = None,
    ) -> None:
        load_certificate_pem(ca_pem)
        self._manifest = manifest
        self._key = subject_key
        self._ref = subject_ref_hex
        self._registry_id = registry_id
        self._timeout = timeout
        self._clock = clock
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        self._channel = grpc.secure_channel(address, credentials)
        self._stub = registry_pb2_grpc.SubjectAccessServiceStub(self._channel)

    def _proof(self, action: str, target: str = "") -> str:
        return sign_subject_proof(
            subject_key=self._key,
            subject_ref_hex=self._ref,
            registry_id=self._registry_id,
            action=action,
            now=self._clock(),
            target=target,
        )

    def lookups(self) -> list[registry_pb2.LookupRecord]:
        """Every lookup of the subject (mandated ones once their embargo ends).

        Raises:
            InvalidInput: the subject reference is not 64 hex digits.
            Unauthenticated: the key is not bound to the subject reference.
            CredenceError: refused otherwise, or the registry could not be reached.
        """
        request = registry_pb2.ListMyLookupsRequest(subject_proof=self._proof("list-lookups"))
        with rpc_errors():
            return list(self._stub.ListMyLookups(request, timeout=self._timeout).lookups)

    def explanations(self) -> list[registry_pb2.Explanation]:
        """The explanations of credit verdicts about the subject, newest first (at most 500).

        Each is checked: signed by a registry key of the verified manifest,
        of payload type EXPLANATION, and, when made under the manifest's
        scorecard, its figures follow from it
        (:func:`credence.explanations.check_figures`).

        Raises:
            FailedPrecondition: the client was made without the manifest.
            VerificationError: an explanation is not the registry's or its
                figures do not follow (a subclass names which).
            CredenceError: as :meth:`lookups`.
        """
        if self._manifest is None:
            raise FailedPrecondition(
                "explanations are checked against the registry's keys: "
                "make the SubjectClient with manifest=..."
            )
        request = registry_pb2.ListMyExplanationsRequest(
            subject_proof=self._proof("list-explanations")
        )
        with rpc_errors():
            response = self._stub.ListMyExplanations(request, timeout=self._timeout)
        manifest = self._manifest()
        scorecard = manifest.scorecard
        explanations = []
        for signed in response.explanations:
            explanation = open_explanation(Envelope.from_proto(signed), manifest.registry_keys)
            if explanation.subject.ref.hex() != self._ref.lower():
                raise ClaimMismatch(
                    f"the registry sent the explanation of verdict {explanation.verdict_id!r}, "
                    "which is about another subject"
                )
            if explanation.scorecard_version == scorecard.version:
                check_figures(explanation, scorecard)
            explanations.append(explanation)
        return explanations

    def grants(self) -> list[registry_pb2.GrantRecord]:
        """The subject's consents and mandates.

        Raises:
            CredenceError: as :meth:`lookups`.
        """
        request = registry_pb2.ListMyGrantsRequest(subject_proof=self._proof("list-grants"))
        with rpc_errors():
            return list(self._stub.ListMyGrants(request, timeout=self._timeout).grants)

    def revoke(self, grant_id: str) -> datetime:
        """Revoke one of the subject's grants; later lookups with it are refused.

        Returns:
            When the revocation took effect.

        Raises:
            NotFound: no such grant of this subject.
            CredenceError: as :meth:`lookups`.
        """
        request = registry_pb2.RevokeGrantRequest(
            subject_proof=self._proof("revoke-grant", target=grant_id), grant_id=grant_id
        )
        with rpc_errors():
            response = self._stub.RevokeGrant(request, timeout=self._timeout)
        return response.revoked_at.ToDatetime(tzinfo=UTC)

    def contest(self, agency: str, statement: str, record_kind: str = "") -> tuple[str, int]:
        """Contest the records ``agency`` holds about the subject.

        Returns:
            The contest id and how many records the agency flagged disputed.

        Raises:
            InvalidInput: an empty statement, or a kind the agency does not hold.
            Unavailable: the agency's node could not be reached (try again).
            CredenceError: as :meth:`lookups`.
        """
        request = registry_pb2.ContestRecordsRequest(
            subject_proof=self._proof("contest", target=agency),
            agency=agency,
            record_kind=record_kind,
            statement=statement,
        )
        with rpc_errors():
            response = self._stub.ContestRecords(request, timeout=self._timeout)
        return response.contest_id, int(response.records_flagged)

    def contests(self) -> list[registry_pb2.ContestRecord]:
        """The subject's contests and their outcomes.

        Raises:
            CredenceError: as :meth:`lookups`.
        """
        request = registry_pb2.ListMyContestsRequest(subject_proof=self._proof("list-contests"))
        with rpc_errors():
            return list(self._stub.ListMyContests(request, timeout=self._timeout).contests)

    def records(
        self, binding: str, recipient_key: bytes, key_target: str
    ) -> tuple[str, list[subject_records_pb2.AgencyRecords]]:
        """Ask every agency, through the registry, for its records sealed to ``recipient_key``.

        Args:
            binding: the binding of the subject's key (the nodes check it).
            recipient_key: the fresh HPKE public key the answers are sealed to.
            key_target: the proof's target naming that key
                (:func:`credence.sealed_records.key_target`).

        Returns:
            The request id (the proof's ``jti``, which each sealed answer names)
            and each agency's relayed answer, still sealed.

        Raises:
            ResourceExhausted: the subject asked too often.
            CredenceError: as :meth:`lookups`.
        """
        proof = self._proof("list-records", target=key_target)
        claims = parse_json_object(parse_compact(proof).payload, "subject proof")
        request = subject_records_pb2.ListMyRecordsRequest(
            subject_proof=proof, binding=binding, recipient_key=recipient_key
        )
        with rpc_errors():
            response = self._stub.ListMyRecords(request, timeout=self._timeout)
        return str(claims["jti"]), list(response.agencies)

    def request_review(self, verdict_id: str, statement: str) -> registry_pb2.ReviewRecord:
        """Ask for a person to review a verdict about the subject.

        Returns:
            The review as stored: open, with the agencies told so far and its log index.

        Raises:
            InvalidInput: an empty or too long statement.
            NotFound: no such verdict about the subject.
            FailedPrecondition: a review of the verdict is open already.
            ResourceExhausted: too many reviews are open.
            CredenceError: as :meth:`lookups`.
        """
        request = registry_pb2.RequestReviewRequest(
            subject_proof=self._proof("request-review", target=verdict_id),
            verdict_id=verdict_id,
            statement=statement,
        )
        with rpc_errors():
            return self._stub.RequestReview(request, timeout=self._timeout).review

    def reviews(self) -> list[ReviewView]:
        """The subject's reviews, newest first, each decided one's outcome verified.

        Raises:
            FailedPrecondition: the client was made without the manifest.
            VerificationError: an outcome is not signed by the registry, not a
                review outcome, or not this review's (ClaimMismatch).
            CredenceError: as :meth:`lookups`.
        """
        if self._manifest is None:
            raise FailedPrecondition(
                "review outcomes are checked against the registry's keys: "
                "make the SubjectClient with manifest=..."
            )
        request = registry_pb2.ListMyReviewsRequest(subject_proof=self._proof("list-reviews"))
        with rpc_errors():
            records = list(self._stub.ListMyReviews(request, timeout=self._timeout).reviews)
        keys = self._manifest().registry_keys
        return [self._review_view(record, keys) for record in records]

    def _review_view(self, record: registry_pb2.ReviewRecord, keys: KeySet) -> ReviewView:
        if not record.HasField("outcome"):
            if record.state != "open":
                raise ClaimMismatch(f"review {record.review_id} is {record.state} with no outcome")
            return ReviewView(record=record, outcome=None)
        outcome = verify_message(
            Envelope.from_proto(record.outcome),
            payloads.REVIEW_OUTCOME,
            keys,
            registry_pb2.ReviewOutcome,
        )
        for field, got, want in (
            ("review_id", outcome.review_id, record.review_id),
            ("verdict_id", outcome.verdict_id, record.verdict_id),
            ("outcome", outcome.outcome, record.state),
            ("subject", outcome.subject.ref.hex(), self._ref.lower()),
        ):
            if got != want:
                raise ClaimMismatch(
                    f"review {record.review_id}: the signed outcome's {field} is {got!r}, "
                    f"not {want!r}"
                )
        return ReviewView(record=record, outcome=outcome)
