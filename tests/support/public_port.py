"""A registry whose public port a test or benchmark floods, and enrolments to flood it with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from sqlalchemy import func, select

from central_registry.models import Member, RateBucket
from central_registry.server import RegistryThread
from credence.enrolment import enrol_proof
from credence.keys import SigningKey
from credence.pki import generate_tls_key, make_csr
from credence.v1 import common_pb2, manifest_pb2, registry_pb2, registry_pb2_grpc


@contextmanager
def public_stub(
    registry: RegistryThread, directory: Path
) -> Iterator[registry_pb2_grpc.EnrolmentServiceStub]:
    """An enrolment stub on one TLS channel to the public port (no client certificate)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.crt").read_bytes()
    )
    # The client sends whatever it is given: the server's limit is under test.
    options = [("grpc.max_send_message_length", -1)]
    with grpc.secure_channel(
        f"127.0.0.1:{registry.public_port}", credentials, options=options
    ) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield registry_pb2_grpc.EnrolmentServiceStub(channel)


def enrol_request(member_id: str, display_name: str | None = None) -> registry_pb2.EnrolRequest:
    """A valid company enrolment of ``member_id``, signed by a fresh key."""
    csr = make_csr(generate_tls_key(), member_id)
    key = SigningKey.generate()
    return registry_pb2.EnrolRequest(
        member_id=member_id,
        display_name=member_id if display_name is None else display_name,
        role=manifest_pb2.ROLE_COMPANY,
        csr_pem=csr.decode("ascii"),
        signing_key=common_pb2.PublicKey(kid=key.kid, ed25519=key.public.raw()),
        signing_key_proof=enrol_proof(key, csr),
    )


def enrol_outcomes(
    stub: registry_pb2_grpc.EnrolmentServiceStub, requests: list[registry_pb2.EnrolRequest]
) -> list[grpc.StatusCode]:
    """Send each enrolment in turn; the status code of each (OK when accepted)."""
    codes = []
    for request in requests:
        try:
            stub.Enrol(request, timeout=60)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    return codes


def row_counts(registry: RegistryThread) -> tuple[int, int, int]:
    """(members, pending members, rate buckets) in the registry's database."""
    with registry.running.engine.connect() as connection:
        members = connection.scalar(select(func.count()).select_from(Member))
        pending = connection.scalar(
            select(func.count()).select_from(Member).where(Member.state == "pending")
        )
        buckets = connection.scalar(select(func.count()).select_from(RateBucket))
    return int(members or 0), int(pending or 0), int(buckets or 0)
