"""The registry's TransparencyLogService alone, over TLS, and data for node audits.

For tests and benchmarks of the node's log audit: a registry database filled
through the batch append path, a node database holding the matching answered
queries (with their promised commitments), and the log service on a loopback
TLS port, either on a thread of this process (so a test can doctor it) or in
a process of its own (:func:`serve_forever`, for benchmarks).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session, sessionmaker

from agency_node import config as node_config
from agency_node import database as node_database
from agency_node.audit import LogAuditor
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.models import QueryLogEntry
from agency_node.offline_node import write_node_dir
from central_registry.database import create_engine_for, upgrade_schema
from central_registry.keyring import RegistryKeys
from central_registry.log.entries import append_entries
from central_registry.log.rows import LogRow, dispatched_row
from central_registry.service_public import TransparencyLogServicer
from credence import queries
from credence.dev.offline_federation import Federation
from credence.keys import SigningKey, load_signing_key
from credence.pki import create_ca
from credence.storage import session_factory
from credence.subjects import PseudonymisationKey
from credence.transparency import log_promise
from credence.transparency.checkpoint import log_origin
from credence.transparency.log_audit import LogClient
from credence.v1 import common_pb2, registry_pb2_grpc

REQUESTER = "acme"
PURPOSE = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
SUBJECT_TYPE = common_pb2.SUBJECT_TYPE_ORGANISATION
KINDS = (common_pb2.VERDICT_KIND_BLACKLIST,)
#: The log origin of :class:`credence.dev.offline_federation.Federation`'s manifests.
OFFLINE_LOG_ORIGIN = log_origin("test-federation")


@dataclass(frozen=True)
class Promised:
    """One lookup the registry logged (or claimed to) and a node answered."""

    query_id: str
    commitment: bytes


def new_promises(count: int, now: datetime) -> list[tuple[Promised, LogRow]]:
    """``count`` lookups as the registry logs a screening run: shared fields, fresh salts."""
    encoder = log_promise.CommitmentEncoder.for_shared(
        requester=REQUESTER, purpose=PURPOSE, kinds=KINDS, issued_at=now
    )
    made = []
    for _ in range(count):
        query_id = queries.new_query_id()
        ref = secrets.token_bytes(32)
        salt = log_promise.new_salt()
        commitment = encoder.commit(salt, query_id, SUBJECT_TYPE, ref, "")
        row = dispatched_row(
            query_id=query_id, requester=REQUESTER, subject_type=SUBJECT_TYPE, subject_ref=ref,
            purpose=PURPOSE, kinds=KINDS, grant_id="", basis="public register",
            embargo_until=None, issued_at=now, salt=salt, commitment=commitment,
        )  # fmt: skip
        made.append((Promised(query_id, commitment), row))
    return made


def fill_log(sessions: sessionmaker[Session], rows: Sequence[LogRow], batch: int = 1_000) -> None:
    """Append ``rows`` to the registry's log, ``batch`` per transaction (the screening path)."""
    for first in range(0, len(rows), batch):
        with sessions.begin() as session:
            append_entries(session, rows[first : first + batch])


def record_answers(
    engine: Engine, promised: Sequence[Promised], received_at: datetime, batch: int = 10_000
) -> None:
    """Write ``promised`` into a node's query log as answered queries awaiting the audit."""
    values = [
        {
            "query_id": item.query_id,
            "received_at": received_at,
            "requester": REQUESTER,
            "purpose": "counterparty_verification",
            "kinds": "blacklist",
            "outcome": "answered",
            "status_code": "OK",
            "reason": "",
            "entry_commitment": item.commitment,
        }
        for item in promised
    ]
    for first in range(0, len(values), batch):
        with session_factory(engine).begin() as session:
            session.execute(insert(QueryLogEntry), values[first : first + batch])


def registry_keys(signing: SigningKey, tls_key_pem: bytes, tls_cert_pem: bytes) -> RegistryKeys:
    """Keys for the log service alone: it reads the signing (log) key, nothing else."""
    now = datetime.now(UTC)
    return RegistryKeys(
        root=signing,
        signing=signing,
        ca=create_ca("unused", now, timedelta(days=1)),
        tls_key_pem=tls_key_pem,
        tls_cert_pem=tls_cert_pem,
        pseudonymisation=PseudonymisationKey.generate(),
    )


class LogServer:
    """The log service on a loopback TLS port, its event loop on a thread of its own."""

    def __init__(self, engine: Engine, keys: RegistryKeys, origin: str) -> None:
        self._engine = engine
        self._keys = keys
        self._origin = origin
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def start(self) -> LogServer:
        """Start serving; returns once the port is bound."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    async def _start(self) -> None:
        server = grpc.aio.server()
        registry_pb2_grpc.add_TransparencyLogServiceServicer_to_server(
            TransparencyLogServicer(
                keys=self._keys,
                engine=self._engine,
                clock=lambda: datetime.now(UTC),
                origin=self._origin,
            ),
            server,
        )
        credentials = grpc.ssl_server_credentials(
            [(self._keys.tls_key_pem, self._keys.tls_cert_pem)]
        )
        self.port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        self._server = server

    def stop(self) -> None:
        """Stop serving and end the thread (again: nothing)."""
        if self._loop.is_closed():
            return
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def serve_forever(
    database_url: str,
    key_file: Path,
    tls_key_pem: bytes,
    tls_cert_pem: bytes,
    origin: str,
    pipe: Connection,
) -> None:
    """Process target: serve the log of ``database_url``; sends the port, stops on a message."""
    engine = create_engine_for(database_url)
    upgrade_schema(engine)
    keys = registry_keys(load_signing_key(key_file), tls_key_pem, tls_cert_pem)
    server = LogServer(engine, keys, origin).start()
    pipe.send(server.port)
    try:
        pipe.recv()
    except EOFError:
        pass
    finally:
        server.stop()
        engine.dispose()


@dataclass
class AuditBed:
    """A registry log of promises, its service, and a node that answered them all."""

    federation: Federation
    server: LogServer
    node_dir: Path
    promised: list[Promised]
    registry_url: str

    def client(self) -> LogClient:
        """A client of the log service, as the node builds it."""
        return LogClient(
            f"127.0.0.1:{self.server.port}",
            grpc.ssl_channel_credentials(root_certificates=self.federation.ca.certificate_pem),
            timeout=60,
        )

    def manifests(self) -> ManifestHolder:
        """The node's manifest (it names the log key)."""
        config = node_config.load_config(self.node_dir)
        return ManifestHolder(
            load_manifest(config, datetime.now(UTC)), config.path(node_config.MANIFEST_FILE)
        )

    def auditor(self) -> LogAuditor:
        """The node's background auditor, on the node's own database."""
        config = node_config.load_config(self.node_dir)
        return LogAuditor(
            engine=node_database.create_engine_for(config.effective_database_url),
            manifests=self.manifests(),
            client=self.client(),
            clock=lambda: datetime.now(UTC),
            merge_delay=timedelta(seconds=config.audit_merge_delay_seconds),
        )

    def node_engine(self) -> Engine:
        """An engine on the node's database (dispose it)."""
        return node_database.create_engine_for(node_database.sqlite_url_for(self.node_dir))


@contextmanager
def audit_bed(
    directory: Path, database_url: str, entries: int, *, left_out: Sequence[int] = ()
) -> Iterator[AuditBed]:
    """``entries`` promised lookups, answered an hour ago; the log omits those ``left_out``."""
    federation = Federation.create()
    federation.add_agency("court-1", ["court_judgment"])
    engine = create_engine_for(database_url)
    upgrade_schema(engine)
    made = new_promises(entries, datetime.now(UTC))
    skipped = set(left_out)
    fill_log(session_factory(engine), [row for n, (_, row) in enumerate(made) if n not in skipped])
    registry = federation.members["registry"]
    server = LogServer(
        engine,
        registry_keys(federation.registry_key, registry.tls_key_pem, registry.cert_pem),
        OFFLINE_LOG_ORIGIN,
    ).start()
    try:
        node_dir = write_node_dir(
            federation, directory, "court-1", registry_public=f"127.0.0.1:{server.port}"
        )
        promised = [item for item, _ in made]
        node_engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
        record_answers(node_engine, promised, datetime.now(UTC) - timedelta(hours=1))
        node_engine.dispose()
        yield AuditBed(federation, server, node_dir, promised, database_url)
    finally:
        server.stop()
        engine.dispose()
