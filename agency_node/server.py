"""Starting and stopping a node: files to objects, the gRPC server, shutdown.

``start_node`` reads the data directory once (config, keys, certificates, the
manifest verified against the pinned root keys, the database at the current
schema) and starts a grpc.aio server, on an event loop of its own thread, over
mutual TLS with health checking, reflection, a revocation check on every call
and a message size limit. Answering runs in a bounded pool of threads (see
:mod:`agency_node.service`), so streams cannot hold the threads that answer.
Only the registry may call the node's service and reflection; any member may
check its health. Every peer's calls in flight, and its ``Health/Watch``
streams, are limited (:mod:`credence.rpc.peer_limits`). ``serve`` runs it until
SIGTERM or SIGINT, then stops accepting and gives in-flight answers the
configured grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from agency_node import config as node_config
from agency_node import database
from agency_node.agreement import PairKeys
from agency_node.answering import Answerer
from agency_node.audit import (
    AUDIT_SERVICE,
    AlarmReporter,
    AuditThread,
    LogAuditor,
    tile_reader,
)
from agency_node.contests import ContestDesk
from agency_node.disputes import OverdueWatch
from agency_node.importer import STAGING_DIR_NAME, purge_expired, recover_interrupted_import
from agency_node.log_gate import LogGate
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.metrics import NodeMetrics, start_metrics
from agency_node.recovery import RecoveryDesk
from agency_node.review_notices import ReviewDesk
from agency_node.service import AgencyNodeServicer
from agency_node.status_list_holder import StatusListHolder
from agency_node.subject_records import RecordDesk
from agency_node.witness import CheckpointThread, CheckpointWatcher, NodeWitness, TreeHeads
from agency_node.witness_service import WITNESS_SERVICE, WitnessServicer
from credence import payloads
from credence.blind.masks import load_agreement_key
from credence.clock import Clock, utc_now
from credence.envelope import Envelope
from credence.errors import FailedPrecondition, PermissionDenied
from credence.keys import load_signing_key
from credence.ops import tracing
from credence.ops.metrics import RpcMetricsInterceptor
from credence.pki import load_certificate_pem
from credence.rpc.decoding import AsyncDecodingInterceptor
from credence.rpc.peer_limits import (
    HEALTH_WATCH,
    ConcurrencyLimit,
    PeerLimitInterceptor,
    member_of_peer,
)
from credence.rpc.reflection import enable_reflection
from credence.rpc.tls import (
    RECONNECT_OPTIONS,
    AsyncRevocationInterceptor,
    channel_credentials,
    server_credentials,
)
from credence.transparency.log_audit import LogClient
from credence.v1 import (
    agency_pb2,
    agency_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    witness_pb2_grpc,
)

_log = logging.getLogger(__name__)

SERVICE_NAME = agency_pb2.DESCRIPTOR.services_by_name["AgencyNodeService"].full_name
#: Methods any member may call; everything else (the service, reflection) is the registry's.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", HEALTH_WATCH})
# A peer that opens a connection and stalls its TLS handshake is dropped after this.
HANDSHAKE_TIMEOUT_MS = 10_000

_T = TypeVar("_T")


def _read(config: node_config.NodeConfig, name: str, hint: str) -> bytes:
    path = config.path(name)
    if not path.is_file():
        raise FailedPrecondition(f"{path} is missing: {hint}")
    return path.read_bytes()


class Housekeeping(threading.Thread):
    """Purges records past rehabilitation and forgets expired query ids, on a schedule.

    Given the manifest's contest deadline, each pass also warns about contests
    newly overdue (:class:`OverdueWatch`).
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        interval_seconds: float,
        contest_deadline: Callable[[], timedelta] | None = None,
    ) -> None:
        super().__init__(name="node-housekeeping", daemon=True)
        self._sessions = database.session_factory(engine)
        self._clock = clock
        self._interval = interval_seconds
        self._overdue = (
            None if contest_deadline is None else OverdueWatch(self._sessions, contest_deadline)
        )
        self.stopping = threading.Event()

    def run_once(self) -> tuple[int, int]:
        """One pass; returns (records purged, query ids forgotten)."""
        now = self._clock()
        with self._sessions.begin() as session:
            purged = purge_expired(session, now)
            forgotten = database.prune_seen_queries(session, now, payloads.CLOCK_SKEW)
        if purged or forgotten:
            _log.info("purged %d expired records, forgot %d query ids", purged, forgotten)
        if self._overdue is not None:
            self._overdue.check(now)
        return purged, forgotten

    def run(self) -> None:
        """Run a pass now and then every interval until stopped."""
        while not self.stopping.is_set():
            try:
                self.run_once()
            except Exception:
                _log.exception("housekeeping pass failed; will retry")
            self.stopping.wait(self._interval)


class ManifestRefresher(threading.Thread):
    """Fetches the registry's manifest on a schedule and adopts a newer one.

    Members join, are suspended and rotate keys between node restarts; a node
    learns of it from the registry's signed manifest, verified against the one
    it holds. A registry that is down only delays the next update.
    """

    def __init__(
        self,
        holder: ManifestHolder,
        *,
        registry: str,
        credentials: grpc.ChannelCredentials,
        clock: Clock,
        interval_seconds: float,
        status_lists: StatusListHolder | None = None,
    ) -> None:
        super().__init__(name="node-manifest", daemon=True)
        self._holder = holder
        self._status_lists = status_lists
        self._channel = grpc.secure_channel(registry, credentials, options=RECONNECT_OPTIONS)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._clock = clock
        self._interval = interval_seconds
        self.stopping = threading.Event()

    def run_once(self) -> bool:
        """Fetch once (and the revocation list); returns whether a newer manifest was adopted."""
        response = self._stub.GetManifest(
            registry_pb2.GetManifestRequest(have_version=self._holder.current().version), timeout=5
        )
        adopted = self._holder.offer(Envelope.from_proto(response.manifest), self._clock())
        if self._status_lists is not None:
            self._status_lists.fetch(self._stub, self._clock())
        return adopted

    def run(self) -> None:
        """Fetch every interval until stopped (the revocation list at once: consents wait on it)."""
        if self._status_lists is not None:
            try:
                self._status_lists.fetch(self._stub, self._clock())
            except Exception as exc:  # a registry that is down: the loop retries
                _log.warning("revocation list: first fetch failed (%s)", exc)
        while not self.stopping.wait(self._interval):
            try:
                self.run_once()
            except grpc.RpcError as exc:
                _log.warning("manifest refresh: registry unreachable (%s)", exc.code().name)
            except Exception:
                _log.exception("manifest refresh failed; keeping version %d",
                               self._holder.current().version)  # fmt: skip
        self._channel.close()


class ServerLoop:
    """The event loop the node's grpc.aio server runs on, in a thread of its own.

    The rest of the node (housekeeping, manifest refresh, the log audit, a
    process's signal handling) stays in plain threads and reaches the server
    through :meth:`run` and :meth:`call_soon`.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="node-grpc-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        """Run ``coroutine`` on the loop and wait up to ``timeout`` seconds for its result.

        Raises:
            TimeoutError: it did not finish in time.
        """
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    def call_soon(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Start ``coroutine`` on the loop without waiting (from any thread).

        Once the loop has stopped the coroutine is discarded, never left unawaited.
        """
        if self.loop.is_closed() or not self.loop.is_running():
            coroutine.close()
            return
        asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@dataclass
class RunningNode:
    """A started node server."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    engine: Engine
    grace_seconds: float
    housekeeping: Housekeeping
    refresher: ManifestRefresher | None = None
    auditor: AuditThread | None = None
    server_loop: ServerLoop | None = None
    answer_pool: ThreadPoolExecutor | None = None
    checkpoints: CheckpointThread | None = None
    gate: LogGate | None = None
    #: ``/metrics``, unless ``metrics_listen`` is empty.
    metrics: NodeMetrics | None = None

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight calls finish within ``grace``, close the database."""
        grace = self.grace_seconds if grace is None else grace

        async def stop_server() -> None:
            for service in (SERVICE_NAME, ""):
                await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.server.stop(grace)

        if self.server_loop is not None:
            self.server_loop.run(stop_server(), timeout=grace + 30)
        # The audit thread reports health through the loop: stop it (and the
        # others) before the loop closes, so no report lands on a closed loop.
        for worker in (self.housekeeping, self.refresher, self.auditor, self.checkpoints):
            if worker is not None:
                worker.stopping.set()
                worker.join(timeout=30)
        if self.server_loop is not None:
            self.server_loop.close()
        if self.answer_pool is not None:
            self.answer_pool.shutdown(wait=True)
        if self.metrics is not None:
            self.metrics.stop()
        self.engine.dispose()


def start_node(
    data_dir: Path,
    *,
    clock: Clock = utc_now,
    listen: str | None = None,
) -> RunningNode:
    """Read a node's data directory and start serving.

    Raises:
        InvalidInput: the config is invalid.
        FailedPrecondition: files are missing or the schema is behind.
        VerificationError: the manifest does not verify.
    """
    config = node_config.load_config(data_dir)
    hint = "install the enrolment files with `credence node install`"
    key_pem = _read(config, node_config.TLS_KEY_FILE, "run `credence node init`")
    cert_pem = _read(config, node_config.TLS_CERT_FILE, hint)
    ca_pem = _read(config, node_config.CA_CERT_FILE, hint)
    signing_key = load_signing_key(config.path(node_config.SIGNING_KEY_FILE))
    _read(config, node_config.AGREEMENT_KEY_FILE, "a node made before blind aggregation: init anew")
    pair_keys = PairKeys(
        config.member_id, load_agreement_key(config.path(node_config.AGREEMENT_KEY_FILE))
    )
    manifests = ManifestHolder(
        load_manifest(config, clock()), config.path(node_config.MANIFEST_FILE)
    )
    ca_cert = load_certificate_pem(ca_pem)

    engine = database.create_engine_for(config.effective_database_url)
    # Several processes may share one database: none migrates it behind the others'
    # backs. `credence node init` and `credence node migrate` do.
    database.require_current_schema(engine)
    # An import killed while applying is undone before the node answers from it.
    recover_interrupted_import(engine, config.path(STAGING_DIR_NAME))

    # Consent lookups need the registry's revocation list; without a registry, none is kept.
    status_lists = StatusListHolder(manifests) if config.registry else None
    answerer = Answerer(
        config=config, manifests=manifests, signing_key=signing_key, engine=engine, clock=clock,
        pair_keys=pair_keys, revocations=status_lists.check if status_lists is not None else None,
    )  # fmt: skip
    recoveries = RecoveryDesk(
        member_id=config.member_id, manifests=manifests, signing_key=signing_key,
        pair_keys=pair_keys, engine=engine, clock=clock,
    )  # fmt: skip
    contests = ContestDesk(
        member_id=config.member_id,
        manifests=manifests,
        signing_key=signing_key,
        engine=engine,
        clock=clock,
    )
    answer_pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="node-answer")
    # No answers without witnesses, for a node that can read the registry's log.
    gate = LogGate(
        timedelta(seconds=config.checkpoint_max_age_seconds), enforced=bool(config.registry_public)
    )
    witness = None
    if config.witness and config.path(node_config.WITNESS_KEY_FILE).is_file():
        witness = NodeWitness(
            member_id=config.member_id,
            key=load_signing_key(config.path(node_config.WITNESS_KEY_FILE)),
            engine=engine, manifests=manifests, clock=clock,
        )  # fmt: skip
    records = RecordDesk(
        member_id=config.member_id,
        manifests=manifests,
        signing_key=signing_key,
        engine=engine,
        clock=clock,
    )
    servicer = AgencyNodeServicer(
        answerer=answerer,
        contests=contests,
        records=records,
        recoveries=recoveries,
        reviews=ReviewDesk(
            member_id=config.member_id, manifests=manifests, engine=engine, clock=clock
        ),
        manifests=manifests,
        ca_cert=ca_cert,
        clock=clock,
        executor=answer_pool,
        gate=gate,
    )
    metrics = start_metrics(
        config.metrics_listen, engine, config.path(STAGING_DIR_NAME),
        (lambda: manifests.current().contest_deadline, clock),
    )  # fmt: skip
    server_loop = ServerLoop()
    try:
        server, port, health_servicer = server_loop.run(
            _start_grpc(
                config,
                servicer,
                manifests,
                ca_cert,
                clock,
                address=listen or config.listen,
                credentials=server_credentials(key_pem, cert_pem, ca_pem),
                witness=None if witness is None else WitnessServicer(witness, answer_pool),
                gated=gate.enforced,
            ),
            timeout=60,
        )
    except BaseException:
        _abandon(server_loop, answer_pool, metrics, engine)
        raise
    housekeeping = Housekeeping(
        engine, clock, config.purge_interval_seconds, lambda: manifests.current().contest_deadline
    )
    housekeeping.start()
    refresher = None
    if config.registry:
        refresher = ManifestRefresher(
            manifests,
            registry=config.registry,
            credentials=channel_credentials(key_pem, cert_pem, ca_pem),
            clock=clock,
            interval_seconds=config.manifest_refresh_seconds,
            status_lists=status_lists,
        )
        refresher.start()
    auditor = None
    if config.registry_public:
        client = LogClient(
            config.registry_public, grpc.ssl_channel_credentials(root_certificates=ca_pem)
        )

        def audit_status(ok: bool) -> None:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if ok
                else (health_pb2.HealthCheckResponse.NOT_SERVING)
            )
            server_loop.call_soon(health_servicer.set(AUDIT_SERVICE, status))

        auditor = AuditThread(
            LogAuditor(
                engine=engine,
                manifests=manifests,
                client=client,
                clock=clock,
                merge_delay=timedelta(seconds=config.audit_merge_delay_seconds),
                tiles=tile_reader(config, ca_pem),
                gate=gate,
                member_id=config.member_id,
                alarms=AlarmReporter(
                    config.registry, channel_credentials(key_pem, cert_pem, ca_pem)
                )
                if config.registry
                else None,
            ),
            interval_seconds=config.audit_interval_seconds,
            on_status=audit_status,
            max_lag_seconds=config.audit_max_lag_seconds,
        )
        auditor.start()
        if metrics is not None:
            metrics.follow_audit(auditor)
    checkpoints = _start_checkpoints(
        config, gate=gate, manifests=manifests, witness=witness, clock=clock, ca_pem=ca_pem,
        server_loop=server_loop, health_servicer=health_servicer,
    )  # fmt: skip
    _log.info("agency node %s listening on port %d", config.member_id, port)
    return RunningNode(
        server, port, health_servicer, engine, config.grace_seconds, housekeeping, refresher,
        auditor, server_loop=server_loop, answer_pool=answer_pool, checkpoints=checkpoints,
        gate=gate, metrics=metrics,
    )  # fmt: skip


def _start_checkpoints(
    config: node_config.NodeConfig,
    *,
    gate: LogGate,
    manifests: ManifestHolder,
    witness: NodeWitness | None,
    clock: Clock,
    ca_pem: bytes,
    server_loop: ServerLoop,
    health_servicer: health.aio.HealthServicer,
) -> CheckpointThread | None:
    """Watch the registry's cosigned checkpoints; Health follows the gate."""
    if not gate.enforced:
        return None
    heads = TreeHeads(config.registry_public, grpc.ssl_channel_credentials(ca_pem))

    def serving(reason: str | None) -> None:
        status = health_pb2.HealthCheckResponse.NOT_SERVING if reason else (
            health_pb2.HealthCheckResponse.SERVING
        )  # fmt: skip
        for service in (SERVICE_NAME, ""):
            server_loop.call_soon(health_servicer.set(service, status))

    watcher = CheckpointWatcher(
        gate=gate, manifests=manifests, witness=witness, fetch=heads.fetch,
        consistency=heads.consistency, clock=clock, on_change=serving,
    )  # fmt: skip
    checkpoints = CheckpointThread(watcher, config.manifest_refresh_seconds, on_stop=heads.close)
    checkpoints.start()
    return checkpoints


def _abandon(
    server_loop: ServerLoop,
    answer_pool: ThreadPoolExecutor,
    metrics: NodeMetrics | None,
    engine: Engine,
) -> None:
    """Close what a start that failed had opened."""
    server_loop.close()
    answer_pool.shutdown(wait=False)
    if metrics is not None:
        metrics.stop()
    engine.dispose()


def _rpc_metrics(config: node_config.NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    """The RPC metrics' interceptor, unless ``metrics_listen`` is empty."""
    return [RpcMetricsInterceptor()] if config.metrics_listen else []


async def _start_grpc(
    config: node_config.NodeConfig,
    servicer: AgencyNodeServicer,
    manifests: ManifestHolder,
    ca_cert: x509.Certificate,
    clock: Clock,
    *,
    address: str,
    credentials: grpc.ServerCredentials,
    witness: WitnessServicer | None = None,
    gated: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build and start the node's grpc.aio server on the running loop.

    Raises:
        FailedPrecondition: the address cannot be listened on.
    """

    def registry() -> str:
        return manifests.current().registry.member_id

    def authorize(method: str, member_id: str) -> None:
        if method not in OPEN_METHODS and member_id != registry():
            raise PermissionDenied(
                f"only the registry may call {method} on this node; {member_id!r} is not the "
                "registry (members may call Health/Check and Health/Watch)"
            )

    def calls_allowed(peer: str) -> int:
        return config.max_registry_calls if peer == registry() else config.max_calls_per_peer

    limits = PeerLimitInterceptor(
        member_of_peer,
        ConcurrencyLimit("calls", calls_allowed),
        {
            HEALTH_WATCH: ConcurrencyLimit(
                "Health/Watch streams", config.max_watch_streams_per_peer, config.max_watch_streams
            )
        },
    )
    revocation = AsyncRevocationInterceptor(
        ca_cert, lambda: manifests.current().revoked_serials, clock, authorize=authorize
    )
    server = grpc.aio.server(
        # Limits first: refusing a flood costs less than verifying its certificates.
        # Decoding last, so a peer that may not call learns nothing more.
        # Metrics before them all, so that every refusal is counted.
        interceptors=[
            *_rpc_metrics(config),
            *tracing.server_interceptors(),
            limits,
            revocation,
            AsyncDecodingInterceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ],
    )
    agency_pb2_grpc.add_AgencyNodeServiceServicer_to_server(servicer, server)
    services: tuple[str, ...] = (SERVICE_NAME, health.SERVICE_NAME)
    if witness is not None:
        witness_pb2_grpc.add_WitnessServiceServicer_to_server(witness, server)
        services = (*services, WITNESS_SERVICE)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(services, server)
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise FailedPrecondition(f"cannot listen on {address}")
    await server.start()
    await health_servicer.set(AUDIT_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    # A gated node reports SERVING only once it has seen a recent cosigned checkpoint.
    answering = health_pb2.HealthCheckResponse.NOT_SERVING if gated else (
        health_pb2.HealthCheckResponse.SERVING
    )  # fmt: skip
    for service in (SERVICE_NAME, ""):
        await health_servicer.set(service, answering)
    return server, port, health_servicer


def serve(data_dir: Path, *, listen: str | None = None, ready: Callable[[int], None]) -> None:
    """Run a node until SIGTERM or SIGINT, then shut down gracefully."""
    node = start_node(data_dir, listen=listen)
    stopping = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        _log.info("signal %d: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ready(node.port)
    stopping.wait()
    node.stop()
