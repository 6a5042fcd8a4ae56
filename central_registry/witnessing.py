"""The registry's side of witnessing: offer each checkpoint, publish it once a quorum cosigned.

Every interval the registry signs the current checkpoint and sends a C2SP
``tlog-witness`` add-checkpoint request to every active witness in the
manifest, in parallel, each under a deadline, over the mTLS channels of the
fan-out. The consistency proof starts from the size that witness last
cosigned (learnt from its answers, or from the size a 409-style conflict
names, then retried once). Each returned cosignature is verified under the
witness's key from the manifest; once the manifest's quorum cosigned, the
checkpoint is published with every cosignature gathered and served by
``GetTreeHead`` (``cosigned_checkpoint``, beside the current tree's
``checkpoint``) and the HTTP side's ``/checkpoint``.

What a witness refuses is logged with its reason: a refusal that names an
inconsistency is evidence that someone showed it another view of the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio
from sqlalchemy import Engine

from central_registry import transparency
from central_registry.fanout import AgencyTarget, FanOut
from central_registry.manifest_cache import ManifestCache
from credence.clock import Clock
from credence.errors import CredenceError
from credence.keys import SigningKey
from credence.manifest import TrustedManifest
from credence.storage import session_factory
from credence.transparency.checkpoint import log_origin, parse_checkpoint
from credence.transparency.cosignature import (
    AddCheckpointRequest,
    format_add_checkpoint,
    open_cosignature,
    response_signatures,
)
from credence.transparency.note import NoteSignature, add_signatures, parse_note
from credence.transparency.witness_policy import (
    QuorumNotMet,
    policy_from_manifest,
    verify_cosigned,
    witness_name,
)
from credence.v1 import witness_pb2

_log = logging.getLogger(__name__)

_ADD_CHECKPOINT = "/credence.v1.WitnessService/AddCheckpoint"
#: The trailer a witness's conflict carries its size in (see agency_node.witness_service).
SIZE_TRAILER = "tlog-size"


@dataclass(frozen=True)
class RoundResult:
    """What one witnessing round got: the checkpoint's size, who cosigned, who refused why."""

    size: int
    cosigners: tuple[str, ...]
    refusals: dict[str, str]
    published: bool


class Witnessing:
    """Gathers cosignatures for the registry's checkpoints and holds the latest cosigned one.

    Bound to the event loop of the fan-out it uses.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        log_key: SigningKey,
        federation_id: str,
        manifests: ManifestCache,
        fanout: FanOut,
        clock: Clock,
        deadline_seconds: float = 5.0,
    ) -> None:
        self._sessions = session_factory(engine)
        self._log_key = log_key
        self._origin = log_origin(federation_id)
        self._manifests = manifests
        self._fanout = fanout
        self._clock = clock
        self._deadline = deadline_seconds
        #: Each witness's last cosigned size, as its answers told us.
        self._sizes: dict[str, int] = {}
        self._latest: bytes = b""

    def latest(self) -> bytes:
        """The latest checkpoint note cosigned by a quorum, with its cosignatures (or empty)."""
        return self._latest

    def served(self, current: Callable[[], bytes]) -> bytes:
        """What ``/checkpoint`` serves: the latest cosigned checkpoint.

        A federation whose manifest asks for no cosignature (no witnesses, or a
        quorum of 0) serves ``current()``, the checkpoint of the current tree.
        """
        if self._latest and self._manifests.current().witness_quorum > 0:
            return self._latest
        return current()

    def _checkpoint(self) -> bytes:
        with self._sessions.begin() as session:
            return transparency.tree_head(
                session, log_key=self._log_key, origin=self._origin, now=self._clock()
            )

    def _proof(self, old: int, new: int) -> list[bytes]:
        with self._sessions() as session:
            return transparency.consistency_proof(session, old, new) if 0 < old < new else []

    async def run_round(self) -> RoundResult:
        """Offer the current checkpoint to every witness; publish it on a quorum."""
        loop = asyncio.get_running_loop()
        manifest = self._manifests.current()
        policy = policy_from_manifest(manifest)
        note = await loop.run_in_executor(None, self._checkpoint)
        size = parse_checkpoint(parse_note(note).text).size
        witnesses = [m for m in manifest.witnesses if m.endpoint]
        outcomes = await asyncio.gather(
            *(self._ask_safely(manifest, member.member_id, note, size) for member in witnesses)
        )
        lines = [line for line, _ in outcomes if line is not None]
        refusals = {
            member.member_id: reason
            for member, (_, reason) in zip(witnesses, outcomes, strict=True)
            if reason is not None
        }
        for member_id, reason in refusals.items():
            _log.warning("witness %s refused checkpoint of size %d: %s", member_id, size, reason)
        cosigned = add_signatures(note, lines) if lines else note
        try:
            result = verify_cosigned(cosigned, policy, now=self._clock())
        except QuorumNotMet as exc:
            _log.warning("checkpoint of size %d not published: %s", size, exc)
            return RoundResult(size, (), refusals, published=False)
        self._latest = cosigned
        return RoundResult(size, result.cosigners, refusals, published=True)

    async def _ask_safely(
        self, manifest: TrustedManifest, member_id: str, note: bytes, size: int
    ) -> tuple[NoteSignature | None, str | None]:
        """As :meth:`_ask`; one witness's trouble never costs the others their round."""
        try:
            return await self._ask(manifest, member_id, note, size)
        except CredenceError as exc:
            return None, str(exc)

    async def _ask(
        self, manifest: TrustedManifest, member_id: str, note: bytes, size: int
    ) -> tuple[NoteSignature | None, str | None]:
        """One witness's cosignature, or why there is none."""
        member = manifest.members[member_id]
        if member.witness_key is None:
            return None, "no witness key"
        target = AgencyTarget(member_id, member.endpoint, manifest.member_keys(member_id))
        end = time.monotonic() + self._deadline
        for _attempt in range(2):
            old = min(self._sizes.get(member_id, 0), size)
            proof = await asyncio.get_running_loop().run_in_executor(None, self._proof, old, size)
            body = format_add_checkpoint(AddCheckpointRequest(old, tuple(proof), note))
            # The channel per attempt: a lookup may have replaced one stuck in reconnect backoff.
            call = self._fanout.channel(target).unary_unary(
                _ADD_CHECKPOINT,
                request_serializer=witness_pb2.AddCheckpointRequest.SerializeToString,
                response_deserializer=witness_pb2.AddCheckpointResponse.FromString,
            )
            try:
                response = await call(
                    witness_pb2.AddCheckpointRequest(body=body),
                    timeout=max(0.01, end - time.monotonic()),
                )
            except grpc.aio.AioRpcError as exc:
                held = _conflict_size(exc)
                if held is not None and held != old and held <= size:
                    self._sizes[member_id] = held
                    continue
                return None, f"{exc.code().name}: {exc.details()}"
            return self._accept(manifest, member_id, note, bytes(response.cosignatures), size)
        return None, "the witness's size kept changing; retry next round"

    def _accept(
        self, manifest: TrustedManifest, member_id: str, note: bytes, body: bytes, size: int
    ) -> tuple[NoteSignature | None, str | None]:
        name = witness_name(manifest.federation_id, member_id)
        key = manifest.members[member_id].witness_key
        assert key is not None  # checked by the caller
        text = parse_note(note).text
        try:
            for line in response_signatures(note, body):
                if line.name == name:
                    open_cosignature(text, line, name, key)
                    self._sizes[member_id] = size
                    return line, None
        except CredenceError as exc:
            return None, f"its cosignature does not verify: {exc}"
        return None, "it answered with no cosignature of its key"


def _conflict_size(exc: grpc.aio.AioRpcError) -> int | None:
    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == SIZE_TRAILER and isinstance(value, str) and value.isdigit():
            return int(value)
    return None


async def witness_periodically(
    witnessing: Witnessing, interval_seconds: float, on_round: Callable[[RoundResult], None]
) -> None:
    """Run a round every interval until cancelled; a failed round is logged and retried."""
    while True:
        try:
            on_round(await witnessing.run_round())
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("witnessing round failed; will retry")
        await asyncio.sleep(interval_seconds)
