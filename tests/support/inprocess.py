"""A small federation in one process: the registry and nodes as threads, real TLS sockets.

Built through the same command line an operator uses (``credence registry init``,
``credence node init|enrol``, ``members approve``), then served in-process so a
test can reach inside (patch the registry, read a node's database).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from agency_node import database as node_database
from agency_node.server import RunningNode, start_node
from central_registry.server import RegistryThread
from credence.client import enrol as client_enrol
from credence.client.requester import MemberCredentials, Requester
from credence.client.results import VerifiedVerdict
from credence.clock import Clock, utc_now
from credence.dev import synthetic
from credence.errors import CredenceError
from credence.grants import tokens
from credence.keys import KeySet, SigningKey, load_signing_key, private_key_pem
from credence.pki import generate_tls_key, make_csr
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for
from credence.v1 import agency_pb2
from support.registry import free_port, init_registry, run, set_config
from support.witnessed import wait_witnessed

FANOUT_DEADLINE_SECONDS = 8.0  # under the client's own 10 s timeout


@dataclass
class Member:
    member_id: str
    credentials: MemberCredentials


@dataclass
class InProcessFederation:
    root: Path
    registry: RegistryThread
    nodes: dict[str, RunningNode] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.registry.port}"

    @property
    def public(self) -> str:
        return f"127.0.0.1:{self.registry.public_port}"

    @property
    def ca_pem(self) -> bytes:
        return (self.registry_dir / "ca.crt").read_bytes()

    @property
    def root_keys(self) -> KeySet:
        return KeySet([load_signing_key(self.registry_dir / "root.key").public])

    @property
    def pseudonymisation(self) -> PseudonymisationKey:
        return PseudonymisationKey.from_bytes(
            (self.registry_dir / "pseudonymisation.key").read_bytes()
        )

    def subject(self, identifier: str) -> SubjectRef:
        return ref_for(self.pseudonymisation, identifier)

    def requester(self, member_id: str, *, clock: Clock = utc_now) -> Requester:
        """``member_id``'s client of the registry, verifying at ``clock``'s time."""
        return Requester(
            self.address, self.members[member_id].credentials, root_keys=self.root_keys,
            clock=clock,
        )  # fmt: skip

    def credit_verdict(
        self, identifier: str, *, requester: str, consent: str, clock: Clock = utc_now
    ) -> VerifiedVerdict:
        """``requester``'s blacklist and credit verdict for a credit decision, under ``consent``.

        ``clock`` is the requester's (a test moving the federation's time).
        """
        with self.requester(requester, clock=clock) as client:
            return client.request_verdict(
                self.subject(identifier), kinds=("blacklist", "credit"),
                purpose="credit_assessment", grant=agency_pb2.Grant(consent_token=consent),
            )  # fmt: skip

    def node_dir(self, name: str) -> Path:
        return self.root / name

    @contextmanager
    def node_session(self, name: str) -> Iterator[Session]:
        """A session on node ``name``'s own database, for a test to read; disposed after."""
        engine = node_database.create_engine_for(node_database.sqlite_url_for(self.node_dir(name)))
        try:
            with node_database.session_factory(engine)() as session:
                yield session
        finally:
            engine.dispose()

    def federation_file(self, company: str, *, as_company: bool = False) -> Path:
        """A federation file naming this registry and ``company``: what ``credence me`` reads.

        A subject needs only the registry; the file format also names a member.
        ``as_company`` also writes ``company``'s TLS key and certificate and
        names them and the pseudonymisation key: what ``credence verify`` reads
        to ask as that company.
        """
        path = self.root / "federation.json"
        registry = {
            "member_id": "registry",
            "address": self.address,
            "public_address": self.public,
            "http_url": f"https://127.0.0.1:{self.registry.http_port}",
            "ca_cert": str(self.registry_dir / "ca.crt"),
            "root_keys": str(self.root / "root.jwks.json"),
        }
        document: dict[str, object] = {"registry": registry, "company": {"member_id": company}}
        if as_company:
            credentials = self.members[company].credentials
            folder = self.root / company
            folder.mkdir(exist_ok=True)
            (folder / "tls.key").write_bytes(credentials.key_pem)
            (folder / "tls.crt").write_bytes(credentials.cert_pem)
            document["company"] = {
                "member_id": company, "key": str(folder / "tls.key"),
                "cert": str(folder / "tls.crt"),
            }  # fmt: skip
            document["pseudonymisation_key"] = str(self.registry_dir / "pseudonymisation.key")
        path.write_text(json.dumps(document))
        return path

    def enrol_member(self, member_id: str, role: str, *approve: str) -> Member:
        tls_key, signing_key = generate_tls_key(), SigningKey.generate()
        client_enrol.enrol(
            self.public, self.ca_pem, member_id=member_id, display_name=member_id, role=role,
            csr_pem=make_csr(tls_key, member_id), signing_key=signing_key,
        )  # fmt: skip
        run("registry", "members", "approve", "--dir", self.registry_dir, member_id, *approve)
        result = client_enrol.collect_enrolment(
            self.public, self.ca_pem, member_id=member_id, signing_key=signing_key
        )
        member = Member(
            member_id,
            MemberCredentials(
                member_id,
                private_key_pem(tls_key),
                result.certificate_pem,
                result.ca_pem,
                signing_key,
            ),
        )
        self.members[member_id] = member
        return member

    def add_agency(
        self,
        profile: synthetic.AgencyProfile,
        subjects: int = 60,
        *,
        endpoint: str | None = None,
        settings: dict[str, object] | None = None,
        witnessed: bool = True,
        clock: Clock = utc_now,
    ) -> RunningNode:
        """Enrol, approve, import and start an agency node.

        ``endpoint`` is the address enrolled into the manifest, where the
        registry dials the node (a fault proxy in front of it, say); by
        default the address the node listens on. ``settings`` overrides
        ``node.toml`` keys. ``witnessed`` waits until the node answers (a
        cosigned checkpoint reached it); a caller that must first connect
        the endpoint waits itself (:func:`support.witnessed.wait_witnessed`).
        ``clock`` is the node's (a test moving the federation's time).
        """
        node_dir = self.node_dir(profile.name)
        listen = f"127.0.0.1:{free_port()}"
        run("node", "init", "--dir", node_dir, "--member-id", profile.name,
            "--kinds", ",".join(profile.record_kinds), "--listen", endpoint or listen)  # fmt: skip
        (self.root / "root.jwks.json").write_text(json.dumps(self.root_keys.to_jwks()))
        enrol = ("node", "enrol", "--dir", node_dir, "--registry", self.address,
                 "--public", self.public, "--ca", self.registry_dir / "ca.crt",
                 "--root-keys", self.root / "root.jwks.json")  # fmt: skip
        run(*enrol)
        run("registry", "members", "approve", "--dir", self.registry_dir, profile.name)
        run(*enrol, "--wait", "10")
        set_config(
            node_dir / "node.toml",
            {
                "listen": listen,
                "audit_interval_seconds": 1,
                "audit_merge_delay_seconds": 0,
                "manifest_refresh_seconds": 1,
                **(settings or {}),
            },
        )
        records = node_dir / "records.csv"
        records.write_text(synthetic.agency_csv(profile, subjects, 7, datetime.now(UTC).date()))
        run("node", "import", "--dir", node_dir, records)
        node = start_node(node_dir, clock=clock)
        self.nodes[profile.name] = node
        self._wait_until_asked(profile.name)
        if witnessed:
            wait_witnessed(node)
        return node

    def _wait_until_asked(self, member_id: str, seconds: float = 30) -> None:
        """Wait until the registry's manifest cache lists the agency it will ask.

        The cache refreshes on its own schedule; a lookup made before it has
        seen the approval would not ask the new agency at all.
        """
        manifests = self.registry.running.manifests
        deadline = time.monotonic() + seconds
        while True:
            try:
                manifests.current().active_member(member_id)
                return
            except CredenceError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def consent(
        self, identifier: str, *, requester: str, idp: str, purpose: str = "credit_assessment",
        scope: tuple[str, ...] = ("blacklist", "credit"),
    ) -> tuple[str, str, SigningKey, str]:  # fmt: skip
        """(consent token, grant id, the subject's key, the binding token)."""
        now = datetime.now(UTC)
        subject = self.subject(identifier)
        subject_key = SigningKey.generate()
        idp_key = self.members[idp].credentials.signing_key
        assert idp_key is not None
        binding = tokens.issue_binding(
            subject_ref_hex=subject.hex(), subject_key=subject_key.public, member_id=idp,
            member_key=idp_key, now=now, validity=timedelta(days=30),
        )  # fmt: skip
        with self.requester(idp) as client:
            client.register_binding(binding)
        request = tokens.sign_consent_request(
            tokens.ConsentTerms(
                subject_ref=subject.hex(), requester=requester, purpose=purpose, scope=scope,
                not_before=now - timedelta(minutes=1), expires_at=now + timedelta(days=10),
                max_uses=3, data_life=timedelta(days=1),
            ),
            subject_key,
            now,
        )  # fmt: skip
        with self.requester(requester) as client:
            token, grant_id = client.issue_consent(request, binding)
        return token, grant_id, subject_key, binding

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(0)
        self.registry.stop()


def start(
    root: Path,
    *,
    fanout_deadline_seconds: float = FANOUT_DEADLINE_SECONDS,
    batch_deadline_seconds: float | None = None,
) -> InProcessFederation:
    """A registry, no members yet; the deadlines as ``registry.toml`` sets them.

    ``batch_deadline_seconds`` None keeps the file's default.
    """
    registry_dir = root / "registry"
    # Tests here ask live nodes, never dead ones: a deadline with headroom for a
    # busy machine (a first call opens a TLS channel to a cold node) costs nothing.
    # Tests that make nodes late on purpose (tests/faults/) pass a shorter one.
    settings: dict[str, object] = {"fanout_deadline_seconds": fanout_deadline_seconds}
    if batch_deadline_seconds is not None:
        settings["batch_deadline_seconds"] = batch_deadline_seconds
    init_registry(registry_dir, settings)
    return InProcessFederation(root, RegistryThread(registry_dir))
