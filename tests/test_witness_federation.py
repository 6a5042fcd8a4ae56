"""Witnesses in a real federation over mTLS: nodes cosign, the registry publishes a quorum.

Built with the operator's commands (registry init, node init and enrol, members
approve) and served in-process with real TLS sockets; the nodes' witnesses
are their own ``WitnessService`` on the node's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import grpc
import pytest
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from central_registry.witnessing import RoundResult, witness_periodically
from credence.dev import synthetic
from credence.enrolment import enrol_proof, witness_key_proof
from credence.keys import SigningKey, load_signing_key
from credence.manifest import TrustedManifest
from credence.pki import generate_tls_key, make_csr
from credence.transparency.tile_reader import TileReader
from credence.transparency.witness_policy import policy_from_manifest, verify_cosigned
from credence.v1 import common_pb2, manifest_pb2, registry_pb2, registry_pb2_grpc

PROFILES = synthetic.AGENCY_PROFILES[:3]


@pytest.fixture(scope="module")
def federation(start_federation: StartFederation) -> InProcessFederation:
    federation = start_federation("witnessed")
    # The company first: every node then starts with a manifest that lists it.
    federation.enrol_member("lender", "company", "--purposes", "counterparty_verification")
    for profile in PROFILES:
        federation.add_agency(profile, subjects=20)
    return federation


def _manifest(federation: InProcessFederation) -> TrustedManifest:
    return federation.registry.running.manifests.current()


def _cosigned(federation: InProcessFederation) -> bytes:
    credentials = grpc.ssl_channel_credentials(federation.ca_pem)
    with grpc.secure_channel(federation.public, credentials) as channel:
        stub = registry_pb2_grpc.TransparencyLogServiceStub(channel)
        response = stub.GetTreeHead(registry_pb2.GetTreeHeadRequest(), timeout=10)
    return bytes(response.cosigned_checkpoint)


def test_every_agency_is_a_witness_and_the_quorum_is_a_majority(
    federation: InProcessFederation,
) -> None:
    manifest = _manifest(federation)
    assert [m.member_id for m in manifest.witnesses] == sorted(p.name for p in PROFILES)
    assert manifest.witness_quorum == 2
    # Companies do not witness.
    assert manifest.members["lender"].witness_key is None


def test_the_registry_serves_a_checkpoint_cosigned_by_a_quorum(
    federation: InProcessFederation,
) -> None:
    policy = policy_from_manifest(_manifest(federation))
    deadline = time.monotonic() + 30
    while True:
        cosigned = verify_cosigned(_cosigned(federation), policy, now=datetime.now(UTC))
        if len(cosigned.cosigners) == len(PROFILES) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(cosigned.cosigners) == len(PROFILES)
    assert cosigned.cosigned_at is not None
    assert abs((datetime.now(UTC) - cosigned.cosigned_at).total_seconds()) < 60


def test_a_registry_that_forgot_the_witnesses_sizes_learns_them_from_their_conflicts(
    federation: InProcessFederation,
) -> None:
    witnesses = federation.registry.running.witnesses
    assert witnesses is not None
    subject = synthetic.expected(PROFILES, 20).listed_organisations[0]
    with federation.requester("lender") as client:
        client.verify_organisation(federation.subject(subject))
    deadline = time.monotonic() + 30
    while min(witnesses._sizes.values(), default=0) == 0:  # every witness past size 0
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # As after a restart: every witness is asked from size 0 and answers with its
    # size in the conflict's trailer; the registry retries from there. The
    # periodic rounds pause meanwhile, so none refills the sizes first.
    running = federation.registry.running
    task = running.witnessing
    assert task is not None

    async def forget_then_round() -> RoundResult:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        witnesses._sizes.clear()  # the registry's memory of them, wiped
        result = await witnesses.run_round()
        running.witnessing = asyncio.ensure_future(
            witness_periodically(witnesses, 0.5, lambda _round: None)
        )
        return result

    result = federation.registry.run(forget_then_round())
    assert result.size > 0
    assert result.published
    assert len(result.cosigners) == len(PROFILES)
    assert result.refusals == {}


def test_lookups_are_answered_while_the_log_is_witnessed(federation: InProcessFederation) -> None:
    subject = synthetic.expected(PROFILES, 20).listed_organisations[0]
    with federation.requester("lender") as client:
        verified = client.verify_organisation(federation.subject(subject))
    coverage = verified.verdict.coverage
    assert coverage.answered == coverage.expected > 0


def test_the_http_checkpoint_is_the_cosigned_one_and_its_tiles_prove_it(
    federation: InProcessFederation,
) -> None:
    reader = TileReader(f"https://127.0.0.1:{federation.registry.http_port}", federation.ca_pem)
    try:
        note = reader.checkpoint()
        cosigned = verify_cosigned(
            note, policy_from_manifest(_manifest(federation)), now=datetime.now(UTC)
        )
        assert len(cosigned.cosigners) >= 2
        # Its tiles recompute the root the witnesses vouched for.
        reader.tree(cosigned.checkpoint.size, cosigned.checkpoint.root_hash)
    finally:
        reader.close()


def test_node_init_made_a_private_witness_key_that_the_manifest_publishes(
    federation: InProcessFederation,
) -> None:
    for profile in PROFILES:
        path = federation.node_dir(profile.name) / "witness.key"
        assert path.stat().st_mode & 0o777 == 0o600
        key = load_signing_key(path)
        assert _manifest(federation).members[profile.name].witness_key == key.public.raw()
        assert "witness = true" in (federation.node_dir(profile.name) / "node.toml").read_text()


def _enrol_agency(
    federation: InProcessFederation, member_id: str, witness_key: SigningKey, proof_key: SigningKey
) -> None:
    """Enrol as an attacker would: any witness key, a proof made by any key."""
    tls_key, signing_key = generate_tls_key(), SigningKey.generate()
    csr = make_csr(tls_key, member_id)
    request = registry_pb2.EnrolRequest(
        member_id=member_id,
        display_name=member_id,
        role=manifest_pb2.ROLE_AGENCY,
        csr_pem=csr.decode(),
        signing_key=common_pb2.PublicKey(kid=signing_key.kid, ed25519=signing_key.public.raw()),
        endpoint="127.0.0.1:9",
        record_kinds=["court_judgment"],
        signing_key_proof=enrol_proof(signing_key, csr),
        witness_key=common_pb2.PublicKey(kid=witness_key.kid, ed25519=witness_key.public.raw()),
        witness_key_proof=witness_key_proof(proof_key, csr),
    )
    credentials = grpc.ssl_channel_credentials(federation.ca_pem)
    with grpc.secure_channel(federation.public, credentials) as channel:
        registry_pb2_grpc.EnrolmentServiceStub(channel).Enrol(request, timeout=10)


def test_a_member_cannot_enrol_another_members_witness_key(
    federation: InProcessFederation,
) -> None:
    court_key = load_signing_key(federation.node_dir("court") / "witness.key")
    # Without the key: the proof of possession fails.
    with pytest.raises(grpc.RpcError) as no_proof:
        _enrol_agency(federation, "mallory", court_key, SigningKey.generate())
    assert no_proof.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # With it (stolen): the key is taken, so no member counts twice in the quorum.
    with pytest.raises(grpc.RpcError) as taken:
        _enrol_agency(federation, "mallory", court_key, court_key)
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "witness key is enrolled for another member" in (taken.value.details() or "")
    # Nothing was enrolled: mallory can be enrolled afresh with its own key.
    own = SigningKey.generate()
    _enrol_agency(federation, "mallory", own, own)
