"""A registry that shows two views of its log, or stops publishing, stops the federation.

Written from the registry operator's side: it holds the log key and the
registry's certificate, so it can sign any checkpoint and call every
witness. A split view (two checkpoints of one size, each consistent with
what the witnesses had) gets at most one quorum; the witness shown the
other view refuses naming the inconsistency; and the node whose witness was
shown the minority view stops answering once the majority view is published.
A registry that stops publishing cosigned checkpoints stops getting answers,
and the nodes' Health says NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from agency_node.models import WitnessedCheckpoint
from agency_node.server import RunningNode
from central_registry import database as registry_database
from central_registry import transparency
from central_registry.models import LogEntry
from credence.client.results import ScreenRow
from credence.dev import synthetic
from credence.keys import load_signing_key
from credence.rpc.tls import channel_credentials
from credence.transparency import merkle
from credence.transparency.checkpoint import (
    Checkpoint,
    log_origin,
    parse_checkpoint,
    sign_checkpoint,
)
from credence.transparency.cosignature import (
    AddCheckpointRequest,
    format_add_checkpoint,
    response_signatures,
)
from credence.transparency.note import NoteSignature, add_signatures, parse_note
from credence.transparency.witness_policy import (
    QuorumNotMet,
    policy_from_manifest,
    verify_cosigned,
)
from credence.v1 import common_pb2, witness_pb2, witness_pb2_grpc

PROFILES = synthetic.AGENCY_PROFILES[:3]


def _stop_witnessing(federation: InProcessFederation) -> None:
    running = federation.registry.running
    task = running.witnessing
    assert task is not None

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    federation.registry.run(stop())


def _wait(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def _witness_state(node: RunningNode, origin: str) -> tuple[int, bytes]:
    with Session(node.engine) as session:
        row = session.get(WitnessedCheckpoint, origin)
        return (-1, b"") if row is None else (row.tree_size, row.root)


def _health(node: RunningNode, federation: InProcessFederation) -> int:
    credentials = federation.members["lender"].credentials
    with grpc.secure_channel(
        f"127.0.0.1:{node.port}",
        channel_credentials(credentials.key_pem, credentials.cert_pem, credentials.ca_pem),
    ) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)  # type: ignore[attr-defined]
        status: int = reply.status
        return status


def _as_registry(federation: InProcessFederation, node: RunningNode) -> grpc.Channel:
    registry_dir = federation.registry_dir
    return grpc.secure_channel(
        f"127.0.0.1:{node.port}",
        channel_credentials(
            (registry_dir / "tls.key").read_bytes(),
            (registry_dir / "tls.crt").read_bytes(),
            federation.ca_pem,
        ),
    )


def _add_checkpoint(
    federation: InProcessFederation, node: RunningNode, request: AddCheckpointRequest
) -> bytes:
    with _as_registry(federation, node) as channel:
        stub = witness_pb2_grpc.WitnessServiceStub(channel)
        response = stub.AddCheckpoint(
            witness_pb2.AddCheckpointRequest(body=format_add_checkpoint(request)), timeout=10
        )
    return bytes(response.cosignatures)


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    federation = start_federation("split-view")
    federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
    for profile in PROFILES:
        federation.add_agency(profile, subjects=20)
    return federation


def test_a_split_view_gets_one_quorum_and_stops_the_witness_shown_the_other(
    federation: InProcessFederation,
) -> None:
    manifest = federation.registry.running.manifests.current()
    origin = log_origin(manifest.federation_id)
    assert manifest.witness_quorum == 2
    # C is the tax office: a blacklist lookup asks it.
    a, b, c = (federation.nodes[name] for name in ("court", "bank", "tax-office"))
    subject = synthetic.expected(PROFILES, 20).listed_organisations[0]
    with federation.requester("lender") as client:
        client.verify_organisation(federation.subject(subject))
    # Every witness holds the same honest checkpoint, past that lookup; then the
    # registry stops its honest rounds and plays its own game.
    _wait(lambda: len({_witness_state(node, origin) for node in (a, b, c)}) == 1)
    _wait(lambda: _witness_state(a, origin)[0] > 0)
    _stop_witnessing(federation)
    _wait(lambda: len({_witness_state(node, origin) for node in (a, b, c)}) == 1)
    held, held_root = _witness_state(a, origin)

    # The honest view: a lookup grows the log, the registry signs its checkpoint.
    with federation.requester("lender") as client:
        client.verify_organisation(federation.subject(subject))
    engine = registry_database.create_engine_for(
        f"sqlite:///{federation.registry_dir / 'registry.db'}"
    )
    log_key = load_signing_key(federation.registry_dir / "signing.key")
    with Session(engine) as session, session.begin():
        honest_note = transparency.tree_head(
            session, log_key=log_key, origin=origin, now=datetime.now(UTC)
        )
        size = transparency.log_size(session)
        honest_proof = transparency.consistency_proof(session, held, size)
        leaves = list(session.scalars(select(LogEntry.commitment).order_by(LogEntry.idx)))
    engine.dispose()
    assert size > held

    # The other view: the same first `held` leaves, then forged ones, same size.
    forged = merkle.MemorySubtrees()
    for index, commitment in enumerate(leaves[:held]):
        merkle.append(forged, index, merkle.leaf_hash(commitment))
    assert merkle.root(forged, held) == held_root
    for index in range(held, size):
        merkle.append(forged, index, merkle.leaf_hash(bytes([index % 251]) * 32))
    forged_note = sign_checkpoint(Checkpoint(origin, size, merkle.root(forged, size)), log_key)
    forged_proof = merkle.consistency_proof(forged, held, size)

    honest = AddCheckpointRequest(held, tuple(honest_proof), honest_note)
    other = AddCheckpointRequest(held, tuple(forged_proof), forged_note)
    honest_lines = [_add_checkpoint(federation, node, honest) for node in (a, b)]
    other_lines = [_add_checkpoint(federation, c, other)]

    # B, having cosigned the honest view, refuses the other one and says why.
    with pytest.raises(grpc.RpcError) as refused:
        _add_checkpoint(federation, b, AddCheckpointRequest(size, (), forged_note))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "inconsistent checkpoint" in (refused.value.details() or "")
    assert "split view" in (refused.value.details() or "")
    assert _witness_state(b, origin) == (size, _root_of(honest_note))

    # At most one quorum: the honest view has two of three, the other one.
    policy = policy_from_manifest(manifest)
    now = datetime.now(UTC)
    honest_cosigned = add_signatures(honest_note, _lines(honest_note, honest_lines))
    assert len(verify_cosigned(honest_cosigned, policy, now=now).cosigners) == 2
    forged_cosigned = add_signatures(forged_note, _lines(forged_note, other_lines))
    with pytest.raises(QuorumNotMet, match="cosigned by 1 of the 3"):
        verify_cosigned(forged_cosigned, policy, now=now)

    # The registry publishes its quorum; C's node sees it contradicts its witness.
    witnesses = federation.registry.running.witnesses
    assert witnesses is not None
    witnesses._latest = honest_cosigned  # the registry publishing its view
    gate = c.gate
    assert gate is not None
    _wait(lambda: gate.refusal(datetime.now(UTC)) is not None)
    reason = gate.refusal(datetime.now(UTC)) or ""
    assert "split view" in reason
    assert f"size {size}" in reason
    assert _health(c, federation) == health_pb2.HealthCheckResponse.NOT_SERVING
    # And the lookup that reaches C is refused by it, saying why.
    with federation.requester("lender") as client:
        verdict = client.verify_organisation(federation.subject(subject)).verdict
    (tax_office,) = [
        entry for entry in verdict.coverage.agencies if entry.member_id == "tax-office"
    ]
    assert "split view" in tax_office.reason
    assert verdict.blacklist.status != common_pb2.BLACKLIST_STATUS_CLEAR


def _lines(note: bytes, bodies: list[bytes]) -> list[NoteSignature]:
    return [line for body in bodies for line in response_signatures(note, body)]


def _root_of(note: bytes) -> bytes:
    return parse_checkpoint(parse_note(note).text).root_hash


def test_a_registry_that_stops_publishing_stops_getting_answers(
    start_federation: StartFederation,
) -> None:
    federation = start_federation("stopped-publishing")
    federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
    court = federation.add_agency(
        synthetic.AGENCY_PROFILES[0], subjects=20, settings={"checkpoint_max_age_seconds": 3}
    )
    subject = federation.subject(synthetic.expected(PROFILES[:1], 20).listed_organisations[0])
    with federation.requester("lender") as client:
        answered = client.verify_organisation(subject).verdict
    assert answered.coverage.answered == answered.coverage.expected == 1
    assert _health(court, federation) == health_pb2.HealthCheckResponse.SERVING

    _stop_witnessing(federation)
    gate = court.gate
    assert gate is not None
    _wait(lambda: gate.refusal(datetime.now(UTC)) is not None)
    _wait(lambda: _health(court, federation) == health_pb2.HealthCheckResponse.NOT_SERVING)
    with federation.requester("lender") as client:
        refused = client.verify_organisation(subject).verdict
    assert refused.coverage.answered == 0
    (entry,) = refused.coverage.agencies
    assert "stopped publishing cosigned checkpoints" in entry.reason
    assert refused.blacklist.status == common_pb2.BLACKLIST_STATUS_INCOMPLETE
    # Screening asks the node in batches: refused the same way.
    with federation.requester("lender") as client:
        (screened,) = client.screen([ScreenRow("row-1", subject)])
    assert screened.verdict is not None
    assert screened.verdict.status == "incomplete"
    assert screened.verdict.verdict.coverage.answered == 0
