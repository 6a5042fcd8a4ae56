"""Witnesses in a real federation over mTLS: nodes cosign, the registry publishes a quorum.

Built with the operator's commands (registry init, node init and enrol, members
approve) and served in-process with real TLS sockets; the nodes' witnesses
are their own ``WitnessService`` on the node's server.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest
from support.fixtures import StartFederation
from support.inprocess import InProcessFederation

from credence.dev import synthetic
from credence.manifest import TrustedManifest
from credence.transparency.tile_reader import TileReader
from credence.transparency.witness_policy import policy_from_manifest, verify_cosigned
from credence.v1 import registry_pb2, registry_pb2_grpc

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
