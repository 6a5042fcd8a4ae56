"""The AgencyNodeService servicer (grpc.aio): decode, call the answerer, encode.

Only the registry may call a node: the caller's member id is read from its
mutual-TLS certificate (never from a request field) and must be the
registry's. Answering is synchronous database and signing work: it runs in
the node's bounded answer pool (the servicer's ``executor``), never on the
event loop, so streams held open by peers (health watches, slow readers)
cannot take the threads that answer queries. The handlers are made by
:mod:`credence.rpc.handlers`, which maps domain errors to gRPC statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor

from cryptography import x509

from agency_node.answering import Answerer
from agency_node.contests import ContestDesk
from agency_node.log_gate import LogGate
from agency_node.manifest_holder import ManifestHolder
from agency_node.recovery import RecoveryDesk
from agency_node.review_notices import ReviewDesk
from agency_node.subject_records import RecordDesk
from credence.clock import Clock
from credence.errors import PermissionDenied
from credence.rpc import handlers
from credence.rpc.handlers import Context
from credence.rpc.tls import peer_member_id
from credence.v1 import agency_pb2, agency_pb2_grpc, subject_records_pb2


class AgencyNodeServicer(agency_pb2_grpc.AgencyNodeServiceServicer):
    """Thin gRPC layer over the answerer, the contest, record, recovery and review desks."""

    def __init__(
        self,
        *,
        answerer: Answerer,
        contests: ContestDesk,
        records: RecordDesk,
        recoveries: RecoveryDesk,
        reviews: ReviewDesk,
        manifests: ManifestHolder,
        ca_cert: x509.Certificate,
        clock: Clock,
        executor: Executor,
        gate: LogGate | None = None,
    ) -> None:
        self._answerer = answerer
        self._gate = gate
        self._contests = contests
        self._records = records
        self._recoveries = recoveries
        self._reviews = reviews
        self._manifests = manifests
        self._ca_cert = ca_cert
        self._clock = clock
        self.executor = executor

    def _require_registry(self, context: Context) -> None:
        manifest = self._manifests.current()
        caller = peer_member_id(context, self._ca_cert, self._clock(), manifest.revoked_serials)
        if caller != manifest.registry.member_id:
            raise PermissionDenied(
                f"only the registry may query this node; {caller!r} is not the registry"
            )

    def _require_witnessed_log(self) -> None:
        if self._gate is not None:
            self._gate.check(self._clock())

    @handlers.blocking
    def AnswerQuery(
        self, request: agency_pb2.AnswerQueryRequest, context: Context
    ) -> agency_pb2.AnswerQueryResponse:
        """Answer one signed query."""
        self._require_registry(context)
        self._require_witnessed_log()
        answer = self._answerer.answer(request.query)
        return agency_pb2.AnswerQueryResponse(answer=answer.to_proto())

    @handlers.stream
    async def AnswerBatch(
        self,
        request_iterator: AsyncIterator[agency_pb2.AnswerBatchRequest],
        context: Context,
    ) -> AsyncGenerator[agency_pb2.AnswerBatchResponse, None]:
        """Answer each signed batch of the stream under one signature.

        A caller that gives up or passes its deadline cancels the stream, and
        with it the wait for the batch in progress.
        """
        self._require_registry(context)
        loop = asyncio.get_running_loop()
        async for request in request_iterator:
            # A stream outlives a checkpoint: every batch needs a recent one.
            self._require_witnessed_log()
            answers = await loop.run_in_executor(
                self.executor, self._answerer.answer_batch, request.batch
            )
            yield agency_pb2.AnswerBatchResponse(answers=answers.to_proto())

    @handlers.blocking
    def FileContest(
        self, request: agency_pb2.FileContestRequest, context: Context
    ) -> agency_pb2.FileContestResponse:
        """Flag the contested records disputed and return a signed receipt."""
        self._require_registry(context)
        receipt = self._contests.file(request.contest.SerializeToString())
        return agency_pb2.FileContestResponse(receipt=receipt.to_proto())

    @handlers.blocking
    def ListSubjectRecords(
        self, request: subject_records_pb2.ListSubjectRecordsRequest, context: Context
    ) -> subject_records_pb2.ListSubjectRecordsResponse:
        """The subject's records, sealed to the key its proof names; only the registry relays."""
        self._require_registry(context)
        sealed = self._records.records(request)
        return subject_records_pb2.ListSubjectRecordsResponse(sealed=sealed.to_proto())

    @handlers.blocking
    def RecoverMasks(
        self, request: agency_pb2.RecoverMasksRequest, context: Context
    ) -> agency_pb2.RecoverMasksResponse:
        """This node's masks with the agencies the registry names missing, signed; or a refusal."""
        self._require_registry(context)
        share = self._recoveries.recover(request.request)
        return agency_pb2.RecoverMasksResponse(share=share.to_proto())

    @handlers.blocking
    def NotifyReview(
        self, request: agency_pb2.NotifyReviewRequest, context: Context
    ) -> agency_pb2.NotifyReviewResponse:
        """Keep the registry's notice that a subject asked for review of a verdict."""
        self._require_registry(context)
        answered = self._reviews.notify(request.notice.SerializeToString())
        return agency_pb2.NotifyReviewResponse(answered_query=answered)
