"""The node's side of blind aggregation over real mTLS: masked answers and mask recovery.

From the registry's side (and as a registry that tries to unmask): an answer
carries no cleartext part, only masked words that the node's own kept vector
and masks explain; a recovery share is the node's masks with the missing
agencies; a recovery that would unmask an answered agency is refused, logged,
and gives nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from sqlalchemy import select
from support.blind import masks_of

from agency_node import database
from agency_node.answer_vectors import open_answer
from agency_node.models import QueryLogEntry
from agency_node.offline_node import write_node_dir
from agency_node.recovery import RECOVERY_PURPOSE
from agency_node.server import RunningNode, start_node
from credence import payloads
from credence.blind.layout import for_scorecard
from credence.blind.recovery_leaf import recovery_leaves
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.envelope import Envelope, sign, verify_message
from credence.keys import KeySet
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2, agency_pb2_grpc

COURT, BANK, TAX = "court-1", "bank-1", "tax-1"
AUDIENCE = sorted((COURT, BANK, TAX))


@pytest.fixture
def federation() -> Federation:
    federation = Federation.create()
    for agency in AUDIENCE:
        federation.add_agency(agency, ("court_judgment",))
    federation.enrol("acme")
    return federation


@pytest.fixture
def node_dir(tmp_path: Path, federation: Federation) -> Path:
    return write_node_dir(federation, tmp_path, COURT)


@pytest.fixture
def node(node_dir: Path) -> Iterator[RunningNode]:
    running = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    yield running
    running.stop(0)


@pytest.fixture
def stub(
    federation: Federation, node: RunningNode
) -> Iterator[agency_pb2_grpc.AgencyNodeServiceStub]:
    registry = federation.members[REGISTRY_ID]
    credentials = channel_credentials(
        registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
    )
    with grpc.secure_channel(f"127.0.0.1:{node.port}", credentials) as channel:
        yield agency_pb2_grpc.AgencyNodeServiceStub(channel)


def _answer(
    stub: agency_pb2_grpc.AgencyNodeServiceStub, federation: Federation
) -> agency_pb2.Answer:
    query = federation.query(federation.subject("reg:CN:91310000MA1FL0001X"))
    response = stub.AnswerQuery(agency_pb2.AnswerQueryRequest(query=query.to_proto()), timeout=10)
    return verify_message(
        Envelope.from_proto(response.answer),
        payloads.ANSWER,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.Answer,
    )


def _request(
    federation: Federation, query_id: str, missing: list[str], answered: list[str]
) -> agency_pb2.RecoverMasksRequest:
    layout = for_scorecard(default_scorecard())
    request = agency_pb2.RecoveryRequest(
        query_id=query_id,
        missing=missing,
        answered=answered,
        layout_id=layout.layout_id,
        count=layout.length,
        log_leaves=recovery_leaves(query_id, missing),
    )
    request.issued_at.FromDatetime(NOW)
    request.expires_at.FromDatetime(NOW + timedelta(seconds=30))
    envelope = sign(
        payloads.RECOVERY_REQUEST, request.SerializeToString(), [federation.registry_key]
    )
    return agency_pb2.RecoverMasksRequest(request=envelope.to_proto())


def _recovery_rows(node_dir: Path) -> list[tuple[str, str]]:
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    try:
        with database.session_factory(engine)() as session:
            rows = session.scalars(
                select(QueryLogEntry)
                .where(QueryLogEntry.purpose == RECOVERY_PURPOSE)
                .order_by(QueryLogEntry.id)
            )
            return [(row.outcome, row.status_code) for row in rows]
    finally:
        engine.dispose()


def test_an_answer_carries_only_masked_words_that_the_kept_vector_explains(
    federation: Federation, stub: agency_pb2_grpc.AgencyNodeServiceStub, node_dir: Path
) -> None:
    answer = _answer(stub, federation)
    # No cleartext part on the wire: only the masked vector and its layout.
    assert {field.name for field, _ in answer.ListFields()} <= {
        "query_id", "agency", "query_hash", "answered_at", "masked", "layout_id",
    }  # fmt: skip
    assert not len(UnknownFieldSet(answer))
    layout = for_scorecard(default_scorecard())
    assert (answer.layout_id, len(answer.masked)) == (layout.layout_id, layout.length)
    masks = masks_of(federation, COURT, AUDIENCE, answer.query_id, layout.length)
    assert all(masks), "every word is masked"
    engine = database.create_engine_for(database.sqlite_url_for(node_dir))
    try:
        with database.session_factory(engine)() as session:
            opened = open_answer(session, answer.query_id)
    finally:
        engine.dispose()
    # The node kept the cleartext and the masks it added; their sum is what left it.
    assert opened.masks == tuple(masks)
    assert opened.masked == tuple(answer.masked)
    assert opened.audience == tuple(AUDIENCE)


def test_a_recovery_share_is_the_nodes_masks_with_the_missing_agency(
    federation: Federation, stub: agency_pb2_grpc.AgencyNodeServiceStub, node_dir: Path
) -> None:
    answer = _answer(stub, federation)
    response = stub.RecoverMasks(
        _request(federation, answer.query_id, [TAX], [BANK, COURT]), timeout=10
    )
    share = verify_message(
        Envelope.from_proto(response.share),
        payloads.RECOVERY_SHARE,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.RecoveryShare,
    )
    length = for_scorecard(default_scorecard()).length
    # The court sorts before the tax office: it added that pair's stream.
    only_tax = masks_of(federation, COURT, [COURT, TAX], answer.query_id, length)
    assert list(share.share) == only_tax
    assert (share.agency, list(share.missing)) == (COURT, [TAX])
    assert _recovery_rows(node_dir) == [("answered", "OK")]


@pytest.mark.parametrize(
    ("missing", "answered", "code"),
    [
        # The registry names the node itself missing: its masks would unmask its answer.
        ([COURT], [BANK], grpc.StatusCode.PERMISSION_DENIED),
        # An agency the request itself lists as answered is named missing too.
        ([BANK], [BANK, COURT], grpc.StatusCode.PERMISSION_DENIED),
        # The node is not listed as answered.
        ([TAX], [BANK], grpc.StatusCode.PERMISSION_DENIED),
        # An agency outside the query's audience.
        (["stranger-1"], [BANK, COURT], grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_a_recovery_that_would_unmask_an_answered_agency_is_refused_and_logged(
    federation: Federation,
    stub: agency_pb2_grpc.AgencyNodeServiceStub,
    node_dir: Path,
    missing: list[str],
    answered: list[str],
    code: grpc.StatusCode,
) -> None:
    answer = _answer(stub, federation)
    with pytest.raises(grpc.RpcError) as caught:
        stub.RecoverMasks(_request(federation, answer.query_id, missing, answered), timeout=10)
    assert caught.value.code() == code
    assert _recovery_rows(node_dir) == [("refused", code.name)]


def test_a_second_missing_set_and_an_unanswered_query_are_refused(
    federation: Federation, stub: agency_pb2_grpc.AgencyNodeServiceStub, node_dir: Path
) -> None:
    answer = _answer(stub, federation)
    stub.RecoverMasks(_request(federation, answer.query_id, [TAX], [BANK, COURT]), timeout=10)
    # A second set would give the court's mask with the bank alone: refused.
    with pytest.raises(grpc.RpcError) as second:
        stub.RecoverMasks(_request(federation, answer.query_id, [BANK], [COURT, TAX]), timeout=10)
    assert second.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as unknown:
        stub.RecoverMasks(_request(federation, "never-asked", [TAX], [BANK, COURT]), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert _recovery_rows(node_dir) == [
        ("answered", "OK"),
        ("refused", "PERMISSION_DENIED"),
        ("refused", "NOT_FOUND"),
    ]
