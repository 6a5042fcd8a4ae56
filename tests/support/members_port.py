"""A real registry, a member on its mutual-TLS port, and the database's size.

Shared by ``tests/hostile/test_amplification.py`` and ``bench/bench_amplification.py``: the
registry runs in a :class:`central_registry.server.RegistryThread` after
``credence registry init``, the member enrols over the public port and is
approved by the CLI, and its raw stub sends whatever it is given (the
registry's limits are under test, not the SDK's).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from central_registry.config import DATABASE_FILE
from central_registry.server import RegistryThread
from credence.client.enrol import collect_enrolment, enrol
from credence.keys import SigningKey, private_key_pem
from credence.pki import generate_tls_key, make_csr
from credence.rpc.tls import channel_credentials
from credence.v1 import common_pb2, registry_pb2_grpc
from support.registry import init_registry, run

MEMBER_ID = "acme"


def person(number: int) -> common_pb2.SubjectRef:
    """A well-formed reference of a person (the registry cannot tell it from a real one)."""
    ref = hashlib.sha256(f"person {number}".encode()).digest()
    return common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_PERSON, ref=ref)


def organisation(number: int) -> common_pb2.SubjectRef:
    """A well-formed reference of an organisation."""
    ref = hashlib.sha256(f"organisation {number}".encode()).digest()
    return common_pb2.SubjectRef(type=common_pb2.SUBJECT_TYPE_ORGANISATION, ref=ref)


@dataclass
class MembersPort:
    """A started registry with one approved company member."""

    data_dir: Path
    thread: RegistryThread
    stub: registry_pb2_grpc.RegistryServiceStub

    def database_bytes(self) -> int:
        """The bytes the registry's SQLite database holds in use, after a checkpoint.

        The write-ahead log is checkpointed into the main file first (the
        registry is idle between calls), then the in-use pages are counted:
        ``(page_count - freelist_count) * page_size``. Pages are 4 KiB, so a
        comparison is exact to a page.
        """
        connection = sqlite3.connect(self.data_dir / DATABASE_FILE)
        try:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "the registry's database could not be checkpointed"
            pages = connection.execute("PRAGMA page_count").fetchone()[0]
            free = connection.execute("PRAGMA freelist_count").fetchone()[0]
            size = connection.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * size)
        finally:
            connection.close()

    def log_rows(self) -> int:
        """How many entries the transparency log holds."""
        connection = sqlite3.connect(self.data_dir / DATABASE_FILE)
        try:
            return int(connection.execute("SELECT count(*) FROM log_entries").fetchone()[0])
        finally:
            connection.close()

    def refusals(self) -> list[tuple[str, str]]:
        """``(kinds, reason)`` of every refused entry, in log order."""
        connection = sqlite3.connect(self.data_dir / DATABASE_FILE)
        try:
            rows = connection.execute(
                "SELECT kinds, reason FROM log_entries WHERE outcome = 'refused' ORDER BY idx"
            ).fetchall()
            return [(str(kinds), str(reason)) for kinds, reason in rows]
        finally:
            connection.close()


def _enrol(thread: RegistryThread, data_dir: Path) -> grpc.ChannelCredentials:
    public = f"127.0.0.1:{thread.public_port}"
    ca_pem = (data_dir / "ca.crt").read_bytes()
    tls_key, signing_key = generate_tls_key(), SigningKey.generate()
    enrol(public, ca_pem, member_id=MEMBER_ID, display_name="Acme", role="company",
          csr_pem=make_csr(tls_key, MEMBER_ID), signing_key=signing_key)  # fmt: skip
    run("registry", "members", "approve", MEMBER_ID, "--dir", data_dir)
    active = collect_enrolment(public, ca_pem, member_id=MEMBER_ID, signing_key=signing_key)
    return channel_credentials(private_key_pem(tls_key), active.certificate_pem, active.ca_pem)


@contextmanager
def members_port(data_dir: Path, **settings: object) -> Iterator[MembersPort]:
    """Init a registry in ``data_dir`` with ``registry.toml`` keys replaced, start it, enrol.

    Stops the registry and closes the channel afterwards.
    """
    init_registry(data_dir, settings)
    thread = RegistryThread(data_dir)
    try:
        credentials = _enrol(thread, data_dir)
        # The client sends whatever it is given: the server's limits are under test.
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        with grpc.secure_channel(
            f"127.0.0.1:{thread.port}", credentials, options=options
        ) as channel:
            yield MembersPort(data_dir, thread, registry_pb2_grpc.RegistryServiceStub(channel))
    finally:
        thread.stop()
