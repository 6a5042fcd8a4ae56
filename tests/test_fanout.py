"""The registry's fan-out against three real agency nodes and a few misbehaving ones.

Real nodes run in process over mutual TLS on loopback. The misbehaving nodes are
small grpc.aio servers on the test's own event loop: one that never answers in
time, and one that answers with every kind of forgery. A "dead" node is a bound
port that nobody listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from support.blind import Unmasked, unmask

from agency_node import database
from agency_node.importer import import_records
from agency_node.offline_node import write_node_dir
from agency_node.server import RunningNode, start_node
from central_registry.aggregation import Recovery
from central_registry.fanout import REDIAL_SECONDS, AgencyTarget, FanOut
from central_registry.mask_recovery import recover
from central_registry.outcomes import AgencyOutcome
from credence import payloads, queries
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, sign
from credence.errors import InvalidInput
from credence.keys import KeySet, SigningKey
from credence.rpc.tls import server_credentials
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2, subject_records_pb2

T = TypeVar("T")

COURT, TAX, FRAUD, FAKE = "court-1", "tax-1", "fraud-1", "fake-1"
NODES = {COURT: "court_judgment", TAX: "tax_arrears", FRAUD: "fraud_flag"}

LISTED_AT_COURT = "reg:CN:COURT0001"
LISTED_AT_TAX = "reg:CN:TAXES0001"
CLEAR_ORG = "reg:CN:CLEAR0001"
PERSON = "nin:P1234567"

HEADER = (
    "record_id,identifier,kind,category,amount,currency,status,occurred_at,expires_at,"
    "disputed,days_overdue\n"
)
RECORDS = {
    COURT: [
        f"j-1,{LISTED_AT_COURT},court_judgment,dishonest_debtor,125000.00,CNY,active,"
        "2025-03-01,,false,",
        f"j-2,{PERSON},court_judgment,judgment_debt,300.00,CNY,active,2026-02-01,,false,",
    ],
    TAX: [f"t-1,{LISTED_AT_TAX},tax_arrears,tax_arrears,90000.00,CNY,active,2025-06-01,,false,"],
    FRAUD: [],
}

ANSWERED = common_pb2.COVERAGE_STATE_ANSWERED
TIMEOUT = common_pb2.COVERAGE_STATE_TIMEOUT
UNAVAILABLE = common_pb2.COVERAGE_STATE_UNAVAILABLE
REFUSED = common_pb2.COVERAGE_STATE_REFUSED
INVALID = common_pb2.COVERAGE_STATE_INVALID_ANSWER

SLOW_SECONDS = 30.0


@dataclass
class Cluster:
    federation: Federation
    nodes: dict[str, RunningNode]

    def target(self, member_id: str, port: int | None = None) -> AgencyTarget:
        member = self.federation.members[member_id]
        port = self.nodes[member_id].port if port is None else port
        return AgencyTarget(member_id, f"127.0.0.1:{port}", KeySet([member.signing_key.public]))

    @property
    def healthy(self) -> list[AgencyTarget]:
        return [self.target(member_id) for member_id in NODES]

    def fanout(self, **options: Any) -> FanOut:
        registry = self.federation.members[REGISTRY_ID]
        return FanOut(
            key_pem=registry.tls_key_pem,
            cert_pem=registry.cert_pem,
            ca_pem=self.federation.ca.certificate_pem,
            **options,
        )

    def query(self, identifier: str) -> Envelope:
        return self.federation.query(self.federation.subject(identifier))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    federation = Federation.create()
    for member_id, kind in NODES.items():
        federation.add_agency(member_id, (kind,))
    federation.add_agency(FAKE, ("court_judgment",))
    federation.enrol("acme")
    root = tmp_path_factory.mktemp("nodes")
    nodes: dict[str, RunningNode] = {}
    try:
        for member_id in NODES:
            data_dir = write_node_dir(federation, root, member_id)
            records = root / f"{member_id}.csv"
            records.write_text(HEADER + "".join(f"{row}\n" for row in RECORDS[member_id]))
            engine = database.create_engine_for(database.sqlite_url_for(data_dir))
            import_records(
                database.session_factory(engine), records, federation.pseudonymisation_key, now=NOW
            )
            engine.dispose()
            nodes[member_id] = start_node(data_dir, clock=lambda: NOW, listen="127.0.0.1:0")
        yield Cluster(federation, nodes)
    finally:
        for running in nodes.values():
            running.stop(0)


@pytest.fixture
def dead_port() -> Iterator[int]:
    # Bound but never listening: connecting is refused at once, and no other
    # test can take the port while this one holds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()

    return asyncio.run(main())


# -- a node that misbehaves --------------------------------------------------------------


class FakeNode(agency_pb2_grpc.AgencyNodeServiceServicer):
    """Answers as ``mode`` says: honestly, too late, or with one particular forgery."""

    def __init__(self, mode: str, key: SigningKey) -> None:
        self.mode = mode
        self.key = key
        self.sent: list[bytes] = []

    def _sign(self, payload_type: str, payload: bytes) -> common_pb2.Envelope:
        key = SigningKey.generate() if self.mode == "forged" else self.key
        envelope = sign(payload_type, payload, [key])
        if self.mode == "tampered":
            envelope = Envelope(payload_type, payload + b"\x00", envelope.signatures)
        self.sent.append(envelope.payload)
        return envelope.to_proto()

    async def AnswerQuery(
        self, request: agency_pb2.AnswerQueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agency_pb2.AnswerQueryResponse:
        if self.mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        query = agency_pb2.Query.FromString(request.query.payload)
        answer = agency_pb2.Answer(
            query_id="someone-else" if self.mode == "other_query" else query.query_id,
            agency=COURT if self.mode == "other_agency" else FAKE,
            query_hash=hashlib.sha256(
                b"other" if self.mode == "other_hash" else request.query.payload
            ).digest(),
            masked=[1, 0, 1],
            layout_id="fake-layout",
        )
        payload = b"\xff\xff\xff" if self.mode == "garbage" else answer.SerializeToString()
        payload_type = payloads.QUERY if self.mode == "wrong_type" else payloads.ANSWER
        return agency_pb2.AnswerQueryResponse(answer=self._sign(payload_type, payload))

    async def AnswerBatch(
        self,
        request_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[agency_pb2.AnswerBatchResponse]:
        async for request in request_iterator:
            if self.mode == "slow":
                await asyncio.sleep(SLOW_SECONDS)
            batch = agency_pb2.BatchQuery.FromString(request.batch.payload)
            reply = agency_pb2.BatchAnswer(
                batch_id=batch.batch_id,
                agency=FAKE,
                batch_hash=hashlib.sha256(request.batch.payload).digest(),
            )
            for item in batch.items:
                reply.items.add(
                    query_id=item.query_id,
                    answer=agency_pb2.Answer(masked=[1, 0, 1], layout_id="fake-layout"),
                )
            if self.mode == "swapped":
                first, second = reply.items[0].query_id, reply.items[1].query_id
                reply.items[0].query_id, reply.items[1].query_id = second, first
            if self.mode == "short":
                del reply.items[-1]
            yield agency_pb2.AnswerBatchResponse(
                answers=self._sign(payloads.BATCH_ANSWER, reply.SerializeToString())
            )
            if self.mode == "fail_after":
                await context.abort(grpc.StatusCode.INTERNAL, "disk on fire")

    async def FileContest(
        self, request: agency_pb2.FileContestRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agency_pb2.FileContestResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fan-out never files contests")

    async def ListSubjectRecords(
        self,
        request: subject_records_pb2.ListSubjectRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> subject_records_pb2.ListSubjectRecordsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fan-out never lists records")

    async def NotifyReview(
        self, request: agency_pb2.NotifyReviewRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agency_pb2.NotifyReviewResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fan-out never sends reviews")

    async def RecoverMasks(
        self, request: agency_pb2.RecoverMasksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agency_pb2.RecoverMasksResponse:
        if self.mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        asked = agency_pb2.RecoveryRequest.FromString(request.request.payload)
        share = agency_pb2.RecoveryShare(
            query_id=asked.query_id,
            agency=FAKE,
            share=[5] * asked.count,
            request_hash=hashlib.sha256(request.request.payload).digest(),
            missing=asked.missing,
        )
        return agency_pb2.RecoverMasksResponse(
            share=self._sign(payloads.RECOVERY_SHARE, share.SerializeToString())
        )


@asynccontextmanager
async def fake_node(cluster: Cluster, mode: str) -> AsyncIterator[tuple[AgencyTarget, FakeNode]]:
    member = cluster.federation.members[FAKE]
    servicer = FakeNode(mode, member.signing_key)
    server = grpc.aio.server()
    agency_pb2_grpc.add_AgencyNodeServiceServicer_to_server(servicer, server)
    credentials = server_credentials(
        member.tls_key_pem, member.cert_pem, cluster.federation.ca.certificate_pem
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield cluster.target(FAKE, port), servicer
    finally:
        await server.stop(0)


def states(outcomes: list[AgencyOutcome]) -> list[int]:
    return [outcome.state for outcome in outcomes]


def read(
    cluster: Cluster, outcome: AgencyOutcome, label: str = "", index: int = 0, items: int = 1
) -> Unmasked:
    """The agency's answer vector, unmasked with the test's keys (the registry cannot)."""
    assert outcome.answer is not None, outcome.reason
    return unmask(
        outcome.answer,
        cluster.federation,
        agency=outcome.member_id,
        label=label or outcome.answer.query_id,
        index=index,
        items=items,
    )


def listed(
    cluster: Cluster, outcome: AgencyOutcome, label: str = "", index: int = 0, items: int = 1
) -> bool:
    return read(cluster, outcome, label, index, items).listed


# -- single lookups ------------------------------------------------------------------------


def test_every_node_answers_in_target_order(cluster: Cluster) -> None:
    query = cluster.query(LISTED_AT_COURT)
    expected_id = agency_pb2.Query.FromString(query.payload).query_id

    async def scenario() -> list[AgencyOutcome]:
        fanout = cluster.fanout()
        try:
            return await fanout.query(cluster.healthy[::-1], query)
        finally:
            await fanout.close()

    outcomes = run(scenario)
    assert [outcome.member_id for outcome in outcomes] == [FRAUD, TAX, COURT]
    assert states(outcomes) == [ANSWERED] * 3
    assert [listed(cluster, outcome) for outcome in outcomes] == [False, False, True]
    for outcome in outcomes:
        assert outcome.answer is not None
        assert outcome.answer.query_id == expected_id
        assert outcome.answer.query_hash == hashlib.sha256(query.payload).digest()
        assert len(outcome.answer_hash) == 32
        assert outcome.reason == ""


def test_answer_hash_is_the_hash_of_the_signed_payload(cluster: Cluster) -> None:
    async def scenario() -> tuple[list[AgencyOutcome], list[bytes]]:
        fanout = cluster.fanout()
        async with fake_node(cluster, "honest") as (target, servicer):
            try:
                return await fanout.query([target], cluster.query(CLEAR_ORG)), servicer.sent
            finally:
                await fanout.close()

    (outcome,), sent = run(scenario)
    assert outcome.state == ANSWERED, outcome.reason
    assert outcome.answer_hash == hashlib.sha256(sent[0]).digest()


def test_dead_node_is_unavailable_and_others_answer(cluster: Cluster, dead_port: int) -> None:
    targets = [cluster.target(COURT), cluster.target(TAX, port=dead_port), cluster.target(FRAUD)]

    async def scenario() -> list[AgencyOutcome]:
        fanout = cluster.fanout(deadline=5.0)
        try:
            return await fanout.query(targets, cluster.query(LISTED_AT_COURT))
        finally:
            await fanout.close()

    outcomes = run(scenario)
    # UNAVAILABLE, not TIMEOUT: the refused connection failed the call at once.
    assert states(outcomes) == [ANSWERED, UNAVAILABLE, ANSWERED]
    assert "failed to connect" in outcomes[1].reason
    assert outcomes[1].answer is None
    assert outcomes[1].answer_hash == b""


def test_slow_node_times_out_without_holding_up_other_lookups(cluster: Cluster) -> None:
    deadline = 1.0

    async def scenario() -> tuple[list[AgencyOutcome], list[AgencyOutcome], bool, float]:
        fanout = cluster.fanout(deadline=deadline)
        loop = asyncio.get_running_loop()
        async with fake_node(cluster, "slow") as (slow, _):
            try:
                started = loop.time()
                mixed = asyncio.create_task(
                    fanout.query([slow, *cluster.healthy], cluster.query(LISTED_AT_COURT))
                )
                healthy = asyncio.create_task(
                    fanout.query(cluster.healthy, cluster.query(LISTED_AT_TAX))
                )
                done, _pending = await asyncio.wait(
                    {mixed, healthy}, return_when=asyncio.FIRST_COMPLETED
                )
                healthy_first = healthy in done and mixed not in done
                mixed_outcomes = await mixed
                elapsed = loop.time() - started
                return mixed_outcomes, await healthy, healthy_first, elapsed
            finally:
                await fanout.close()

    mixed, healthy, healthy_first, elapsed = run(scenario)
    assert healthy_first, "the lookup without the slow node waited for it"
    assert states(healthy) == [ANSWERED] * 3
    assert [listed(cluster, outcome) for outcome in healthy] == [False, True, False]
    assert states(mixed) == [TIMEOUT, ANSWERED, ANSWERED, ANSWERED]
    assert mixed[0].reason == "no answer within 1.0 s"
    assert elapsed < deadline + 1.5, f"the slow node held the lookup for {elapsed:.2f} s"


def test_waiting_for_a_concurrency_slot_counts_against_the_deadline(cluster: Cluster) -> None:
    async def scenario() -> list[AgencyOutcome]:
        fanout = cluster.fanout(deadline=0.5, max_concurrency=1)
        async with fake_node(cluster, "slow") as (slow, _):
            try:
                return await fanout.query(
                    [slow, cluster.target(COURT)], cluster.query(LISTED_AT_COURT)
                )
            finally:
                await fanout.close()

    outcomes = run(scenario)
    # The one slot is held by the slow call until the deadline: the court node
    # is never asked, and the lookup still ends on time.
    assert states(outcomes) == [TIMEOUT, TIMEOUT]
    assert outcomes[1].reason == "no answer within 0.5 s"


def test_a_lookup_gives_up_its_wait_for_a_slot_at_its_own_deadline(cluster: Cluster) -> None:
    lookups = _lookups(cluster, [CLEAR_ORG])
    batch = cluster.federation.batch(lookups)

    async def scenario() -> tuple[list[AgencyOutcome], bool]:
        fanout = cluster.fanout(deadline=0.5, batch_deadline=5.0, max_concurrency=1)
        async with fake_node(cluster, "slow") as (slow, _):
            try:
                held = asyncio.create_task(fanout.batch([slow], batch, [lookups[0].query_id]))
                await asyncio.sleep(0)  # the batch takes the one slot
                waiting = asyncio.create_task(
                    fanout.query([cluster.target(COURT)], cluster.query(CLEAR_ORG))
                )
                done, _pending = await asyncio.wait(
                    {held, waiting}, return_when=asyncio.FIRST_COMPLETED
                )
                held.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await held
                return await waiting, done == {waiting}
            finally:
                await fanout.close()

    outcomes, query_first = run(scenario)
    # The slot holder has 5 s left; the single lookup does not wait for it.
    assert query_first, "the lookup waited for the batch's slot past its own deadline"
    assert states(outcomes) == [TIMEOUT]
    assert outcomes[0].reason == "no answer within 0.5 s"


def test_refusal_carries_the_code_and_the_node_reason(cluster: Cluster) -> None:
    async def scenario() -> list[AgencyOutcome]:
        fanout = cluster.fanout()
        try:
            return await fanout.query(cluster.healthy, cluster.query(PERSON))
        finally:
            await fanout.close()

    outcomes = run(scenario)
    assert states(outcomes) == [REFUSED] * 3
    for outcome in outcomes:
        assert outcome.reason.startswith("PERMISSION_DENIED: "), outcome.reason
        assert "never looked up" in outcome.reason
        assert outcome.answer is None


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("forged", "signed only by keys that are not trusted"),
        ("tampered", "signature does not verify"),
        ("wrong_type", "expected 'application/vnd.credence.answer.v1+proto'"),
        ("garbage", "is not a credence.v1.Answer protobuf"),
        ("other_query", "answer's query_id is 'someone-else'"),
        ("other_agency", "answer's agency is 'court-1', not the node's 'fake-1'"),
        ("other_hash", "query_hash is not the SHA-256 of the query sent"),
    ],
)
def test_bad_answers_are_invalid(cluster: Cluster, mode: str, match: str) -> None:
    async def scenario() -> list[AgencyOutcome]:
        fanout = cluster.fanout()
        async with fake_node(cluster, mode) as (fake, _):
            try:
                return await fanout.query([fake, cluster.target(COURT)], cluster.query(CLEAR_ORG))
            finally:
                await fanout.close()

    outcomes = run(scenario)
    assert states(outcomes) == [INVALID, ANSWERED]
    assert match in outcomes[0].reason
    assert outcomes[0].answer is None
    assert outcomes[0].answer_hash == b""


# -- batches ------------------------------------------------------------------------------


def _lookups(cluster: Cluster, identifiers: list[str]) -> list[queries.Lookup]:
    return [
        queries.Lookup(
            subject=cluster.federation.subject(identifier),
            grant=queries.public_register(),
            grant_id="",
            query_id=queries.new_query_id(),
        )
        for identifier in identifiers
    ]


def test_batch_answers_equal_single_answers(cluster: Cluster) -> None:
    identifiers = [LISTED_AT_COURT, LISTED_AT_TAX, CLEAR_ORG, PERSON]
    lookups = _lookups(cluster, identifiers)
    batch = cluster.federation.batch(lookups)
    batch_id = agency_pb2.BatchQuery.FromString(batch.payload).batch_id
    item_ids = [lookup.query_id for lookup in lookups]
    singles = [cluster.query(identifier) for identifier in identifiers]

    async def scenario() -> tuple[dict[str, list[AgencyOutcome]], list[list[AgencyOutcome]]]:
        fanout = cluster.fanout()
        try:
            by_item = await fanout.batch(cluster.healthy, batch, item_ids)
            one_by_one = [await fanout.query(cluster.healthy, query) for query in singles]
            return by_item, one_by_one
        finally:
            await fanout.close()

    by_item, one_by_one = run(scenario)
    assert list(by_item) == item_ids
    for query_id, single in zip(item_ids, one_by_one, strict=True):
        outcomes = by_item[query_id]
        assert [outcome.member_id for outcome in outcomes] == [COURT, TAX, FRAUD]
        assert states(outcomes) == states(single)
        for in_batch, alone in zip(outcomes, single, strict=True):
            if in_batch.answered:
                assert in_batch.answer is not None
                assert alone.answer is not None
                position = item_ids.index(query_id)
                assert read(cluster, in_batch, batch_id, position, len(item_ids)) == read(
                    cluster, alone
                )
            else:
                assert in_batch.reason == alone.reason
    items = len(item_ids)
    assert [listed(cluster, outcome, batch_id, 0, items) for outcome in by_item[item_ids[0]]] == [
        True,
        False,
        False,
    ]
    assert [listed(cluster, outcome, batch_id, 1, items) for outcome in by_item[item_ids[1]]] == [
        False,
        True,
        False,
    ]
    person = by_item[item_ids[3]]
    assert states(person) == [REFUSED] * 3
    assert person[0].reason.startswith("PERMISSION_DENIED: ")
    # One signed batch answer per node: its items share its hash.
    court_hashes = {by_item[query_id][0].answer_hash for query_id in item_ids[:3]}
    assert len(court_hashes) == 1
    assert len(court_hashes.pop()) == 32


def test_batch_whole_call_failures_apply_to_every_item(cluster: Cluster, dead_port: int) -> None:
    lookups = _lookups(cluster, [LISTED_AT_COURT, CLEAR_ORG])
    batch = cluster.federation.batch(lookups)
    item_ids = [lookup.query_id for lookup in lookups]

    async def scenario() -> dict[str, list[AgencyOutcome]]:
        fanout = cluster.fanout(batch_deadline=1.0)
        async with fake_node(cluster, "slow") as (slow, _):
            try:
                targets = [cluster.target(COURT), cluster.target(TAX, port=dead_port), slow]
                return await fanout.batch(targets, batch, item_ids)
            finally:
                await fanout.close()

    by_item = run(scenario)
    for query_id in item_ids:
        assert states(by_item[query_id]) == [ANSWERED, UNAVAILABLE, TIMEOUT]
        assert by_item[query_id][2].reason == "no answer within 1.0 s"


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("forged", "signed only by keys that are not trusted"),
        ("swapped", "batch answer item 0 is for query"),
        ("short", "batch answer has 2 items for 3 queries"),
        ("fail_after", "node ended the batch stream with INTERNAL after answering"),
    ],
)
def test_bad_batch_answers_are_invalid_for_every_item(
    cluster: Cluster, mode: str, match: str
) -> None:
    lookups = _lookups(cluster, [LISTED_AT_COURT, CLEAR_ORG, LISTED_AT_TAX])
    batch = cluster.federation.batch(lookups)
    item_ids = [lookup.query_id for lookup in lookups]

    async def scenario() -> dict[str, list[AgencyOutcome]]:
        fanout = cluster.fanout()
        async with fake_node(cluster, mode) as (fake, _):
            try:
                return await fanout.batch([fake], batch, item_ids)
            finally:
                await fanout.close()

    by_item = run(scenario)
    for query_id in item_ids:
        (outcome,) = by_item[query_id]
        assert outcome.state == INVALID
        assert match in outcome.reason


def test_honest_fake_batch_is_answered(cluster: Cluster) -> None:
    # The control for the forgeries above: the fake node's honest batch passes.
    lookups = _lookups(cluster, [CLEAR_ORG, LISTED_AT_TAX])
    batch = cluster.federation.batch(lookups)

    async def scenario() -> tuple[dict[str, list[AgencyOutcome]], list[bytes]]:
        fanout = cluster.fanout()
        async with fake_node(cluster, "honest") as (fake, servicer):
            try:
                ids = [lookup.query_id for lookup in lookups]
                return await fanout.batch([fake], batch, ids), servicer.sent
            finally:
                await fanout.close()

    by_item, sent = run(scenario)
    for (outcome,) in by_item.values():
        assert outcome.state == ANSWERED
        assert outcome.answer_hash == hashlib.sha256(sent[0]).digest()


# -- channels and inputs -----------------------------------------------------------------


def test_channels_are_opened_once_and_reused(cluster: Cluster) -> None:
    async def scenario() -> None:
        fanout = cluster.fanout()
        try:
            assert fanout.open_channels == 0
            first = await fanout.query(cluster.healthy, cluster.query(CLEAR_ORG))
            assert fanout.open_channels == 3
            channel = fanout.channel(cluster.target(COURT))
            assert channel.get_state() is grpc.ChannelConnectivity.READY
            second = await fanout.query(cluster.healthy, cluster.query(LISTED_AT_COURT))
            assert fanout.channel(cluster.target(COURT)) is channel
            assert fanout.open_channels == 3
            assert states(first) == states(second) == [ANSWERED] * 3
            await fanout.retain([cluster.target(COURT)])
            assert fanout.open_channels == 1
            assert fanout.channel(cluster.target(COURT)) is channel
        finally:
            await fanout.close()
        assert fanout.open_channels == 0
        assert channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN

    run(scenario)


def test_a_moved_node_gets_a_new_channel(cluster: Cluster, dead_port: int) -> None:
    async def scenario() -> None:
        fanout = cluster.fanout()
        try:
            old = fanout.channel(cluster.target(COURT, port=dead_port))
            new = fanout.channel(cluster.target(COURT))
            assert old is not new
            assert fanout.open_channels == 2
        finally:
            await fanout.close()

    run(scenario)


# -- a node that comes up while its channel is in reconnect backoff -------------------------


def test_a_node_up_after_refused_dials_answers_the_very_next_lookup(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The registry met this node before it listened (as `dev up`'s witnessing
    # rounds do): its channel is in reconnect backoff, which on its own would
    # fail every lookup at once, however healthy the node, until the next dial.
    data_dir = write_node_dir(cluster.federation, tmp_path, FRAUD)

    async def scenario() -> tuple[AgencyOutcome, AgencyOutcome]:
        dials = 0
        backed_off = asyncio.Event()

        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal dials
            dials += 1
            writer.close()
            if dials >= 4:
                backed_off.set()

        # Nobody serves the port yet: each dial is dropped before the TLS handshake.
        refuser = await asyncio.start_server(drop, "127.0.0.1", 0)
        port = int(refuser.sockets[0].getsockname()[1])
        target = cluster.target(FRAUD, port=port)
        fanout = cluster.fanout(deadline=30.0)
        node: RunningNode | None = None
        try:
            (before,) = await fanout.query([target], cluster.query(CLEAR_ORG))
            # The channel redials on its own after 0.5, 0.8 and 1.3 s (+-20%):
            # after its 4th dial the next one is at least 1.6 s away.
            async with asyncio.timeout(60):
                await backed_off.wait()
            refuser.close()
            await refuser.wait_closed()
            node = start_node(data_dir, clock=lambda: NOW, listen=f"127.0.0.1:{port}")
            (after,) = await fanout.query([target], cluster.query(CLEAR_ORG))
            return before, after
        finally:
            await fanout.close()
            refuser.close()
            if node is not None:
                node.stop(0)

    before, after = run(scenario)
    assert before.state == UNAVAILABLE, before.reason
    assert after.state == ANSWERED, after.reason
    assert not listed(cluster, after)


def test_a_refusal_from_before_the_lookup_began_is_not_reported_as_its_outcome(
    cluster: Cluster,
) -> None:
    # The narrow case: a dial refused moments before the node came up, too recently
    # for the channel to be replaced. The lookup waits out the rest of
    # REDIAL_SECONDS and dials again, rather than report that old refusal.
    court = cluster.nodes[COURT].port

    async def scenario() -> tuple[AgencyOutcome, AgencyOutcome, float]:
        forwarding = False
        writers: list[asyncio.StreamWriter] = []

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        async def gate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            if not forwarding:  # the node is not up yet: the dial is dropped
                writer.close()
                return
            node_reader, node_writer = await asyncio.open_connection("127.0.0.1", court)
            writers.append(node_writer)
            await asyncio.gather(pipe(reader, node_writer), pipe(node_reader, writer))

        server = await asyncio.start_server(gate, "127.0.0.1", 0)
        target = cluster.target(COURT, port=int(server.sockets[0].getsockname()[1]))
        fanout = cluster.fanout(deadline=30.0)
        loop = asyncio.get_running_loop()
        try:
            (before,) = await fanout.query([target], cluster.query(CLEAR_ORG))
            forwarding = True  # the node is up, an instant after its dial was refused
            started = loop.time()
            (after,) = await fanout.query([target], cluster.query(CLEAR_ORG))
            return before, after, loop.time() - started
        finally:
            await fanout.close()
            server.close()
            for writer in writers:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            await server.wait_closed()

    before, after, seconds = run(scenario)
    assert before.state == UNAVAILABLE, before.reason
    assert after.state == ANSWERED, after.reason
    assert seconds < 10, "the wait is the rest of REDIAL_SECONDS, not a reconnect backoff"


def test_a_dead_node_fails_fast_on_every_lookup_and_is_redialled_sparingly(
    cluster: Cluster, dead_port: int
) -> None:
    dead = cluster.target(TAX, port=dead_port)

    async def scenario() -> tuple[list[AgencyOutcome], list[grpc.aio.Channel], float]:
        # A deadline no test run reaches: UNAVAILABLE, not TIMEOUT, is the refusal at once.
        fanout = cluster.fanout(deadline=60.0)
        loop = asyncio.get_running_loop()
        outcomes: list[AgencyOutcome] = []
        channels: list[grpc.aio.Channel] = []
        try:
            started = loop.time()
            for _ in range(8):
                outcomes += await fanout.query(
                    [dead, cluster.target(COURT)], cluster.query(CLEAR_ORG)
                )
                channels.append(fanout.channel(dead))
                await asyncio.sleep(REDIAL_SECONDS / 2)
            elapsed = loop.time() - started
            assert fanout.open_channels == 2, "a replaced channel is not kept"
        finally:
            await fanout.close()
        return outcomes, channels, elapsed

    outcomes, channels, elapsed = run(scenario)
    assert states(outcomes) == [UNAVAILABLE, ANSWERED] * 8
    assert all("failed to connect" in outcome.reason for outcome in outcomes[::2])
    distinct = {id(channel): channel for channel in channels}.values()
    # Redialled, since the lookups outlast REDIAL_SECONDS, but not by every lookup.
    assert 2 <= len(distinct) <= 1 + elapsed / REDIAL_SECONDS
    assert all(channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN for channel in distinct)


@pytest.mark.parametrize("way", ["query", "batch", "recover", "channel"])
def test_every_way_to_a_node_replaces_its_channel_in_backoff(
    cluster: Cluster, dead_port: int, way: str
) -> None:
    dead = cluster.target(TAX, port=dead_port)
    lookups = _lookups(cluster, [CLEAR_ORG])
    batch = cluster.federation.batch(lookups)
    recovery = sign(payloads.RECOVERY_REQUEST, b"", [cluster.federation.registry_key])

    async def scenario() -> tuple[grpc.aio.Channel, grpc.aio.Channel, str]:
        fanout = cluster.fanout(deadline=60.0, batch_deadline=60.0)
        try:
            (refused,) = await fanout.query([dead], cluster.query(CLEAR_ORG))
            assert refused.state == UNAVAILABLE, refused.reason
            old = fanout.channel(dead)
            assert old.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
            await asyncio.sleep(REDIAL_SECONDS)
            reason = ""
            if way == "query":
                (outcome,) = await fanout.query([dead], cluster.query(CLEAR_ORG))
                reason = outcome.reason
            elif way == "batch":
                (reply,) = await fanout.batch_replies([dead], batch, [lookups[0].query_id])
                assert reply.failure is not None
                reason = reply.failure.reason
            elif way == "recover":
                (failure,) = await fanout.recover([dead], recovery)
                assert isinstance(failure, str)
                reason = failure
            new = fanout.channel(dead)
            return old, new, reason
        finally:
            await fanout.close()

    old, new, reason = run(scenario)
    assert new is not old
    assert old.get_state() is grpc.ChannelConnectivity.SHUTDOWN
    if way != "channel":
        assert "failed to connect" in reason, "the fresh channel's dial was refused at once"


def test_refuses_what_is_not_a_query_or_batch(cluster: Cluster) -> None:
    lookups = _lookups(cluster, [CLEAR_ORG, LISTED_AT_TAX])
    batch = cluster.federation.batch(lookups)

    async def scenario() -> None:
        fanout = cluster.fanout()
        try:
            with pytest.raises(InvalidInput, match=r"not 'application/vnd\.credence\.batch-query"):
                await fanout.query(cluster.healthy, batch)
            with pytest.raises(InvalidInput, match=r"not a credence\.v1\.Query"):
                await fanout.query(
                    cluster.healthy, sign(payloads.QUERY, b"\xff", [SigningKey.generate()])
                )
            with pytest.raises(InvalidInput, match="are not the query ids of the batch's 2 items"):
                await fanout.batch(
                    cluster.healthy, batch, [lookups[1].query_id, lookups[0].query_id]
                )
            with pytest.raises(InvalidInput, match=r"not 'application/vnd\.credence\.query"):
                await fanout.batch(cluster.healthy, cluster.query(CLEAR_ORG), [])
            assert fanout.open_channels == 0, "nothing was sent"
        finally:
            await fanout.close()

    run(scenario)


def test_refuses_bounds_that_make_no_sense(cluster: Cluster) -> None:
    with pytest.raises(InvalidInput, match=r"deadlines must be positive \(deadline 0 s"):
        cluster.fanout(deadline=0)
    with pytest.raises(InvalidInput, match=r"max_concurrency \(0\)"):
        cluster.fanout(max_concurrency=0)
    with pytest.raises(InvalidInput, match="does not certify the TLS key"):
        FanOut(
            key_pem=cluster.federation.members[COURT].tls_key_pem,
            cert_pem=cluster.federation.members[REGISTRY_ID].cert_pem,
            ca_pem=cluster.federation.ca.certificate_pem,
        )


# -- mask recovery ------------------------------------------------------------------------


def test_recovery_shares_come_back_and_a_dead_or_slow_node_is_named(
    cluster: Cluster, dead_port: int
) -> None:
    registry_key = cluster.federation.registry_key

    async def scenario() -> tuple[Recovery, Recovery]:
        fanout = cluster.fanout(deadline=1.0)

        async def ask(targets: list[AgencyTarget]) -> Recovery:
            return await recover(
                fanout, targets, query_id="q-1", missing=["gone"], log_promise_hash=b"",
                layout_id="fake-layout", count=3, batch=False, now=NOW,
                lifetime=timedelta(seconds=30), key=registry_key, registry_id="registry",
                log=lambda rows: 0,
            )  # fmt: skip

        async with fake_node(cluster, "honest") as (honest, _):
            try:
                shared = await ask([honest])
                async with fake_node(cluster, "slow") as (slow, _):
                    failed = await ask([cluster.target(TAX, port=dead_port), slow])
                return shared, failed
            finally:
                await fanout.close()

    shared, failed = run(scenario)
    assert shared.failure == ""
    assert shared.shares == {FAKE: [5, 5, 5]}
    assert len(shared.envelopes) == 1
    assert failed.shares == {}
    assert f"{TAX}: failed to connect" in failed.failure
    assert f"{FAKE}: no recovery share within 1.0 s" in failed.failure
