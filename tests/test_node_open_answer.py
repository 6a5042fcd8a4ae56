"""``credence node open-answer``: the operator opens an answer from the node's own query log.

One node of an offline federation answers a real query over mTLS; the
command, run in-process through :func:`credence.cli.main`, shows the
cleartext vector slot by slot with the masks the node added, which the test
recomputes from the agencies' agreement keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from support.blind import masks_of

from agency_node.offline_node import write_node_dir
from agency_node.server import RunningNode, start_node
from credence.blind.layout import for_scorecard
from credence.blind.sums import to_signed
from credence.cli import main
from credence.dev.offline_federation import NOW, REGISTRY_ID, Federation
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2, agency_pb2_grpc

COURT, BANK = "court-1", "bank-1"
AUDIENCE = sorted((COURT, BANK))
LAYOUT = for_scorecard(default_scorecard())


@pytest.fixture
def answered(tmp_path: Path) -> tuple[Federation, Path, agency_pb2.Answer]:
    federation = Federation.create()
    for agency in AUDIENCE:
        federation.add_agency(agency, ("court_judgment",))
    federation.enrol("acme")
    node_dir = write_node_dir(federation, tmp_path, COURT)
    node: RunningNode = start_node(node_dir, clock=lambda: NOW, listen="127.0.0.1:0")
    try:
        registry = federation.members[REGISTRY_ID]
        credentials = channel_credentials(
            registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
        )
        with grpc.secure_channel(f"127.0.0.1:{node.port}", credentials) as channel:
            stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
            query = federation.query(federation.subject("reg:CN:91310000MA1FL0001X"))
            response = stub.AnswerQuery(
                agency_pb2.AnswerQueryRequest(query=query.to_proto()), timeout=30
            )
        answer = agency_pb2.Answer.FromString(response.answer.payload)
    finally:
        node.stop(0)
    return federation, node_dir, answer


def test_open_answer_shows_the_cleartext_vector_and_the_masks_by_slot(
    answered: tuple[Federation, Path, agency_pb2.Answer], capsys: pytest.CaptureFixture[str]
) -> None:
    federation, node_dir, answer = answered
    masks = masks_of(federation, COURT, AUDIENCE, answer.query_id, LAYOUT.length)
    vector = [
        to_signed((sent - mask) % (1 << 64))
        for sent, mask in zip(answer.masked, masks, strict=True)
    ]

    assert main(["node", "open-answer", "--dir", str(node_dir), answer.query_id, "--json"]) == 0
    opened = json.loads(capsys.readouterr().out)
    assert (opened["query_id"], opened["batch_id"]) == (answer.query_id, None)
    assert (opened["layout_id"], opened["audience"]) == (LAYOUT.layout_id, AUDIENCE)
    assert [slot["slot"] for slot in opened["slots"]] == list(LAYOUT.slots)
    assert [slot["value"] for slot in opened["slots"]] == vector
    assert [slot["mask"] for slot in opened["slots"]] == masks
    assert [slot["masked"] for slot in opened["slots"]] == list(answer.masked)

    assert main(["node", "open-answer", "--dir", str(node_dir), answer.query_id]) == 0
    text = capsys.readouterr().out
    assert f"answer to {answer.query_id}, answered at" in text
    listed = next(line for line in text.splitlines() if line.startswith("listed "))
    assert listed.split()[1:] == [str(vector[0]), str(masks[0]), str(answer.masked[0])]


def test_open_answer_names_an_id_this_node_never_answered(
    answered: tuple[Federation, Path, agency_pb2.Answer], capsys: pytest.CaptureFixture[str]
) -> None:
    _, node_dir, _ = answered
    assert main(["node", "open-answer", "--dir", str(node_dir), "no-such-query"]) == 1
    error = capsys.readouterr().err
    assert "this node kept no answer for 'no-such-query'" in error
