"""The registry's public port: enrolment, subject access and the transparency log.

Anyone can reach it, without a certificate: ``EnrolmentService`` and
``SubjectAccessService`` authenticate by signatures instead, and admit each
call (bounded fields, then the per-address and overall rates of
:mod:`central_registry.limits.public`) before it costs anything;
``TransparencyLogService`` serves tree heads and proofs, which reveal no
personal data. :mod:`credence.rpc.handlers` maps domain errors to gRPC
statuses and runs blocking work off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from google.protobuf.message import Message

from central_registry import membership, transparency
from central_registry.config import RegistryConfig
from central_registry.fanout import FanOut
from central_registry.keyring import RegistryKeys
from central_registry.limits.public import ACCESS, ENROL, PublicGate, check_subject_access
from central_registry.manifest_cache import ManifestCache
from central_registry.record_access import RecordAccess
from central_registry.subject_access import SubjectAccess
from credence.clock import Clock
from credence.rpc import handlers
from credence.rpc.handlers import Context
from credence.storage import reader, session_factory
from credence.v1 import registry_pb2, registry_pb2_grpc, subject_records_pb2


class EnrolmentServicer(registry_pb2_grpc.EnrolmentServiceServicer):
    """Self-enrolment and collecting the certificate, without a certificate.

    Open to anyone, so every call is bounded before it costs anything: field
    sizes first, then the per-address and overall rate limits, then the
    pending-enrolment cap (see :mod:`central_registry.limits.public`).
    """

    #: Blocking handlers run in the event loop's default pool.
    executor: Executor | None = None

    def __init__(
        self, *, config: RegistryConfig, keys: RegistryKeys, engine: Any, clock: Clock
    ) -> None:
        self._config = config
        self._keys = keys
        self._sessions = session_factory(engine)
        self._gate = PublicGate(engine, config.public, clock)
        self._clock = clock

    @handlers.blocking
    def Enrol(
        self, request: registry_pb2.EnrolRequest, context: Context
    ) -> registry_pb2.EnrolResponse:
        """Ask to join; the member stays pending until the operator approves."""
        membership.check_enrol_request(request)
        self._gate.admit(ENROL, context.peer())
        with self._sessions.begin() as session:
            membership.enrol(session, request, self._clock(), self._config.public)
        return registry_pb2.EnrolResponse(state=membership.STATE_PENDING)

    @handlers.blocking
    def GetEnrolment(
        self, request: registry_pb2.GetEnrolmentRequest, context: Context
    ) -> registry_pb2.GetEnrolmentResponse:
        """The member's state; its certificate and the federation's files once active."""
        self._gate.admit(ACCESS, context.peer())
        with self._sessions() as session:
            status = membership.enrolment_status(
                session,
                request,
                keys=self._keys,
                now=self._clock(),
                pending_lifetime=self._config.public.pending_enrolment_lifetime,
            )
        response = registry_pb2.GetEnrolmentResponse(
            state=status.state,
            certificate_pem=status.certificate_pem,
            ca_cert_pem=status.ca_cert_pem,
            pseudonymisation_key=status.pseudonymisation_key,
        )
        if status.manifest:
            response.manifest.ParseFromString(status.manifest)
        return response


class SubjectAccessServicer(registry_pb2_grpc.SubjectAccessServiceServicer):
    """A subject's own view, authenticated by the subject's personal key.

    Open to anyone: each call is admitted (bounded fields, then the
    per-address and overall rates) before its proof is verified; the
    workflows are :class:`central_registry.subject_access.SubjectAccess`.
    """

    #: Blocking handlers run in the event loop's default pool.
    executor: Executor | None = None

    def __init__(
        self,
        *,
        config: RegistryConfig,
        keys: RegistryKeys,
        manifests: ManifestCache,
        engine: Any,
        clock: Clock,
        fanout: FanOut,
    ) -> None:
        self._gate = PublicGate(engine, config.public, clock)
        self._access = SubjectAccess(
            sessions=session_factory(engine),
            registry_id=config.member_id,
            manifests=manifests,
            keys=keys,
            clock=clock,
            fanout=fanout,
            notice_deadline=config.fanout_deadline_seconds,
        )
        self._records = RecordAccess(
            engine=engine, registry_id=config.member_id, manifests=manifests, keys=keys, clock=clock
        )

    def _admit(self, request: Message, context: Context) -> None:
        check_subject_access(request)
        self._gate.admit(ACCESS, context.peer())

    @handlers.unary
    async def ContestRecords(
        self, request: registry_pb2.ContestRecordsRequest, context: Context
    ) -> registry_pb2.ContestRecordsResponse:
        """Route a contest to the agency holding the records; they are flagged disputed."""
        await asyncio.to_thread(self._admit, request, context)
        return await self._access.contest(request)

    @handlers.blocking
    def ListMyContests(
        self, request: registry_pb2.ListMyContestsRequest, context: Context
    ) -> registry_pb2.ListMyContestsResponse:
        """The subject's contests and how each was resolved."""
        self._admit(request, context)
        return self._access.contests(request)

    @handlers.unary
    async def ListMyRecords(
        self, request: subject_records_pb2.ListMyRecordsRequest, context: Context
    ) -> subject_records_pb2.ListMyRecordsResponse:
        """Every agency's records of the subject, each sealed to the subject's key."""
        await asyncio.to_thread(self._admit, request, context)
        return await self._records.records(request)

    @handlers.unary
    async def RequestReview(
        self, request: registry_pb2.RequestReviewRequest, context: Context
    ) -> registry_pb2.RequestReviewResponse:
        """Ask for a person to review a verdict about the subject; its agencies are told."""
        await asyncio.to_thread(self._admit, request, context)
        return await self._access.request_review(request)

    @handlers.blocking
    def ListMyReviews(
        self, request: registry_pb2.ListMyReviewsRequest, context: Context
    ) -> registry_pb2.ListMyReviewsResponse:
        """The subject's reviews, newest first, with their signed outcomes."""
        self._admit(request, context)
        return self._access.reviews(request)

    @handlers.blocking
    def ListMyExplanations(
        self, request: registry_pb2.ListMyExplanationsRequest, context: Context
    ) -> registry_pb2.ListMyExplanationsResponse:
        """The signed explanations of credit verdicts about the subject, newest first."""
        self._admit(request, context)
        return self._access.explanations(request)

    @handlers.blocking
    def ListMyLookups(
        self, request: registry_pb2.ListMyLookupsRequest, context: Context
    ) -> registry_pb2.ListMyLookupsResponse:
        """Every lookup of the subject, served or refused; mandates after their embargo."""
        self._admit(request, context)
        return self._access.lookups(request)

    @handlers.blocking
    def ListMyGrants(
        self, request: registry_pb2.ListMyGrantsRequest, context: Context
    ) -> registry_pb2.ListMyGrantsResponse:
        """The subject's grants, revoked ones included."""
        self._admit(request, context)
        return self._access.grants(request)

    @handlers.blocking
    def RevokeGrant(
        self, request: registry_pb2.RevokeGrantRequest, context: Context
    ) -> registry_pb2.RevokeGrantResponse:
        """Revoke one of the subject's grants; every later lookup with it is refused."""
        self._admit(request, context)
        return self._access.revoke(request)


class TransparencyLogServicer(registry_pb2_grpc.TransparencyLogServiceServicer):
    """Tree heads and proofs for nodes and auditors; they reveal no personal data."""

    #: Blocking handlers run in the event loop's default pool.
    executor: Executor | None = None

    def __init__(
        self,
        *,
        keys: RegistryKeys,
        engine: Any,
        clock: Clock,
        origin: str,
        cosigned: Callable[[], bytes] = bytes,
    ) -> None:
        self._keys = keys
        self._sessions = session_factory(engine)
        self._clock = clock
        self._origin = origin
        self._cosigned = cosigned

    @handlers.blocking
    def GetTreeHead(
        self,
        request: registry_pb2.GetTreeHeadRequest,  # noqa: ARG002 - there is one current head
        context: Context,  # noqa: ARG002 - nothing to admit: the head is public
    ) -> registry_pb2.GetTreeHeadResponse:
        """The checkpoint of the current tree (a C2SP signed note), and the latest cosigned one."""
        with self._sessions.begin() as session:
            checkpoint = transparency.tree_head(
                session, log_key=self._keys.signing, origin=self._origin, now=self._clock()
            )
        return registry_pb2.GetTreeHeadResponse(
            checkpoint=checkpoint, cosigned_checkpoint=self._cosigned()
        )

    @handlers.blocking
    def GetInclusionProof(
        self,
        request: registry_pb2.GetInclusionProofRequest,
        context: Context,  # noqa: ARG002 - nothing to admit: proofs are public
    ) -> registry_pb2.GetInclusionProofResponse:
        """The audit path of one entry in a tree of the asked size."""
        with reader(self._sessions()) as session:
            index, path = transparency.inclusion_proof(
                session, bytes(request.entry_commitment), request.tree_size
            )
        return registry_pb2.GetInclusionProofResponse(
            leaf_index=index, tree_size=request.tree_size, path=path
        )

    @handlers.blocking
    def GetInclusionProofs(
        self,
        request: registry_pb2.GetInclusionProofsRequest,
        context: Context,  # noqa: ARG002 - nothing to admit: proofs are public
    ) -> registry_pb2.GetInclusionProofsResponse:
        """The audit paths of up to 1,000 entries in one tree of the asked size."""
        with reader(self._sessions()) as session:
            proofs = transparency.inclusion_proofs(
                session, [bytes(c) for c in request.entry_commitments], request.tree_size
            )
        return registry_pb2.GetInclusionProofsResponse(
            tree_size=request.tree_size,
            proofs=[
                registry_pb2.InclusionProof()
                if proof is None
                else registry_pb2.InclusionProof(included=True, leaf_index=proof[0], path=proof[1])
                for proof in proofs
            ],
        )

    @handlers.blocking
    def GetConsistencyProof(
        self,
        request: registry_pb2.GetConsistencyProofRequest,
        context: Context,  # noqa: ARG002 - nothing to admit: proofs are public
    ) -> registry_pb2.GetConsistencyProofResponse:
        """The proof that the tree of ``second`` leaves extends the tree of ``first``."""
        with reader(self._sessions()) as session:
            path = transparency.consistency_proof(session, request.first, request.second)
        return registry_pb2.GetConsistencyProofResponse(path=path)
