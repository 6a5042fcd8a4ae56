"""A subject's own view and actions: lookups, grants, revocation, contests, reviews.

Every call carries a subject proof: a short JWS the subject signs with a
personal key that an identity-verifying member bound to the subject, naming
the action (and, for a revocation or a contest, its target). The proof is
checked against the keys bound to the subject it names and accepted once
(:func:`central_registry.grants.check_subject_proof`); what a call then reads
or changes is the proven subject's only. Admission (field sizes, rate limits)
is the servicer's, before any of this runs.

All but :meth:`SubjectAccess.contest` and :meth:`SubjectAccess.request_review` are
blocking database work.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker

from central_registry import contests, grants, review_notices, reviews
from central_registry.fanout import FanOut
from central_registry.keyring import RegistryKeys
from central_registry.log.entries import entries_for_subject
from central_registry.manifest_cache import ManifestCache
from central_registry.store import grant_rows
from central_registry.verdict_records import MAX_LISTED, explanations_for_subject, verdict_ids
from credence import names
from credence.clock import Clock
from credence.errors import PermissionDenied
from credence.grants.subject_proofs import SubjectProof
from credence.v1 import registry_pb2


class SubjectAccess:
    """The subject access workflows, each authenticated by a subject proof."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        registry_id: str,
        manifests: ManifestCache,
        keys: RegistryKeys,
        clock: Clock,
        fanout: FanOut,
        notice_deadline: float,
    ) -> None:
        self._sessions = sessions
        self._registry_id = registry_id
        self._manifests = manifests
        self._keys = keys
        self._clock = clock
        # Review notices reach the agencies over the lookups' mTLS channels.
        self._fanout = fanout
        self._notice_deadline = notice_deadline

    def _proof(self, session: Session, token: str, action: str) -> SubjectProof:
        return grants.check_subject_proof(
            session, token, action=action, registry_id=self._registry_id, now=self._clock()
        )

    def lookups(
        self, request: registry_pb2.ListMyLookupsRequest
    ) -> registry_pb2.ListMyLookupsResponse:
        """Every lookup of the subject, served or refused; mandates after their embargo.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        now = self._clock()
        response = registry_pb2.ListMyLookupsResponse()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-lookups")
            subject_ref = bytes.fromhex(proof.subject_ref)
            entries = entries_for_subject(session, subject_ref, now)
            served = verdict_ids(
                session,
                subject_ref,
                [e.query_id for e in entries if e.outcome == "dispatched"],
                now,
            )
            for entry in entries:
                outcome = "served" if entry.outcome == "dispatched" else "refused"
                record = response.lookups.add(
                    query_id=entry.query_id,
                    requester=entry.requester,
                    purpose=entry.purpose,
                    kinds=entry.kind_values,
                    outcome=f"{outcome}: {entry.reason}" if entry.reason else outcome,
                    basis=entry.basis,
                    log_index=entry.idx,
                    verdict_id=served.get(entry.query_id, ""),
                )
                record.at.FromDatetime(entry.issued_at)
        return response

    def explanations(
        self, request: registry_pb2.ListMyExplanationsRequest
    ) -> registry_pb2.ListMyExplanationsResponse:
        """The signed explanations of credit verdicts about the subject, newest first.

        At most :data:`central_registry.verdict_records.MAX_LISTED` (the
        newest), and only while the verdicts' rows live (their data life).

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        now = self._clock()
        response = registry_pb2.ListMyExplanationsResponse()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-explanations")
            signed = explanations_for_subject(
                session, bytes.fromhex(proof.subject_ref), now, limit=MAX_LISTED
            )
        for data in signed:
            response.explanations.add().ParseFromString(data)
        return response

    def grants(
        self, request: registry_pb2.ListMyGrantsRequest
    ) -> registry_pb2.ListMyGrantsResponse:
        """The subject's grants, revoked ones included.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        response = registry_pb2.ListMyGrantsResponse()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-grants")
            for grant in grant_rows.grants_for_subject(session, proof.subject_ref):
                record = response.grants.add(
                    grant_id=grant.grant_id,
                    kind=grant.kind,
                    requester=grant.requester,
                    purpose=names.purpose_value(grant.purpose),
                    kinds=[names.kind_value(kind) for kind in grant.scope_names],
                    max_uses=grant.max_uses or 0,
                    uses=grant.uses,
                )
                record.not_before.FromDatetime(grant.not_before)
                record.expires_at.FromDatetime(grant.expires_at)
                if grant.revoked_at is not None:
                    record.revoked_at.FromDatetime(grant.revoked_at)
        return response

    def revoke(self, request: registry_pb2.RevokeGrantRequest) -> registry_pb2.RevokeGrantResponse:
        """Revoke one of the subject's consents; every later lookup with it is refused.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
            PermissionDenied: the proof names another grant.
            NotFound: the subject holds no such consent (a mandate is not found
                here, in the same words, so an embargoed one stays hidden).
        """
        now = self._clock()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "revoke-grant")
            if proof.target != request.grant_id:
                raise PermissionDenied("the subject proof names another grant than the request")
            revoked_at = grant_rows.revoke_grant(
                session, request.grant_id, subject_ref_hex=proof.subject_ref, now=now
            )
        response = registry_pb2.RevokeGrantResponse()
        response.revoked_at.FromDatetime(revoked_at)
        return response

    def contests(
        self, request: registry_pb2.ListMyContestsRequest
    ) -> registry_pb2.ListMyContestsResponse:
        """The subject's contests, how each was resolved, when each is due and if overdue.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        response = registry_pb2.ListMyContestsResponse()
        now = self._clock()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-contests")
            response.contests.extend(
                contests.contest_record(row, now)
                for row in contests.contests_for(session, proof.subject_ref)
            )
        return response

    async def contest(
        self, request: registry_pb2.ContestRecordsRequest
    ) -> registry_pb2.ContestRecordsResponse:
        """Route a contest to the agency holding the records; they are flagged disputed.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
            PermissionDenied: the proof names another agency, or it is not an agency.
            InvalidInput: an empty or too long statement, or a kind the agency does not hold.
            NotFound: the agency holds no record of the subject; no contest is filed.
            Unavailable: the agency's node could not be reached or refused.
        """

        def prove() -> SubjectProof:
            with self._sessions.begin() as session:
                return self._proof(session, request.subject_proof, "contest")

        contest_id, flagged = await contests.file_contest(
            request,
            prove=prove,
            sessions=self._sessions,
            manifest=self._manifests.current(),
            keys=self._keys,
            now=self._clock(),
        )
        return registry_pb2.ContestRecordsResponse(contest_id=contest_id, records_flagged=flagged)

    async def request_review(
        self, request: registry_pb2.RequestReviewRequest
    ) -> registry_pb2.RequestReviewResponse:
        """Open a human review of a verdict about the subject, logged; tell its agencies.

        An agency that cannot be reached now is told on a later pass
        (:func:`central_registry.review_notices.retry_notices_periodically`).

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
            PermissionDenied: the proof names another verdict.
            InvalidInput: an empty or too long statement.
            NotFound: no such verdict about the subject.
            FailedPrecondition: a review of the verdict is open already.
            ResourceExhausted: the subject has too many reviews open.
        """

        def keep() -> str:
            now = self._clock()
            with self._sessions.begin() as session:
                proof = self._proof(session, request.subject_proof, "request-review")
                if proof.target != request.verdict_id:
                    raise PermissionDenied(
                        "the subject proof names another verdict than the request"
                    )
                review = reviews.open_review(
                    session, verdict_id=request.verdict_id,
                    subject_ref=bytes.fromhex(proof.subject_ref), statement=request.statement,
                    registry_id=self._registry_id, now=now,
                )  # fmt: skip
                return review.review_id

        review_id = await asyncio.to_thread(keep)
        review = await review_notices.tell_agencies(
            review_id, sessions=self._sessions, fanout=self._fanout,
            manifest=self._manifests.current(), key=self._keys.signing,
            deadline=self._notice_deadline,
        )  # fmt: skip
        return registry_pb2.RequestReviewResponse(review=reviews.review_record(review))

    def reviews(
        self, request: registry_pb2.ListMyReviewsRequest
    ) -> registry_pb2.ListMyReviewsResponse:
        """The subject's reviews, newest first, with their signed outcomes.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-reviews")
            rows = reviews.reviews_for(session, bytes.fromhex(proof.subject_ref))
            return registry_pb2.ListMyReviewsResponse(
                reviews=[reviews.review_record(row) for row in rows]
            )
