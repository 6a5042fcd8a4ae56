"""The node as a witness of the registry's log, and the watch on its cosigned checkpoints.

:class:`NodeWitness` decides the registry's add-checkpoint requests (C2SP
``tlog-witness``, :func:`credence.transparency.cosignature.witness_check`)
against the last checkpoint it cosigned, kept in the node's database and
updated in the same transaction as the check, so two requests can never
roll it back; :mod:`agency_node.witness_service` carries it over gRPC, for
the registry only.

:class:`CheckpointWatcher` runs with the manifest refresh: it fetches the
registry's latest quorum-cosigned checkpoint, verifies the quorum under the
manifest's witness keys and its consistency with what this node's witness
cosigned, and tells the :class:`~agency_node.log_gate.LogGate`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from agency_node.log_gate import LogGate
from agency_node.manifest_holder import ManifestHolder
from agency_node.models import WitnessedCheckpoint
from credence.clock import Clock
from credence.errors import CredenceError, Unavailable
from credence.keys import SigningKey
from credence.rpc.tls import RECONNECT_OPTIONS
from credence.storage import immediate_writer, session_factory
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, log_origin
from credence.transparency.cosignature import (
    WitnessKey,
    WitnessState,
    parse_add_checkpoint,
    signature_line,
    witness_check,
)
from credence.transparency.log_audit import LogIdentity
from credence.transparency.witness_policy import (
    policy_from_manifest,
    verify_cosigned,
    witness_name,
)
from credence.v1 import registry_pb2, registry_pb2_grpc

_log = logging.getLogger(__name__)


class NodeWitness:
    """Cosigns the registry's checkpoints that extend the last one it cosigned."""

    def __init__(
        self,
        *,
        member_id: str,
        key: SigningKey,
        engine: Engine,
        manifests: ManifestHolder,
        clock: Clock,
    ) -> None:
        self._member_id = member_id
        self._key = key
        self._sessions = session_factory(immediate_writer(engine))
        self._manifests = manifests
        self._clock = clock

    def add_checkpoint(self, body: bytes) -> bytes:
        """Decide one add-checkpoint request body; the cosignature line on success.

        Raises:
            SizeConflict: the request's old size is not this witness's (409), or a
                checkpoint of its size with another root (a split view).
            BadConsistencyProof: the proof does not link the two checkpoints (422).
            LogSignatureRefused: not signed by the manifest's log key (403).
            UnknownLog: another federation's log (404).
            InvalidInput: a malformed body (400).
            Unavailable: a concurrent first request won the race; retry.
        """
        request = parse_add_checkpoint(body)
        manifest = self._manifests.current()
        log = LogIdentity.from_manifest(manifest)
        witness = WitnessKey(witness_name(manifest.federation_id, self._member_id), self._key)
        try:
            with self._sessions.begin() as session:
                row = session.get(WitnessedCheckpoint, log.origin, with_for_update=True)
                state = None if row is None else WitnessState(log.origin, row.tree_size, row.root)
                now = self._clock()
                new, line = witness_check(state, request, log=log, witness=witness, now=now)
                if row is None:
                    row = WitnessedCheckpoint(origin=log.origin)
                    session.add(row)
                row.tree_size, row.root = new.size, new.root_hash
                row.note, row.cosigned_at = request.checkpoint_note, now
        except IntegrityError:
            raise Unavailable(
                "another first checkpoint was cosigned at the same time: retry"
            ) from None
        return signature_line(line)

    def state(self, origin: str) -> WitnessState | None:
        """The last checkpoint this witness cosigned for ``origin``."""
        with self._sessions() as session:
            row = session.get(WitnessedCheckpoint, origin)
            return None if row is None else WitnessState(origin, row.tree_size, row.root)


class CheckpointWatcher:
    """Verifies the registry's latest cosigned checkpoint and keeps the gate told."""

    def __init__(
        self,
        *,
        gate: LogGate,
        manifests: ManifestHolder,
        witness: NodeWitness | None,
        fetch: Callable[[], registry_pb2.GetTreeHeadResponse],
        consistency: Callable[[int, int], list[bytes]],
        clock: Clock,
        on_change: Callable[[str | None], None] = lambda _reason: None,
    ) -> None:
        self._gate = gate
        self._manifests = manifests
        self._witness = witness
        self._fetch = fetch
        self._consistency = consistency
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._last: str | None = ""

    def run_once(self) -> str | None:
        """Fetch and check once; returns the gate's refusal afterwards (None: answering)."""
        with self._lock:
            try:
                self._check(self._fetch())
            except grpc.RpcError as exc:
                self._gate.fetch_problem(f"the registry's log is unreachable ({exc.code().name})")
            except CredenceError as exc:
                self._gate.fetch_problem(str(exc))
            reason = self._gate.refusal(self._clock())
            if reason != self._last:
                # Health has no room for a reason: the node's log says why.
                if reason is None:
                    _log.info("answering: the registry's log is witnessed")
                else:
                    _log.warning("answering no queries (Health NOT_SERVING): %s", reason)
                self._last = reason
            self._on_change(reason)
            return reason

    def _check(self, response: registry_pb2.GetTreeHeadResponse) -> None:
        if not response.cosigned_checkpoint:
            raise Unavailable("the registry has published no cosigned checkpoint yet")
        manifest = self._manifests.current()
        now = self._clock()
        cosigned = verify_cosigned(
            bytes(response.cosigned_checkpoint), policy_from_manifest(manifest), now=now
        )
        self._check_against_own(cosigned.checkpoint, log_origin(manifest.federation_id))
        self._gate.saw_cosigned(cosigned.checkpoint, cosigned.cosigned_at or now)

    def _check_against_own(self, checkpoint: Checkpoint, origin: str) -> None:
        own = self._witness.state(origin) if self._witness is not None else None
        if own is None or own.size == 0:
            return
        (first, first_root), (second, second_root) = sorted(
            [(own.size, own.root_hash), (checkpoint.size, checkpoint.root_hash)]
        )
        try:
            proof = self._consistency(first, second) if first != second else []
            merkle.verify_consistency(first, second, first_root, second_root, proof)
        except CredenceError as exc:
            reason = (
                f"split view: the registry's cosigned checkpoint of size {checkpoint.size} is "
                f"inconsistent with the checkpoint of size {own.size} this node's witness "
                f"cosigned ({exc})"
            )
            _log.error("%s", reason)
            self._gate.inconsistent(reason)


class TreeHeads:
    """The registry's log service as the watcher needs it (the public port, over TLS)."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials) -> None:
        self._channel = grpc.secure_channel(address, credentials, options=RECONNECT_OPTIONS)
        self._stub = registry_pb2_grpc.TransparencyLogServiceStub(self._channel)

    def fetch(self) -> registry_pb2.GetTreeHeadResponse:
        """The registry's current and latest cosigned checkpoints."""
        response: registry_pb2.GetTreeHeadResponse = self._stub.GetTreeHead(
            registry_pb2.GetTreeHeadRequest(), timeout=10
        )
        return response

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The registry's consistency proof between two sizes (verified by the caller)."""
        response = self._stub.GetConsistencyProof(
            registry_pb2.GetConsistencyProofRequest(first=first, second=second), timeout=10
        )
        return [bytes(hash_) for hash_ in response.path]

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class CheckpointThread(threading.Thread):
    """Runs the watcher now, then every interval (every second while the gate is closed)."""

    def __init__(
        self,
        watcher: CheckpointWatcher,
        interval_seconds: float,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="node-checkpoints", daemon=True)
        self._watcher = watcher
        self._on_stop = on_stop
        self._interval = interval_seconds
        self.stopping = threading.Event()

    def run(self) -> None:
        """Check until stopped; a failed pass is logged and retried."""
        while not self.stopping.is_set():
            try:
                refused = self._watcher.run_once() is not None
            except Exception:
                _log.exception("cosigned checkpoint check failed; will retry")
                refused = True
            self.stopping.wait(min(self._interval, 1.0) if refused else self._interval)
        self._on_stop()
