"""A subject's own view and actions: lookups, grants, revocation, contests.

Every call carries a subject proof: a short JWS the subject signs with a
personal key that an identity-verifying member bound to the subject, naming
the action (and, for a revocation or a contest, its target). The proof is
checked against the keys bound to the subject it names and accepted once
(:func:`central_registry.grants.check_subject_proof`); what a call then reads
or changes is the proven subject's only. Admission (field sizes, rate limits)
is the servicer's, before any of this runs.

All but :meth:`SubjectAccess.contest` are blocking database work.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from central_registry import contests, grants
from central_registry.keyring import RegistryKeys
from central_registry.log.entries import entries_for_subject
from central_registry.manifest_cache import ManifestCache
from central_registry.store import grant_rows
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
    ) -> None:
        self._sessions = sessions
        self._registry_id = registry_id
        self._manifests = manifests
        self._keys = keys
        self._clock = clock

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
            for entry in entries_for_subject(session, bytes.fromhex(proof.subject_ref), now):
                outcome = "served" if entry.outcome == "dispatched" else "refused"
                record = response.lookups.add(
                    query_id=entry.query_id,
                    requester=entry.requester,
                    purpose=entry.purpose,
                    kinds=entry.kind_values,
                    outcome=f"{outcome}: {entry.reason}" if entry.reason else outcome,
                    basis=entry.basis,
                    log_index=entry.idx,
                )
                record.at.FromDatetime(entry.issued_at)
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
        """The subject's contests and how each was resolved.

        Raises:
            VerificationError: the proof is not the subject's, or not for this action.
            Replayed: the proof was used before.
        """
        response = registry_pb2.ListMyContestsResponse()
        with self._sessions.begin() as session:
            proof = self._proof(session, request.subject_proof, "list-contests")
            for row in contests.contests_for(session, proof.subject_ref):
                record = response.contests.add(
                    contest_id=row.contest_id,
                    agency=row.agency,
                    record_kind=row.record_kind,
                    state=row.state,
                )
                record.filed_at.FromDatetime(row.filed_at)
                if row.resolved_at is not None:
                    record.resolved_at.FromDatetime(row.resolved_at)
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
