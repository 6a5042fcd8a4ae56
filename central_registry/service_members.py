"""The registry's members' port: ``RegistryService``, for approved members only.

The caller's member id comes from its re-verified mutual-TLS certificate,
never from a request field, and a member that is not active is refused. Each
handler decodes, calls the domain logic (:mod:`central_registry.grants`,
:mod:`central_registry.lookups`, :mod:`central_registry.contests`) and
encodes; :mod:`credence.rpc.handlers` maps domain errors to gRPC statuses and
runs blocking work off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor
from datetime import UTC
from typing import Any

from cryptography import x509

from central_registry import alarms, contests, grants
from central_registry.config import RegistryConfig
from central_registry.grants import GrantPolicy
from central_registry.keyring import RegistryKeys
from central_registry.lookups import Lookups
from central_registry.manifest_cache import ManifestCache
from central_registry.status_publisher import StatusListPublisher
from credence.clock import Clock
from credence.envelope import Envelope
from credence.errors import NotFound, PermissionDenied
from credence.rpc import handlers
from credence.rpc.handlers import Context
from credence.rpc.tls import peer_member_id
from credence.storage import session_factory
from credence.v1 import registry_pb2, registry_pb2_grpc


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

    #: Blocking handlers run in the event loop's default pool.
    executor: Executor | None = None

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

    @handlers.unary
    async def GetManifest(
        self,
        request: registry_pb2.GetManifestRequest,  # noqa: ARG002 - the current one is all there is
        context: Context,
    ) -> registry_pb2.GetManifestResponse:
        """The current signed manifest."""
        self._members.caller(context)
        manifest = self._manifests.current()
        return registry_pb2.GetManifestResponse(manifest=manifest.envelope.to_proto())

    @handlers.blocking
    def GetStatusList(
        self,
        request: registry_pb2.GetStatusListRequest,  # noqa: ARG002 - the current one is all there is
        context: Context,
    ) -> registry_pb2.GetStatusListResponse:
        """The current signed revocation list of grants (``statuslist+jwt``)."""
        self._members.caller(context)
        return registry_pb2.GetStatusListResponse(status_list_token=self._status_lists.current())

    @handlers.blocking
    def RegisterBinding(
        self, request: registry_pb2.RegisterBindingRequest, context: Context
    ) -> registry_pb2.RegisterBindingResponse:
        """An identity-verifying member binds a subject's personal key."""
        caller = self._members.caller(context)
        with self._sessions.begin() as session:
            binding = grants.register_binding(
                session,
                request.binding_token,
                caller=caller,
                policy=self._policy(),
                now=self._clock(),
            )
        return registry_pb2.RegisterBindingResponse(subject_kid=binding.subject_key.kid)

    @handlers.blocking
    def IssueConsent(
        self, request: registry_pb2.IssueConsentRequest, context: Context
    ) -> registry_pb2.IssueConsentResponse:
        """Countersign a subject's signed consent request, once, for the requester it names."""
        caller = self._members.caller(context)
        with self._sessions.begin() as session:
            token, grant_id = grants.issue_consent(
                session,
                request.consent_request_token,
                request.binding_token,
                caller=caller,
                registry_key=self._keys.signing,
                policy=self._policy(),
                now=self._clock(),
            )
        return registry_pb2.IssueConsentResponse(consent_token=token, grant_id=grant_id)

    @handlers.blocking
    def RegisterMandate(
        self, request: registry_pb2.RegisterMandateRequest, context: Context
    ) -> registry_pb2.RegisterMandateResponse:
        """Register the calling authority's mandate."""
        caller = self._members.caller(context)
        with self._sessions.begin() as session:
            grant_id = grants.register_mandate(
                session,
                request.mandate_token,
                caller=caller,
                policy=self._policy(),
                now=self._clock(),
            )
        return registry_pb2.RegisterMandateResponse(grant_id=grant_id)

    @handlers.unary
    async def RequestVerdict(
        self, request: registry_pb2.RequestVerdictRequest, context: Context
    ) -> registry_pb2.RequestVerdictResponse:
        """One subject, one signed verdict."""
        return await self._lookups.request_verdict(self._members.caller(context), request)

    @handlers.stream
    async def ScreenBatch(
        self,
        request_iterator: AsyncIterator[registry_pb2.ScreenBatchRequest],
        context: Context,
    ) -> AsyncGenerator[registry_pb2.ScreenBatchResponse, None]:
        """Stream of subjects in, verdicts out as each message is done (up to 4 at once)."""
        caller = self._members.caller(context)
        ready: asyncio.Queue[asyncio.Task[registry_pb2.ScreenBatchResponse] | None] = asyncio.Queue(
            maxsize=4
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

    @handlers.blocking
    def ReportContestOutcome(
        self, request: registry_pb2.ReportContestOutcomeRequest, context: Context
    ) -> registry_pb2.ReportContestOutcomeResponse:
        """An agency reports how it resolved a contest; the subject sees it."""
        caller = self._members.caller(context)
        resolution = Envelope.from_proto(request.resolution)
        with self._sessions.begin() as session:
            contests.resolve(session, resolution, caller=caller, manifest=self._manifests.current())
        return registry_pb2.ReportContestOutcomeResponse()

    @handlers.blocking
    def ReportAlarm(
        self, request: registry_pb2.ReportAlarmRequest, context: Context
    ) -> registry_pb2.ReportAlarmResponse:
        """An agency node reports an alarm its log audit raised, for the operator's console."""
        caller = self._members.caller(context)
        if self._manifests.current().active_member(caller).role_name != "agency":
            raise PermissionDenied(f"{caller!r} is not an agency: only agency nodes audit the log")
        with self._sessions.begin() as session:
            alarms.record_alarm(
                session, caller, kind=request.kind, count=request.count,
                tree_size=request.tree_size,
                raised_at=request.raised_at.ToDatetime(tzinfo=UTC), now=self._clock(),
            )  # fmt: skip
        return registry_pb2.ReportAlarmResponse()
