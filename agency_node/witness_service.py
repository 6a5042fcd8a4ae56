"""The node's WitnessService (grpc.aio): the tlog-witness add-checkpoint call over gRPC.

Only the registry may call it: the node server's interceptor admits no other
member to any method but health. A conflict (HTTP 409) carries the witness's
size in the ``tlog-size`` trailer, as the 409 body would, so the registry can
retry from it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from agency_node.witness import NodeWitness
from credence.rpc import handlers
from credence.rpc.handlers import Context
from credence.transparency.cosignature import SizeConflict
from credence.v1 import witness_pb2, witness_pb2_grpc

#: The trailer that carries the witness's size with a conflict (HTTP 409's body).
SIZE_TRAILER = "tlog-size"
WITNESS_SERVICE = witness_pb2.DESCRIPTOR.services_by_name["WitnessService"].full_name


class WitnessServicer(witness_pb2_grpc.WitnessServiceServicer):
    """Thin gRPC layer over :class:`NodeWitness`; blocking work runs in ``executor``."""

    def __init__(self, witness: NodeWitness, executor: Executor) -> None:
        self._witness = witness
        self.executor = executor

    @handlers.unary
    async def AddCheckpoint(
        self, request: witness_pb2.AddCheckpointRequest, context: Context
    ) -> witness_pb2.AddCheckpointResponse:
        """Cosign the checkpoint in the body, or refuse saying why."""
        loop = asyncio.get_running_loop()
        try:
            line = await loop.run_in_executor(
                self.executor, self._witness.add_checkpoint, bytes(request.body)
            )
        except SizeConflict as exc:
            context.set_trailing_metadata(((SIZE_TRAILER, str(exc.size)),))
            raise
        return witness_pb2.AddCheckpointResponse(cosignatures=line)
