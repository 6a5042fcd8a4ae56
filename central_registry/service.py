"""The registry's gRPC servicers: decode, call the domain logic, encode.

``RegistryService`` is for members only: the caller's member id comes from its
re-verified mutual-TLS certificate, never from a request field, and a member
that is not active is refused. ``EnrolmentService`` and ``SubjectAccessService``
accept callers without a certificate; they authenticate by signatures instead.
Every handler maps domain errors through :func:`credence.rpc.status.grpc_errors_async`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from cryptography import x509
from sqlalchemy.orm import Session

from central_registry import contests, grants, membership, transparency
from central_registry.config import RegistryConfig
from central_registry.grants import GrantPolicy
from central_registry.keyring import RegistryKeys
from central_registry.limits.public import ACCESS, ENROL, PublicGate, check_subject_access
from central_registry.log.entries import entries_for_subject
from central_registry.lookups import Lookups
from central_registry.manifest_cache import ManifestCache
from central_registry.status_publisher import StatusListPublisher
from central_registry.store import grant_rows
from credence import names
from credence.clock import Clock
from credence.envelope import Envelope
from credence.errors import NotFound, PermissionDenied
from credence.grants.subject_proofs import SubjectProof
from credence.rpc.status import grpc_errors_async
from credence.rpc.tls import peer_member_id
from credence.storage import reader, session_factory
from credence.v1 import registry_pb2, registry_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class _Members:
    """Who is calling: the certificate's member id, which must be active."""

    def __init__(self, manifests: ManifestCache, ca_cert: x509.Certificate, clock: Clock) -> None:
        self._manifests = manifests
        self._ca_cert = ca_cert
        self._clock = clock

    def caller(self, context: Context) -> str:
        manifest = self._manifests.current()
        member_id = peer_member_id(context, self._ca_cert, self._clock(), manifest.revoked_serials)
        if member_id not in manifest.members:
            # Approved a moment ago (the CLI publishes from another process)?
            manifest = self._manifests.refresh()
        try:
            manifest.active_member(member_id)
        except NotFound:
            raise PermissionDenied(f"{member_id!r} is not an approved member") from None
        return member_id


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Lookups, grants and the manifest, for members."""

    def __init__(
        self,
        *,
        config: RegistryConfig,
        keys: RegistryKeys,
        engine: Any,
        manifests: ManifestCache,
        lookups: Lookups,
        ca_cert: x509.Certificate,
        clock: Clock,
        status_lists: StatusListPublisher | None = None,
    ) -> None:
        self._config = config
        self._keys = keys
        self._sessions = session_factory(engine)
        self._manifests = manifests
        self._lookups = lookups
        self._members = _Members(manifests, ca_cert, clock)
        self._clock = clock
        self._status_lists = status_lists or StatusListPublisher(
            engine, key=keys.signing, registry_id=config.member_id, clock=clock
        )

    def _policy(self) -> GrantPolicy:
        return GrantPolicy(self._manifests.current(), self._config)

    async def GetManifest(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.GetManifestRequest,  # noqa: ARG002 - the current one is all there is
        context: Context,
    ) -> registry_pb2.GetManifestResponse:
        """The current signed manifest."""
        async with grpc_errors_async(context):
            self._members.caller(context)
            manifest = self._manifests.current()
            return registry_pb2.GetManifestResponse(manifest=manifest.envelope.to_proto())
        raise AssertionError("unreachable")  # pragma: no cover

    async def GetStatusList(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.GetStatusListRequest,  # noqa: ARG002 - the current one is all there is
        context: Context,
    ) -> registry_pb2.GetStatusListResponse:
        """The current signed revocation list of grants (``statuslist+jwt``)."""
        async with grpc_errors_async(context):
            self._members.caller(context)
            token = await asyncio.to_thread(self._status_lists.current)
            return registry_pb2.GetStatusListResponse(status_list_token=token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def RegisterBinding(  # noqa: N802
        self, request: registry_pb2.RegisterBindingRequest, context: Context
    ) -> registry_pb2.RegisterBindingResponse:
        """An identity-verifying member binds a subject's personal key."""
        async with grpc_errors_async(context):
            caller = self._members.caller(context)

            def run() -> str:
                with self._sessions.begin() as session:
                    binding = grants.register_binding(
                        session,
                        request.binding_token,
                        caller=caller,
                        policy=self._policy(),
                        now=self._clock(),
                    )
                    return binding.subject_key.kid

            return registry_pb2.RegisterBindingResponse(subject_kid=await asyncio.to_thread(run))
        raise AssertionError("unreachable")  # pragma: no cover

    async def IssueConsent(  # noqa: N802
        self, request: registry_pb2.IssueConsentRequest, context: Context
    ) -> registry_pb2.IssueConsentResponse:
        """Countersign a subject's signed consent request, once, for the requester it names."""
        async with grpc_errors_async(context):
            caller = self._members.caller(context)

            def run() -> tuple[str, str]:
                with self._sessions.begin() as session:
                    return grants.issue_consent(
                        session,
                        request.consent_request_token,
                        request.binding_token,
                        caller=caller,
                        registry_key=self._keys.signing,
                        policy=self._policy(),
                        now=self._clock(),
                    )

            token, grant_id = await asyncio.to_thread(run)
            return registry_pb2.IssueConsentResponse(consent_token=token, grant_id=grant_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def RegisterMandate(  # noqa: N802
        self, request: registry_pb2.RegisterMandateRequest, context: Context
    ) -> registry_pb2.RegisterMandateResponse:
        """Register the calling authority's mandate."""
        async with grpc_errors_async(context):
            caller = self._members.caller(context)

            def run() -> str:
                with self._sessions.begin() as session:
                    return grants.register_mandate(
                        session,
                        request.mandate_token,
                        caller=caller,
                        policy=self._policy(),
                        now=self._clock(),
                    )

            return registry_pb2.RegisterMandateResponse(grant_id=await asyncio.to_thread(run))
        raise AssertionError("unreachable")  # pragma: no cover

    async def RequestVerdict(  # noqa: N802
        self, request: registry_pb2.RequestVerdictRequest, context: Context
    ) -> registry_pb2.RequestVerdictResponse:
        """One subject, one signed verdict."""
        async with grpc_errors_async(context):
            return await self._lookups.request_verdict(self._members.caller(context), request)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ScreenBatch(  # noqa: N802
        self,
        request_iterator: AsyncIterator[registry_pb2.ScreenBatchRequest],
        context: Context,
    ) -> AsyncIterator[registry_pb2.ScreenBatchResponse]:
        """Stream of subjects in, verdicts out as each message is done (up to 4 at once)."""
        async with grpc_errors_async(context):
            caller = self._members.caller(context)
            ready: asyncio.Queue[asyncio.Task[registry_pb2.ScreenBatchResponse] | None] = (
                asyncio.Queue(maxsize=4)
            )

            async def read() -> None:
                try:
                    async for message in request_iterator:
                        await ready.put(
                            asyncio.ensure_future(self._lookups.screen_message(caller, message))
                        )
                finally:
                    await ready.put(None)

            reader = asyncio.ensure_future(read())
            try:
                while (task := await ready.get()) is not None:
                    yield await task
                await reader
            finally:
                reader.cancel()

    async def ReportContestOutcome(  # noqa: N802
        self, request: registry_pb2.ReportContestOutcomeRequest, context: Context
    ) -> registry_pb2.ReportContestOutcomeResponse:
        """An agency reports how it resolved a contest; the subject sees it."""
        async with grpc_errors_async(context):
            caller = self._members.caller(context)

            def run() -> None:
                with self._sessions.begin() as session:
                    contests.resolve(
                        session,
                        Envelope.from_proto(request.resolution),
                        caller=caller,
                        manifest=self._manifests.current(),
                    )

            await asyncio.to_thread(run)
            return registry_pb2.ReportContestOutcomeResponse()
        raise AssertionError("unreachable")  # pragma: no cover


class EnrolmentServicer(registry_pb2_grpc.EnrolmentServiceServicer):
    """Self-enrolment and collecting the certificate, without a certificate.

    Open to anyone, so every call is bounded before it costs anything: field
    sizes first, then the per-address and overall rate limits, then the
    pending-enrolment cap (see :mod:`central_registry.limits.public`).
    """

    def __init__(
        self, *, config: RegistryConfig, keys: RegistryKeys, engine: Any, clock: Clock
    ) -> None:
        self._config = config
        self._keys = keys
        self._sessions = session_factory(engine)
        self._gate = PublicGate(engine, config.public, clock)
        self._clock = clock

    async def Enrol(  # noqa: N802
        self, request: registry_pb2.EnrolRequest, context: Context
    ) -> registry_pb2.EnrolResponse:
        """Ask to join; the member stays pending until the operator approves."""
        async with grpc_errors_async(context):
            membership.check_enrol_request(request)
            await asyncio.to_thread(self._gate.admit, ENROL, context.peer())

            def run() -> None:
                with self._sessions.begin() as session:
                    membership.enrol(session, request, self._clock(), self._config.public)

            await asyncio.to_thread(run)
            return registry_pb2.EnrolResponse(state=membership.STATE_PENDING)
        raise AssertionError("unreachable")  # pragma: no cover

    async def GetEnrolment(  # noqa: N802
        self, request: registry_pb2.GetEnrolmentRequest, context: Context
    ) -> registry_pb2.GetEnrolmentResponse:
        """The member's state; its certificate and the federation's files once active."""
        async with grpc_errors_async(context):
            await asyncio.to_thread(self._gate.admit, ACCESS, context.peer())

            def run() -> membership.EnrolmentStatus:
                with self._sessions() as session:
                    return membership.enrolment_status(
                        session,
                        request,
                        keys=self._keys,
                        now=self._clock(),
                        pending_lifetime=self._config.public.pending_enrolment_lifetime,
                    )

            status = await asyncio.to_thread(run)
            response = registry_pb2.GetEnrolmentResponse(
                state=status.state,
                certificate_pem=status.certificate_pem,
                ca_cert_pem=status.ca_cert_pem,
                pseudonymisation_key=status.pseudonymisation_key,
            )
            if status.manifest:
                response.manifest.ParseFromString(status.manifest)
            return response
        raise AssertionError("unreachable")  # pragma: no cover


class SubjectAccessServicer(registry_pb2_grpc.SubjectAccessServiceServicer):
    """A subject's own view, authenticated by the subject's personal key."""

    def __init__(
        self,
        *,
        config: RegistryConfig,
        keys: RegistryKeys,
        manifests: ManifestCache,
        engine: Any,
        clock: Clock,
    ) -> None:
        self._config = config
        self._keys = keys
        self._manifests = manifests
        self._sessions = session_factory(engine)
        self._gate = PublicGate(engine, config.public, clock)
        self._clock = clock

    async def _admit(self, request: Any, context: Context) -> None:
        # Open to anyone: bounded fields, then the per-address and overall rates.
        check_subject_access(request)
        await asyncio.to_thread(self._gate.admit, ACCESS, context.peer())

    def _proof(self, session: Session, token: str, action: str) -> SubjectProof:
        return grants.check_subject_proof(
            session, token, action=action, registry_id=self._config.member_id, now=self._clock()
        )

    async def ContestRecords(  # noqa: N802
        self, request: registry_pb2.ContestRecordsRequest, context: Context
    ) -> registry_pb2.ContestRecordsResponse:
        """Route a contest to the agency holding the records; they are flagged disputed."""
        async with grpc_errors_async(context):
            await self._admit(request, context)
            now = self._clock()

            def check() -> tuple[SubjectProof, Any, Envelope, str]:
                with self._sessions.begin() as session:
                    proof = self._proof(session, request.subject_proof, "contest")
                contest, envelope, endpoint = contests.signed_contest(
                    proof,
                    request.subject_proof,
                    request,
                    manifest=self._manifests.current(),
                    keys=self._keys,
                    now=now,
                )
                return proof, contest, envelope, endpoint

            proof, contest, envelope, endpoint = await asyncio.to_thread(check)
            flagged = await contests.deliver(
                envelope,
                contest,
                agency_id=request.agency,
                endpoint=endpoint,
                manifest=self._manifests.current(),
                keys=self._keys,
            )

            def keep() -> None:
                with self._sessions.begin() as session:
                    contests.record_contest(
                        session,
                        contest,
                        agency_id=request.agency,
                        subject_ref_hex=proof.subject_ref,
                        records_flagged=flagged,
                        now=now,
                    )

            await asyncio.to_thread(keep)
            return registry_pb2.ContestRecordsResponse(
                contest_id=contest.contest_id, records_flagged=flagged
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def ListMyContests(  # noqa: N802
        self, request: registry_pb2.ListMyContestsRequest, context: Context
    ) -> registry_pb2.ListMyContestsResponse:
        """The subject's contests and how each was resolved."""
        async with grpc_errors_async(context):
            await self._admit(request, context)

            def run() -> registry_pb2.ListMyContestsResponse:
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

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ListMyLookups(  # noqa: N802
        self, request: registry_pb2.ListMyLookupsRequest, context: Context
    ) -> registry_pb2.ListMyLookupsResponse:
        """Every lookup of the subject, served or refused; mandates after their embargo."""
        async with grpc_errors_async(context):
            await self._admit(request, context)

            def run() -> registry_pb2.ListMyLookupsResponse:
                now = self._clock()
                with self._sessions.begin() as session:
                    proof = self._proof(session, request.subject_proof, "list-lookups")
                    response = registry_pb2.ListMyLookupsResponse()
                    for entry in entries_for_subject(
                        session, bytes.fromhex(proof.subject_ref), now
                    ):
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

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def ListMyGrants(  # noqa: N802
        self, request: registry_pb2.ListMyGrantsRequest, context: Context
    ) -> registry_pb2.ListMyGrantsResponse:
        """The subject's grants, revoked ones included."""
        async with grpc_errors_async(context):
            await self._admit(request, context)

            def run() -> registry_pb2.ListMyGrantsResponse:
                with self._sessions.begin() as session:
                    proof = self._proof(session, request.subject_proof, "list-grants")
                    response = registry_pb2.ListMyGrantsResponse()
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

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def RevokeGrant(  # noqa: N802
        self, request: registry_pb2.RevokeGrantRequest, context: Context
    ) -> registry_pb2.RevokeGrantResponse:
        """Revoke one of the subject's grants; every later lookup with it is refused."""
        async with grpc_errors_async(context):
            await self._admit(request, context)

            def run() -> registry_pb2.RevokeGrantResponse:
                now = self._clock()
                with self._sessions.begin() as session:
                    proof = self._proof(session, request.subject_proof, "revoke-grant")
                    if proof.target != request.grant_id:
                        raise PermissionDenied(
                            "the subject proof names another grant than the request"
                        )
                    revoked_at = grant_rows.revoke_grant(
                        session, request.grant_id, subject_ref_hex=proof.subject_ref, now=now
                    )
                response = registry_pb2.RevokeGrantResponse()
                response.revoked_at.FromDatetime(revoked_at)
                return response

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover


class TransparencyLogServicer(registry_pb2_grpc.TransparencyLogServiceServicer):
    """Tree heads and proofs for nodes and auditors; they reveal no personal data."""

    def __init__(self, *, keys: RegistryKeys, engine: Any, clock: Clock) -> None:
        self._keys = keys
        self._sessions = session_factory(engine)
        self._clock = clock

    async def GetTreeHead(  # noqa: N802
        self,
        request: registry_pb2.GetTreeHeadRequest,  # noqa: ARG002 - there is one current head
        context: Context,
    ) -> registry_pb2.GetTreeHeadResponse:
        """The signed head of the current tree."""
        async with grpc_errors_async(context):

            def run() -> registry_pb2.GetTreeHeadResponse:
                with self._sessions.begin() as session:
                    head = transparency.tree_head(
                        session, log_key=self._keys.signing, now=self._clock()
                    )
                return registry_pb2.GetTreeHeadResponse(tree_head=head.to_proto())

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def GetInclusionProof(  # noqa: N802
        self, request: registry_pb2.GetInclusionProofRequest, context: Context
    ) -> registry_pb2.GetInclusionProofResponse:
        """The audit path of one entry in a tree of the asked size."""
        async with grpc_errors_async(context):

            def run() -> registry_pb2.GetInclusionProofResponse:
                with reader(self._sessions()) as session:
                    index, path = transparency.inclusion_proof(
                        session, bytes(request.entry_commitment), request.tree_size
                    )
                return registry_pb2.GetInclusionProofResponse(
                    leaf_index=index, tree_size=request.tree_size, path=path
                )

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def GetInclusionProofs(  # noqa: N802
        self, request: registry_pb2.GetInclusionProofsRequest, context: Context
    ) -> registry_pb2.GetInclusionProofsResponse:
        """The audit paths of up to 1,000 entries in one tree of the asked size."""
        async with grpc_errors_async(context):

            def run() -> registry_pb2.GetInclusionProofsResponse:
                with reader(self._sessions()) as session:
                    proofs = transparency.inclusion_proofs(
                        session, [bytes(c) for c in request.entry_commitments], request.tree_size
                    )
                return registry_pb2.GetInclusionProofsResponse(
                    tree_size=request.tree_size,
                    proofs=[
                        registry_pb2.InclusionProof()
                        if proof is None
                        else registry_pb2.InclusionProof(
                            included=True, leaf_index=proof[0], path=proof[1]
                        )
                        for proof in proofs
                    ],
                )

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover

    async def GetConsistencyProof(  # noqa: N802
        self, request: registry_pb2.GetConsistencyProofRequest, context: Context
    ) -> registry_pb2.GetConsistencyProofResponse:
        """The proof that the tree of ``second`` leaves extends the tree of ``first``."""
        async with grpc_errors_async(context):

            def run() -> registry_pb2.GetConsistencyProofResponse:
                with reader(self._sessions()) as session:
                    path = transparency.consistency_proof(session, request.first, request.second)
                return registry_pb2.GetConsistencyProofResponse(path=path)

            return await asyncio.to_thread(run)
        raise AssertionError("unreachable")  # pragma: no cover
