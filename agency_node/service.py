"""The AgencyNodeService servicer: decode, call the answerer, encode.

Only the registry may call a node: the caller's member id is read from its
mutual-TLS certificate (never from a request field) and must be the
registry's. Domain errors become gRPC statuses in one place,
:func:`credence.status.grpc_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import grpc
from cryptography import x509

from agency_node.answering import Answerer
from agency_node.contests import ContestDesk
from agency_node.manifest_holder import ManifestHolder
from credence.errors import PermissionDenied
from credence.status import grpc_errors
from credence.tls import peer_member_id
from credence.v1 import agency_pb2, agency_pb2_grpc


class AgencyNodeServicer(agency_pb2_grpc.AgencyNodeServiceServicer):
    """Thin gRPC layer over :class:`Answerer` and :class:`ContestDesk`."""

    def __init__(
        self,
        *,
        answerer: Answerer,
        contests: ContestDesk,
        manifests: ManifestHolder,
        ca_cert: x509.Certificate,
        clock: Callable[[], datetime],
    ) -> None:
        self._answerer = answerer
        self._contests = contests
        self._manifests = manifests
        self._ca_cert = ca_cert
        self._clock = clock

    def _require_registry(self, context: grpc.ServicerContext) -> None:
        manifest = self._manifests.current
        caller = peer_member_id(context, self._ca_cert, self._clock(), manifest.revoked_serials)
        if caller != manifest.registry.member_id:
            raise PermissionDenied(
                f"only the registry may query this node; {caller!r} is not the registry"
            )

    def AnswerQuery(  # noqa: N802 - gRPC method name
        self, request: agency_pb2.AnswerQueryRequest, context: grpc.ServicerContext
    ) -> agency_pb2.AnswerQueryResponse:
        """Answer one signed query."""
        with grpc_errors(context):
            self._require_registry(context)
            answer = self._answerer.answer(request.query)
            return agency_pb2.AnswerQueryResponse(answer=answer.to_proto())
        raise AssertionError("unreachable")  # pragma: no cover - grpc_errors aborts

    def AnswerBatch(  # noqa: N802 - gRPC method name
        self,
        request_iterator: Iterator[agency_pb2.AnswerBatchRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[agency_pb2.AnswerBatchResponse]:
        """Answer each signed batch of the stream under one signature."""
        with grpc_errors(context):
            self._require_registry(context)
            for request in request_iterator:
                if not context.is_active():
                    return  # the caller gave up or its deadline passed: stop working
                answers = self._answerer.answer_batch(request.batch)
                yield agency_pb2.AnswerBatchResponse(answers=answers.to_proto())

    def FileContest(  # noqa: N802 - gRPC method name
        self, request: agency_pb2.FileContestRequest, context: grpc.ServicerContext
    ) -> agency_pb2.FileContestResponse:
        """Flag the contested records disputed and return a signed receipt."""
        with grpc_errors(context):
            self._require_registry(context)
            receipt = self._contests.file(request.contest.SerializeToString())
            return agency_pb2.FileContestResponse(receipt=receipt.to_proto())
        raise AssertionError("unreachable")  # pragma: no cover - grpc_errors aborts
