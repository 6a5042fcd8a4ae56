"""Starting and stopping the registry: gRPC (grpc.aio) and the HTTP side.

Two TLS ports: the members' port requires a client certificate from the
federation CA and serves ``RegistryService`` (the certificate re-verified per
call); the public port asks for none and serves ``EnrolmentService`` and
``SubjectAccessService`` (authenticated by signatures) and
``TransparencyLogService`` (tree heads and proofs reveal no personal data). Both serve health
checking and reflection, and limit the calls each peer (a member on the
members' port, a source address on the public one) has in flight
(:mod:`credence.rpc.peer_limits`). (grpc cannot ask for a certificate without requiring
it, hence two ports.) The HTTP side serves the manifest and the JWKS. ``serve`` runs
until SIGTERM or SIGINT, then stops accepting, lets in-flight lookups finish
within the grace period, and closes the node channels and the database.
:class:`RegistryThread` runs the same in a background thread for tests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from central_registry import config as registry_config
from central_registry import database, membership, reviews
from central_registry.agency_stats import AgencyStats
from central_registry.console.actions import ConsoleActions
from central_registry.console.app import Console, ConsoleSources
from central_registry.console.serving import ConsoleServer
from central_registry.fanout import FanOut
from central_registry.http_side import HttpSide, scorecard_json
from central_registry.keyring import RegistryKeys, load_keys
from central_registry.log.entries import erase_expired
from central_registry.lookups import Lookups
from central_registry.manifest_cache import ManifestCache
from central_registry.metrics import CountedLookups, agency_observer, watch_log
from central_registry.review_notices import retry_notices_periodically
from central_registry.service_members import RegistryServicer
from central_registry.service_public import (
    EnrolmentServicer,
    SubjectAccessServicer,
    TransparencyLogServicer,
)
from central_registry.status_publisher import StatusListPublisher
from central_registry.tiles import LogFiles
from central_registry.verdict_records import erase_expired_records
from central_registry.witnessing import Witnessing, witness_periodically
from credence.clock import Clock, utc_now
from credence.errors import FailedPrecondition
from credence.keys import KeySet
from credence.ops import tracing
from credence.ops.metrics import RpcMetricsInterceptor
from credence.pki import load_certificate_pem
from credence.rpc.decoding import AsyncDecodingInterceptor
from credence.rpc.peer_limits import (
    HEALTH_WATCH,
    ConcurrencyLimit,
    PeerKey,
    PeerLimitInterceptor,
    address_of_peer,
    member_of_peer,
)
from credence.rpc.reflection import enable_reflection
from credence.rpc.tls import server_credentials
from credence.storage import session_factory
from credence.transparency.checkpoint import log_origin
from credence.v1 import registry_pb2, registry_pb2_grpc

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

MEMBER_SERVICES = (registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,)
PUBLIC_SERVICES = tuple(
    registry_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("EnrolmentService", "SubjectAccessService", "TransparencyLogService")
)


@dataclass
class RunningRegistry:
    """A started registry (on the current event loop)."""

    server: grpc.aio.Server
    public_server: grpc.aio.Server
    port: int
    public_port: int
    http: HttpSide
    health: health.aio.HealthServicer
    fanout: FanOut
    engine: Engine
    grace_seconds: float
    manifests: ManifestCache
    housekeeping: asyncio.Task[None] | None = None
    witnessing: asyncio.Task[None] | None = None
    #: Tells agencies of reviews they could not be told of at once.
    review_notices: asyncio.Task[None] | None = None
    #: Gathers cosignatures and holds the latest cosigned checkpoint.
    witnesses: Witnessing | None = None
    #: The operator's console, unless ``console_listen`` is empty.
    console: ConsoleServer | None = None
    #: Each agency's fan-out calls over the last hour (the console's agencies page).
    agency_stats: AgencyStats | None = None
    #: Stops serving this registry's log figures on ``/metrics``.
    unwatch_log: Callable[[], None] | None = None

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; finish in-flight calls within ``grace``; close everything."""
        for service in (*MEMBER_SERVICES, *PUBLIC_SERVICES, ""):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.http.stop()
        grace = self.grace_seconds if grace is None else grace
        if self.console is not None:
            await self.console.stop()
        await asyncio.gather(self.server.stop(grace), self.public_server.stop(grace))
        for task in (self.housekeeping, self.witnessing, self.review_notices):
            if task is not None:
                task.cancel()
        await self.fanout.close()
        self.manifests.close()
        if self.unwatch_log is not None:
            self.unwatch_log()
        self.engine.dispose()


async def start_registry(
    data_dir: Path,
    *,
    clock: Clock = utc_now,
    listen: str | None = None,
    public_listen: str | None = None,
    http_listen: str | None = None,
    console_listen: str | None = None,
) -> RunningRegistry:
    """Read a registry's data directory and start serving on the running loop.

    Raises:
        InvalidInput: the config is invalid.
        FailedPrecondition: keys are missing or no manifest was published.
    """
    config = registry_config.load_config(data_dir)
    keys = load_keys(config)
    engine = database.create_engine_for(config.effective_database_url)
    # Several registry processes may share one database: none migrates it behind
    # the others' backs. `credence registry init` and `... migrate` do.
    database.require_current_schema(engine)
    manifests = ManifestCache(engine, KeySet([keys.root.public]), clock)
    manifests.start()
    status_lists = StatusListPublisher(
        engine, key=keys.signing, registry_id=config.member_id, clock=clock
    )
    # Each agency's calls over the last hour, for the console's agencies page.
    agency_stats = AgencyStats()
    fanout = FanOut(
        key_pem=keys.tls_key_pem,
        cert_pem=keys.tls_cert_pem,
        ca_pem=keys.ca.certificate_pem,
        deadline=config.fanout_deadline_seconds,
        batch_deadline=config.batch_deadline_seconds,
        max_concurrency=config.fanout_concurrency,
        max_message_bytes=config.max_message_bytes,
        observe=agency_observer(agency_stats, clock, metrics=config.metrics),
    )
    lookups = (CountedLookups if config.metrics else Lookups)(
        config=config, keys=keys, engine=engine, manifests=manifests, fanout=fanout, clock=clock
    )
    witnessing = Witnessing(
        engine=engine, log_key=keys.signing, federation_id=config.federation_id,
        manifests=manifests, fanout=fanout, clock=clock,
        deadline_seconds=config.witness_deadline_seconds,
    )  # fmt: skip
    ca_cert = load_certificate_pem(keys.ca.certificate_pem)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    # Metrics first, so every refusal is counted. Decoding last in each list:
    # peer checks in front of it answer first.
    members = grpc.aio.server(
        options=options,
        interceptors=[
            *_rpc_metrics(config),
            *tracing.server_interceptors(),
            _peer_limits(config.peer_limits, member_of_peer, config.peer_limits.calls_per_member),
            AsyncDecodingInterceptor(),
        ],
    )
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(
            config=config,
            keys=keys,
            engine=engine,
            manifests=manifests,
            lookups=lookups,
            ca_cert=ca_cert,
            clock=clock,
            status_lists=status_lists,
        ),
        members,
    )
    # Anyone can reach the public port: its messages are small (enrolment, proofs).
    public_options = [
        ("grpc.max_receive_message_length", config.public.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    public = grpc.aio.server(
        options=public_options,
        interceptors=[
            *_rpc_metrics(config),
            *tracing.server_interceptors(),
            _peer_limits(config.peer_limits, address_of_peer, config.peer_limits.calls_per_address),
            AsyncDecodingInterceptor(),
        ],
    )
    registry_pb2_grpc.add_EnrolmentServiceServicer_to_server(
        EnrolmentServicer(config=config, keys=keys, engine=engine, clock=clock), public
    )
    registry_pb2_grpc.add_SubjectAccessServiceServicer_to_server(
        SubjectAccessServicer(
            config=config,
            keys=keys,
            manifests=manifests,
            engine=engine,
            clock=clock,
            fanout=fanout,
        ),
        public,
    )
    registry_pb2_grpc.add_TransparencyLogServiceServicer_to_server(
        TransparencyLogServicer(
            keys=keys,
            engine=engine,
            clock=clock,
            origin=log_origin(config.federation_id),
            cosigned=witnessing.latest,
        ),
        public,
    )
    health_servicer = health.aio.HealthServicer()
    ports = []
    for server, services, address, require_client_auth in (
        (members, MEMBER_SERVICES, listen or config.listen, True),
        (public, PUBLIC_SERVICES, public_listen or config.public_listen, False),
    ):
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection((*services, health.SERVICE_NAME), server)
        credentials = server_credentials(
            keys.tls_key_pem,
            keys.tls_cert_pem,
            keys.ca.certificate_pem,
            require_client_auth=require_client_auth,
        )
        port = server.add_secure_port(address, credentials)
        if port == 0:
            raise FailedPrecondition(f"cannot listen on {address}")
        ports.append(port)
        await server.start()
    log_files = LogFiles(
        engine, log_key=keys.signing, origin=log_origin(config.federation_id), clock=clock
    )
    http = _start_http(
        config, http_listen or config.http_listen, manifests=manifests,
        status_lists=status_lists, witnessing=witnessing, log_files=log_files, lookups=lookups,
    )  # fmt: skip
    for service in (*MEMBER_SERVICES, *PUBLIC_SERVICES, ""):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    _log.info(
        "registry %s listening on port %d (members), %d (public), http %d",
        config.member_id, ports[0], ports[1], http.port,
    )  # fmt: skip
    running = RunningRegistry(
        members, public, ports[0], ports[1], http, health_servicer, fanout, engine,
        config.grace_seconds, manifests,
        review_notices=asyncio.ensure_future(retry_notices_periodically(
            sessions=session_factory(engine), fanout=fanout, manifest=manifests.current,
            key=keys.signing, deadline=config.fanout_deadline_seconds, clock=clock,
        )),
    )  # fmt: skip
    running.housekeeping = asyncio.ensure_future(_housekeeping(engine, config, clock))
    running.witnesses = witnessing
    running.agency_stats = agency_stats
    running.unwatch_log = watch_log(engine, witnessing.latest, clock) if config.metrics else None
    console_address = config.console_listen if console_listen is None else console_listen
    if console_address:
        try:
            running.console = await _start_console(
                config, console_address, keys=keys, engine=engine, manifests=manifests,
                cosigned=witnessing.latest, stats=agency_stats, clock=clock,
            )  # fmt: skip
        except BaseException:
            await running.stop(0)
            raise
        _log.info("registry console on port %d", running.console.port)
    running.witnessing = asyncio.ensure_future(
        witness_periodically(witnessing, config.witness_interval_seconds, lambda _round: None)
    )
    return running


def _start_http(
    config: registry_config.RegistryConfig,
    listen: str,
    *,
    manifests: ManifestCache,
    status_lists: StatusListPublisher,
    witnessing: Witnessing,
    log_files: LogFiles,
    lookups: Lookups,
) -> HttpSide:
    """Serve the HTTP side, and name its ``/scorecard`` in the explanations of verdicts."""
    http = HttpSide(
        listen,
        tls_cert=config.http_tls_cert or config.path(registry_config.TLS_CERT_FILE),
        tls_key=config.http_tls_key or config.path(registry_config.TLS_KEY_FILE),
        manifest=lambda: manifests.current().envelope,
        jwks=lambda: manifests.current().registry_keys,
        status_list=status_lists.current,
        checkpoint=lambda: witnessing.served(log_files.checkpoint),
        tile=log_files.tile,
        scorecard=lambda: scorecard_json(manifests.current().scorecard),
    )
    http.start()
    host = listen.rpartition(":")[0] or "127.0.0.1"
    lookups.serve_scorecard_at(f"https://{host}:{http.port}/scorecard")
    return http


async def _start_console(
    config: registry_config.RegistryConfig,
    listen: str,
    *,
    keys: RegistryKeys,
    engine: Engine,
    manifests: ManifestCache,
    cosigned: Callable[[], bytes],
    stats: AgencyStats,
    clock: Clock,
) -> ConsoleServer:
    """The operator's console on ``listen``, with the HTTP side's TLS identity."""
    actions = ConsoleActions(
        engine=engine, config=config, keys=keys, clock=clock, published=manifests.refresh
    )
    sources = ConsoleSources(
        engine=engine, federation_id=config.federation_id, manifest=manifests.current,
        cosigned=cosigned, stats=stats, actions=actions, clock=clock,
    )  # fmt: skip
    console = ConsoleServer(
        Console(sources).app(),
        listen,
        tls_cert=config.http_tls_cert or config.path(registry_config.TLS_CERT_FILE),
        tls_key=config.http_tls_key or config.path(registry_config.TLS_KEY_FILE),
        grace_seconds=config.grace_seconds,
    )
    await console.start()
    return console


def _rpc_metrics(config: registry_config.RegistryConfig) -> list[grpc.aio.ServerInterceptor]:
    """The RPC metrics' interceptor, unless metrics are off."""
    return [RpcMetricsInterceptor()] if config.metrics else []


def _peer_limits(
    limits: registry_config.PeerCallLimits, peer_of: PeerKey, calls_per_peer: int
) -> PeerLimitInterceptor:
    """Calls in flight per peer (member or address) and ``Health/Watch`` streams, per port."""
    watch = ConcurrencyLimit(
        "Health/Watch streams", limits.watch_streams_per_peer, limits.watch_streams
    )
    return PeerLimitInterceptor(
        peer_of, ConcurrencyLimit("calls", calls_per_peer), {HEALTH_WATCH: watch}
    )


async def _housekeeping(
    engine: Engine, config: registry_config.RegistryConfig, clock: Clock
) -> None:
    """Hourly housekeeping: expired log content and expired pending enrolments.

    Expired log entries lose their content (their leaves and proofs remain);
    enrolments left pending past their lifetime are dropped.
    """
    sessions = session_factory(engine)

    def erase() -> int:
        with sessions.begin() as session:
            now = clock()
            # Served verdicts' rows go at their data life, in the same pass, and
            # decided reviews once both their verdict's row and DECIDED_KEPT are past.
            erase_expired_records(session, now)
            reviews.erase_decided_reviews(session, now)
            return erase_expired(session, now - config.log_retention)

    def drop() -> int:
        with sessions.begin() as session:
            return membership.drop_expired_enrolments(
                session, clock(), config.public.pending_enrolment_lifetime
            )

    while True:
        try:
            erased = await asyncio.to_thread(erase)
            if erased:
                _log.info("erased the content of %d expired log entries", erased)
            if dropped := await asyncio.to_thread(drop):
                _log.info("dropped %d enrolments left pending past their lifetime", dropped)
        except Exception:
            _log.exception("log housekeeping failed; will retry")
        await asyncio.sleep(3600)


def serve(
    data_dir: Path,
    *,
    listen: str | None = None,
    public_listen: str | None = None,
    http_listen: str | None = None,
    console_listen: str | None = None,
    ready: Callable[[int, int, int, int | None], None],
) -> None:
    """Run the registry until SIGTERM or SIGINT, then shut down gracefully.

    ``ready`` gets the members', public, HTTP and console ports (None: no console).
    """

    async def main() -> None:
        registry = await start_registry(
            data_dir, listen=listen, public_listen=public_listen, http_listen=http_listen,
            console_listen=console_listen,
        )  # fmt: skip
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        console = None if registry.console is None else registry.console.port
        ready(registry.port, registry.public_port, registry.http.port, console)
        await stopping.wait()
        _log.info("stopping: finishing in-flight lookups")
        await registry.stop()

    asyncio.run(main())


async def _finish_pending_tasks() -> None:
    """Cancel every other task on the running loop and wait until they have ended."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=30)


class RegistryThread:
    """A registry on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Clock = utc_now,
        listen: str = "127.0.0.1:0",
        public_listen: str = "127.0.0.1:0",
        http_listen: str = "127.0.0.1:0",
        console_listen: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="registry-loop")
        self._thread.start()
        future: Future[RunningRegistry] = asyncio.run_coroutine_threadsafe(
            start_registry(
                data_dir,
                clock=clock,
                listen=listen,
                public_listen=public_listen,
                http_listen=http_listen,
                console_listen=console_listen,
            ),
            self._loop,
        )
        try:
            self.running = future.result(timeout=60)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            raise

    @property
    def port(self) -> int:
        """The gRPC port."""
        return self.running.port

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 60) -> _T:
        """Run ``coroutine`` on the registry's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)

    @property
    def public_port(self) -> int:
        """The public (enrolment, subject access) gRPC port."""
        return self.running.public_port

    @property
    def http_port(self) -> int:
        """The HTTP port."""
        return self.running.http.port

    @property
    def console_port(self) -> int:
        """The console's port.

        Raises:
            FailedPrecondition: this registry runs no console.
        """
        if self.running.console is None:
            raise FailedPrecondition("this registry runs no console: set console_listen")
        return self.running.console.port

    def stop(self, grace: float = 0) -> None:
        """Stop the registry and its loop; tasks still pending are cancelled and finished first."""
        asyncio.run_coroutine_threadsafe(self.running.stop(grace), self._loop).result(timeout=60)
        # As asyncio.run does at exit: a call cut short mid-work (a ScreenBatch
        # fanning out chunks) may leave tasks that never ran; stopping the loop
        # under them would drop them unfinished.
        asyncio.run_coroutine_threadsafe(_finish_pending_tasks(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
