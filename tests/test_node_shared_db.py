"""Two node processes of one agency on one database answer as one node.

Both serve the same data directory (so the same keys, manifest and
database) on their own ports. The replay cache lives in the database: a
query the first node answered is refused by the second, and each refusal is
in the one query log. Run on SQLite (one file) and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from support.blind import unmask

from agency_node import database
from agency_node.importer import import_records
from agency_node.models import QueryLogEntry
from agency_node.offline_node import write_node_dir
from agency_node.server import RunningNode, start_node
from credence import payloads
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, verify_message
from credence.keys import KeySet
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2, agency_pb2_grpc

COURT = "court-1"
LISTED_ORG = "reg:CN:LISTED001"
CLEAR_ORG = "reg:CN:CLEAR0001"
RECORDS_CSV = """\
record_id,identifier,kind,category,amount,currency,status,occurred_at,expires_at,disputed,\
days_overdue
j-1,reg:CN:LISTED001,court_judgment,dishonest_debtor,125000.00,CNY,active,2025-03-01,,false,
"""


@pytest.fixture
def federation() -> Federation:
    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    federation.enrol("acme")
    return federation


@pytest.fixture
def node_dir(tmp_path: Path, federation: Federation, database_url: str) -> Path:
    data_dir = write_node_dir(federation, tmp_path, COURT, database_url=database_url)
    (tmp_path / "records.csv").write_text(RECORDS_CSV)
    engine = database.create_engine_for(database_url)
    import_records(
        database.session_factory(engine),
        tmp_path / "records.csv",
        federation.pseudonymisation_key,
        now=NOW,
    )
    engine.dispose()
    return data_dir


@pytest.fixture
def nodes(node_dir: Path) -> Iterator[tuple[RunningNode, RunningNode]]:
    first = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        second = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    except BaseException:
        first.stop(0)
        raise
    yield first, second
    second.stop(0)
    first.stop(0)


def _channel(federation: Federation, node: RunningNode) -> grpc.Channel:
    registry = federation.members[REGISTRY_ID]
    credentials = channel_credentials(
        registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
    )
    return grpc.secure_channel(f"127.0.0.1:{node.port}", credentials)


def _ask(federation: Federation, node: RunningNode, envelope: Envelope) -> agency_pb2.Answer:
    with _channel(federation, node) as channel:
        response = agency_pb2_grpc.AgencyNodeServiceStub(channel).AnswerQuery(
            agency_pb2.AnswerQueryRequest(query=envelope.to_proto()), timeout=10
        )
    answer = verify_message(
        Envelope.from_proto(response.answer),
        payloads.ANSWER,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.Answer,
    )
    assert answer.query_hash == hashlib.sha256(envelope.payload).digest()
    return answer


def _outcomes(database_url: str) -> list[tuple[str, str, str]]:
    engine = database.create_engine_for(database_url)
    try:
        with database.session_factory(engine)() as session:
            rows = session.scalars(select(QueryLogEntry).order_by(QueryLogEntry.id))
            return [(row.query_id, row.outcome, row.status_code) for row in rows]
    finally:
        engine.dispose()


def test_two_nodes_on_one_database_answer_alike(
    federation: Federation, nodes: tuple[RunningNode, RunningNode]
) -> None:
    first, second = nodes
    assert first.port != second.port
    for identifier, listed in ((LISTED_ORG, True), (CLEAR_ORG, False)):
        subject = federation.subject(identifier)
        answers = [_ask(federation, node, federation.query(subject)) for node in nodes]
        opened = [unmask(a, federation, agency=COURT, label=a.query_id) for a in answers]
        assert [answer.listed for answer in opened] == [listed, listed]


def test_a_query_answered_by_one_node_is_refused_by_the_other(
    federation: Federation, nodes: tuple[RunningNode, RunningNode], database_url: str
) -> None:
    first, second = nodes
    envelope = federation.query(federation.subject(LISTED_ORG))
    answer = _ask(federation, first, envelope)
    for node in (second, first):
        with pytest.raises(grpc.RpcError) as caught:
            _ask(federation, node, envelope)
        assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
        assert f"query {answer.query_id} was already received" in (caught.value.details() or "")
    # Both nodes log to the one query log: the answer, then both refusals.
    assert _outcomes(database_url)[-3:] == [
        (answer.query_id, "answered", "OK"),
        (answer.query_id, "refused", "ALREADY_EXISTS"),
        (answer.query_id, "refused", "ALREADY_EXISTS"),
    ]
