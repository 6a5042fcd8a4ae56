"""The bare fan-out floor for ``bench.bench_registry``: gRPC, mTLS and one signature per hop.

What a federated lookup cannot avoid, with nothing else: the registry signs
one query, fans it out with ``grpc.aio`` under mutual TLS to N node processes,
each node signs a minimal answer (no database, no checks of the query), and
the registry verifies the N answer signatures and signs one verdict. The
batch path does the same per message of many subjects: one signed batch per
node, one signed batch answer back from each, one signed verdict batch.

Node processes are spawned (never forked: this process may hold gRPC state)
with ``python -m bench.fanout_floor serve``; each prints one JSON line with its
port and public key. :class:`FloorNodes` starts and stops them; the floor
registry (:class:`FloorRegistry`) runs in the caller's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc

from credence import payloads
from credence.envelope import Envelope, sign, verify_message
from credence.errors import ClaimMismatch, FailedPrecondition
from credence.keys import KeySet, SigningKey, VerifyKey, private_key_pem
from credence.pki import create_ca, generate_tls_key, issue_member_certificate, make_csr
from credence.rpc.tls import channel_credentials, server_credentials
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2, subject_records_pb2

REGISTRY = "floor-registry"
_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)
_START_TIMEOUT = 30.0
# The directory that holds the bench package: node processes run from it.
_PROJECT = Path(__file__).resolve().parent.parent


# -- the node side (runs in its own process) ---------------------------------------


class _FloorNode(agency_pb2_grpc.AgencyNodeServiceServicer):
    """Answers anything with a signed minimal answer; checks nothing."""

    def __init__(self, name: str, key: SigningKey) -> None:
        self._name = name
        self._key = key

    async def AnswerQuery(
        self, request: agency_pb2.AnswerQueryRequest, _context: Any
    ) -> agency_pb2.AnswerQueryResponse:
        answer = agency_pb2.Answer(
            agency=self._name, query_hash=hashlib.sha256(request.query.payload).digest()
        )
        envelope = sign(payloads.ANSWER, answer.SerializeToString(), [self._key])
        return agency_pb2.AnswerQueryResponse(answer=envelope.to_proto())

    async def AnswerBatch(
        self, request_iterator: AsyncIterator[agency_pb2.AnswerBatchRequest], _context: Any
    ) -> AsyncIterator[agency_pb2.AnswerBatchResponse]:
        async for request in request_iterator:
            # Parsing the batch is unavoidable: the answer names every item.
            batch = agency_pb2.BatchQuery.FromString(request.batch.payload)
            answer = agency_pb2.BatchAnswer(
                batch_id=batch.batch_id,
                agency=self._name,
                batch_hash=hashlib.sha256(request.batch.payload).digest(),
                items=[agency_pb2.BatchAnswerItem(query_id=item.query_id) for item in batch.items],
            )
            envelope = sign(payloads.BATCH_ANSWER, answer.SerializeToString(), [self._key])
            yield agency_pb2.AnswerBatchResponse(answers=envelope.to_proto())

    async def FileContest(
        self, _request: agency_pb2.FileContestRequest, context: Any
    ) -> agency_pb2.FileContestResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a floor node takes no contests")
        raise AssertionError("abort raises")

    async def ListSubjectRecords(
        self, _request: subject_records_pb2.ListSubjectRecordsRequest, context: Any
    ) -> subject_records_pb2.ListSubjectRecordsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a floor node holds no records")
        raise AssertionError("abort raises")

    async def RecoverMasks(
        self, _request: agency_pb2.RecoverMasksRequest, context: Any
    ) -> agency_pb2.RecoverMasksResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a floor node masks nothing")
        raise AssertionError("abort raises")

    async def NotifyReview(
        self, _request: agency_pb2.NotifyReviewRequest, context: Any
    ) -> agency_pb2.NotifyReviewResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "a floor node takes no reviews")
        raise AssertionError("abort raises")


async def _serve(directory: Path, name: str) -> None:
    key = SigningKey.generate()
    server = grpc.aio.server(options=_CHANNEL_OPTIONS)
    agency_pb2_grpc.add_AgencyNodeServiceServicer_to_server(_FloorNode(name, key), server)
    credentials = server_credentials(
        (directory / f"{name}.key").read_bytes(),
        (directory / f"{name}.crt").read_bytes(),
        (directory / "ca.crt").read_bytes(),
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(json.dumps({"name": name, "port": port, "public": key.public.raw().hex()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(0.5)


# -- the registry side (runs in the caller's process) -----------------------------


def _mint(directory: Path, names: Sequence[str], now: datetime) -> None:
    """A throwaway CA and one P-256 identity per name, written to ``directory``."""
    ca = create_ca("credence bench floor CA", now, timedelta(days=1))
    (directory / "ca.crt").write_bytes(ca.certificate_pem)
    for name in names:
        tls_key = generate_tls_key()
        certificate = issue_member_certificate(
            ca, make_csr(tls_key, name), name, now, valid_for=timedelta(hours=12),
            hosts=("127.0.0.1", "localhost"),
        )  # fmt: skip
        (directory / f"{name}.key").write_bytes(private_key_pem(tls_key))
        (directory / f"{name}.crt").write_bytes(certificate)


@dataclass
class FloorNode:
    """A started floor node process."""

    name: str
    address: str
    key: VerifyKey
    process: subprocess.Popen[bytes]


@dataclass
class FloorNodes:
    """N floor node processes with certificates from a throwaway CA."""

    directory: Path
    count: int
    nodes: list[FloorNode] = field(default_factory=list)

    def __enter__(self) -> Self:
        names = [f"floor-{index}" for index in range(self.count)]
        _mint(self.directory, [*names, REGISTRY], datetime.now(UTC))
        try:
            for name in names:
                self.nodes.append(self._start(name))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self, name: str) -> FloorNode:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout_floor", "serve", "--dir", str(self.directory),
             "--name", name],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=_PROJECT,
        )  # fmt: skip
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=_START_TIMEOUT)
            raise FailedPrecondition(f"floor node {name} exited while starting")
        started = json.loads(line)
        return FloorNode(
            name,
            f"127.0.0.1:{started['port']}",
            VerifyKey.from_raw(bytes.fromhex(started["public"])),
            process,
        )

    def stop(self) -> None:
        """Stop every node process started here, by its own handle."""
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.process.stdout is not None:
                node.process.stdout.close()
        self.nodes.clear()

    def credentials(self) -> grpc.ChannelCredentials:
        """The floor registry's client credentials."""
        return channel_credentials(
            (self.directory / f"{REGISTRY}.key").read_bytes(),
            (self.directory / f"{REGISTRY}.crt").read_bytes(),
            (self.directory / "ca.crt").read_bytes(),
        )


class _BatchStream:
    """One persistent AnswerBatch stream to a node; answers come back in order."""

    def __init__(self, stub: agency_pb2_grpc.AgencyNodeServiceStub) -> None:
        # The generated stub is typed for the sync stack; an aio call takes no iterator.
        open_stream: Any = stub.AnswerBatch
        self._call: Any = open_stream()
        self._pending: deque[asyncio.Future[agency_pb2.AnswerBatchResponse]] = deque()
        self._lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self._call:
                self._pending.popleft().set_result(response)
        except grpc.aio.AioRpcError as exc:
            while self._pending:
                self._pending.popleft().set_exception(exc)

    async def ask(self, request: agency_pb2.AnswerBatchRequest) -> agency_pb2.AnswerBatchResponse:
        future: asyncio.Future[agency_pb2.AnswerBatchResponse] = (
            asyncio.get_running_loop().create_future()
        )
        # Writes and the pending queue stay in the same order.
        async with self._lock:
            self._pending.append(future)
            await self._call.write(request)
        return await future

    async def close(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._call.done_writing()
        await self._reader


class FloorRegistry:
    """Sign a query, fan out, verify every answer, sign a verdict: nothing else."""

    def __init__(self, nodes: Sequence[FloorNode], credentials: grpc.ChannelCredentials) -> None:
        self._key = SigningKey.generate()
        self._node_keys = KeySet(node.key for node in nodes)
        self._channels = [
            grpc.aio.secure_channel(node.address, credentials, options=_CHANNEL_OPTIONS)
            for node in nodes
        ]
        self._stubs = [agency_pb2_grpc.AgencyNodeServiceStub(c) for c in self._channels]
        self._streams: list[_BatchStream] = []

    async def close(self) -> None:
        """Close the batch streams and channels."""
        for stream in self._streams:
            await stream.close()
        for channel in self._channels:
            await channel.close()

    def _query(self, subject: bytes) -> Envelope:
        now = datetime.now(UTC)
        query = agency_pb2.Query(
            query_id=secrets.token_hex(16),
            subject=common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_ORGANISATION, ref=subject),
            kinds=[common_pb2.VERDICT_KIND_BLACKLIST],
            purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
            requester="bench-company",
            nonce=secrets.token_bytes(16),
        )
        query.issued_at.FromDatetime(now)
        query.expires_at.FromDatetime(now + timedelta(seconds=60))
        return sign(payloads.QUERY, query.SerializeToString(), [self._key])

    async def lookup(self, subject: bytes) -> Envelope:
        """One subject through every node; the signed verdict.

        Raises:
            ClaimMismatch: a node answered another query.
            CredenceError: a signature did not verify.
        """
        query = self._query(subject)
        request = agency_pb2.AnswerQueryRequest(query=query.to_proto())
        responses = await asyncio.gather(
            *(stub.AnswerQuery(request, timeout=2.0) for stub in self._stubs)
        )
        query_hash = hashlib.sha256(query.payload).digest()
        hashes = []
        for response in responses:
            envelope = Envelope.from_proto(response.answer)
            answer = verify_message(envelope, payloads.ANSWER, self._node_keys, agency_pb2.Answer)
            if answer.query_hash != query_hash:
                raise ClaimMismatch(f"{answer.agency} answered another query")
            hashes.append(hashlib.sha256(envelope.payload).digest())
        return sign(payloads.VERDICT, subject + b"".join(hashes), [self._key])

    async def screen(self, subjects: Sequence[bytes]) -> Envelope:
        """Many subjects in one signed batch per node; one signed verdict batch.

        Raises:
            ClaimMismatch: a node answered another batch or left items out.
            CredenceError: a signature did not verify.
        """
        if not self._streams:
            self._streams = [_BatchStream(stub) for stub in self._stubs]
        now = datetime.now(UTC)
        batch = agency_pb2.BatchQuery(
            batch_id=secrets.token_hex(16),
            kinds=[common_pb2.VERDICT_KIND_BLACKLIST],
            purpose=common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION,
            requester="bench-company",
            nonce=secrets.token_bytes(16),
            items=[
                agency_pb2.BatchItem(
                    query_id=secrets.token_hex(16),
                    subject=common_pb2.SubjectRef(
                        type=common_pb2.SUBJECT_TYPE_ORGANISATION, ref=subject
                    ),
                )
                for subject in subjects
            ],
        )
        batch.issued_at.FromDatetime(now)
        batch.expires_at.FromDatetime(now + timedelta(seconds=60))
        signed = sign(payloads.BATCH_QUERY, batch.SerializeToString(), [self._key])
        request = agency_pb2.AnswerBatchRequest(batch=signed.to_proto())
        responses = await asyncio.gather(*(stream.ask(request) for stream in self._streams))
        batch_hash = hashlib.sha256(signed.payload).digest()
        hashes = []
        for response in responses:
            envelope = Envelope.from_proto(response.answers)
            answer = verify_message(
                envelope, payloads.BATCH_ANSWER, self._node_keys, agency_pb2.BatchAnswer
            )
            if answer.batch_hash != batch_hash or len(answer.items) != len(subjects):
                raise ClaimMismatch(f"{answer.agency} answered another batch")
            hashes.append(hashlib.sha256(envelope.payload).digest())
        return sign(payloads.VERDICT_BATCH, batch_hash + b"".join(hashes), [self._key])


# -- measurements ---------------------------------------------------------------


@dataclass(frozen=True)
class FloorFigures:
    """The floor's figures for one fan-out width."""

    fanout: int
    p50_ms: float
    p99_ms: float
    rate: float
    subjects_per_s: float


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def measure(
    nodes: Sequence[FloorNode],
    credentials: grpc.ChannelCredentials,
    *,
    subjects: Sequence[bytes],
    single: int,
    concurrency: int,
    rate_calls: int,
    screen: int,
    message_size: int,
    batches_in_flight: int = 4,
    on_phase: Callable[[str, int], None] | None = None,
) -> FloorFigures:
    """The three workloads against ``nodes``: p50/p99 at c=1, rate at c=N, batch.

    ``on_phase(name, units)`` is called as each phase ends ("warm-up", "c=1",
    "c=N", "batch-open", "batch"), e.g. to read the CPU each process spent.

    Raises:
        CredenceError: an answer did not verify.
    """
    mark = on_phase or (lambda _name, _units: None)
    registry = FloorRegistry(nodes, credentials)
    try:
        for index in range(30):  # warm-up: connections, TLS handshakes
            await registry.lookup(subjects[index % len(subjects)])
        mark("warm-up", 30)
        latencies = []
        for index in range(single):
            started = time.perf_counter()
            await registry.lookup(subjects[index % len(subjects)])
            latencies.append(time.perf_counter() - started)
        mark("c=1", single)

        queue = iter(range(rate_calls))

        async def worker() -> None:
            for index in queue:
                await registry.lookup(subjects[index % len(subjects)])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = rate_calls / (time.perf_counter() - started)
        mark(f"c={concurrency}", rate_calls)

        await registry.screen(list(subjects[:message_size]))  # opens the streams
        mark("batch-open", message_size)
        chunks = iter(range(0, screen, message_size))

        async def batcher() -> None:
            for start in chunks:
                size = min(message_size, screen - start)
                await registry.screen([subjects[(start + i) % len(subjects)] for i in range(size)])

        started = time.perf_counter()
        await asyncio.gather(*(batcher() for _ in range(batches_in_flight)))
        subjects_per_s = screen / (time.perf_counter() - started)
        mark("batch", screen)
    finally:
        await registry.close()
    return FloorFigures(
        fanout=len(nodes),
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rate=rate,
        subjects_per_s=subjects_per_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve one floor node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.dir, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
