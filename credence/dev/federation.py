"""A complete federation on loopback, for trying Credence and for end-to-end tests.

:func:`up` starts a registry and N agency nodes, each its own process with its
own SQLite database and real mutual TLS, exactly as an operator would: through
the ``credence`` command line (init, enrol, approve, import, serve). It enrols
a demo company, a demo authority and a demo identity verifier, loads
reproducible synthetic records (:mod:`credence.dev.synthetic`), makes a few
consents, waits until every server reports healthy, and writes
``DIR/federation.json`` describing it all. :func:`down` stops every process it
started (and only those); :func:`status` shows them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credence.client import enrol as client_enrol
from credence.client.requester import MemberCredentials, Requester
from credence.dev import synthetic
from credence.errors import FailedPrecondition, InvalidInput, Unavailable
from credence.grants import tokens
from credence.keys import (
    KeySet,
    SigningKey,
    load_signing_key,
    private_key_pem,
    save_signing_key,
    write_private_file,
)
from credence.pki import generate_tls_key, make_csr
from credence.rpc.tls import channel_credentials
from credence.subjects import PseudonymisationKey, ref_for

FEDERATION_FILE = "federation.json"
PROCESSES_FILE = "processes.json"
COMPANY = "demo-company"
AUTHORITY = "demo-authority"
IDENTITY_VERIFIER = "demo-idp"
MAX_AGENCIES = len(synthetic.AGENCY_PROFILES)
START_TIMEOUT = 60.0

Progress = Callable[[str], None]

# Servers this process started, kept so they are reaped (not warned about) on down().
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _credence(*args: str | Path) -> str:
    """Run the ``credence`` command line; returns its standard output.

    Raises:
        FailedPrecondition: the command failed; its error line is in the message.
    """
    result = subprocess.run(  # noqa: S603 - our own command line, fixed arguments
        [sys.executable, "-m", "credence.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise FailedPrecondition(
            f"`credence {' '.join(map(str, args[:3]))} ...` failed: {result.stderr.strip()}"
        )
    return result.stdout


@dataclass
class _Started:
    name: str
    pid: int
    log: Path
    address: str


def _spawn(args: Sequence[str | Path], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # A session of its own: the servers outlive `dev up` and ignore its Ctrl-C.
        return subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "credence.cli", *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _wait_listening(process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if log.exists() and "listening on port" in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise FailedPrecondition(f"{name} exited while starting; its log ends:\n{tail}")
        time.sleep(0.05)
    raise FailedPrecondition(f"{name} did not start within {START_TIMEOUT:.0f} s (see {log})")


def _wait_healthy(address: str, credentials: grpc.ChannelCredentials, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with grpc.secure_channel(address, credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub lacks Check
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"{name} at {address} never reported healthy")
            time.sleep(0.1)


@dataclass(frozen=True)
class _Member:
    member_id: str
    role: str
    directory: Path

    def files(self) -> dict[str, str]:
        return {
            "member_id": self.member_id,
            "cert": str(self.directory / "tls.crt"),
            "key": str(self.directory / "tls.key"),
            "signing_key": str(self.directory / "signing.key"),
        }

    def credentials(self) -> MemberCredentials:
        return MemberCredentials.from_files(
            self.member_id,
            key=self.directory / "tls.key",
            cert=self.directory / "tls.crt",
            ca=self.directory / "ca.crt",
            signing_key=self.directory / "signing.key",
        )


def _enrol_member(
    member: _Member,
    *,
    registry_dir: Path,
    address: str,
    ca_pem: bytes,
    approve_args: Sequence[str],
) -> None:
    member.directory.mkdir(parents=True, exist_ok=True)
    tls_key = generate_tls_key()
    write_private_file(member.directory / "tls.key", private_key_pem(tls_key))
    csr = make_csr(tls_key, member.member_id)
    signing_key = SigningKey.generate()
    save_signing_key(member.directory / "signing.key", signing_key)
    client_enrol.enrol(
        address,
        ca_pem,
        member_id=member.member_id,
        display_name=member.member_id.replace("-", " ").title(),
        role=member.role,
        csr_pem=csr,
        signing_key=signing_key,
    )
    _credence(
        "registry", "members", "approve", "--dir", registry_dir, member.member_id, *approve_args
    )
    result = client_enrol.collect_enrolment(
        address, ca_pem, member_id=member.member_id, signing_key=signing_key
    )
    if result.state != "active":
        raise FailedPrecondition(f"{member.member_id} is {result.state} after approval")
    (member.directory / "tls.crt").write_bytes(result.certificate_pem)
    (member.directory / "ca.crt").write_bytes(result.ca_pem)


def _consents(
    directory: Path,
    persons: Sequence[str],
    *,
    idp: _Member,
    company: Requester,
    idp_requester: Requester,
    pseudonymisation: PseudonymisationKey,
) -> list[dict[str, str]]:
    now = datetime.now(UTC)
    idp_key = idp.credentials().signing_key
    assert idp_key is not None
    samples = []
    for identifier in persons:
        subject = ref_for(pseudonymisation, identifier)
        subject_key = SigningKey.generate()
        slug = identifier.replace(":", "_")
        key_path = directory / "subjects" / f"{slug}.key"
        save_signing_key(key_path, subject_key)
        binding = tokens.issue_binding(
            subject_ref_hex=subject.hex(),
            subject_key=subject_key.public,
            member_id=idp.member_id,
            member_key=idp_key,
            now=now,
            validity=timedelta(days=365),
        )
        idp_requester.register_binding(binding)
        request = tokens.sign_consent_request(
            tokens.ConsentTerms(
                subject_ref=subject.hex(),
                requester=COMPANY,
                purpose="credit_assessment",
                scope=("blacklist", "credit"),
                not_before=now - timedelta(minutes=1),
                expires_at=now + timedelta(days=29),
                max_uses=3,
                data_life=timedelta(days=7),
            ),
            subject_key,
            now,
        )
        token, grant_id = company.issue_consent(request, binding)
        consent_path = directory / "consents" / f"{slug}.jwt"
        consent_path.parent.mkdir(parents=True, exist_ok=True)
        consent_path.write_text(token)
        binding_path = directory / "subjects" / f"{slug}.binding.jwt"
        binding_path.write_text(binding)
        samples.append(
            {
                "id": identifier,
                "consent": str(consent_path),
                "grant_id": grant_id,
                "subject_key": str(key_path),
                "binding": str(binding_path),
            }
        )
    return samples


def up(
    directory: Path,
    *,
    agencies: int = 3,
    subjects: int = 200,
    seed: int = 7,
    progress: Progress = lambda _message: None,
) -> dict[str, Any]:
    """Start a local federation in ``directory`` and describe it in ``federation.json``.

    Raises:
        InvalidInput: a bad number of agencies or subjects, or a non-empty directory.
        FailedPrecondition: a step failed; what has started is stopped again.
    """
    if not 1 <= agencies <= MAX_AGENCIES:
        raise InvalidInput(f"--agencies must be 1..{MAX_AGENCIES}, got {agencies}")
    if subjects < 16:
        raise InvalidInput(f"--subjects must be at least 16, got {subjects}")
    directory = directory.resolve()
    if (directory / PROCESSES_FILE).exists():
        raise InvalidInput(
            f"{directory} already runs a federation: `credence dev down --dir {directory}` first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    launch = _Launch(directory, progress, [])
    try:
        return _up(launch, agencies=agencies, subjects=subjects, seed=seed)
    except BaseException:
        _save_processes(directory, launch.started)
        down(directory)
        raise


@dataclass
class _Launch:
    """One `up` in progress: where things go and what has started."""

    directory: Path
    progress: Progress
    started: list[_Started]

    @property
    def registry_dir(self) -> Path:
        return self.directory / "registry"

    def spawn(self, name: str, args: Sequence[str | Path], address: str) -> None:
        log = self.directory / "logs" / f"{name}.log"
        process = _spawn(args, log)
        _CHILDREN[process.pid] = process
        self.started.append(_Started(name, process.pid, log, address))
        _save_processes(self.directory, self.started)
        _wait_listening(process, log, name)

    def registry(self) -> tuple[str, str, int]:
        address, public = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        http_port = _free_port()
        self.progress("initialising the registry (root key, CA, database)")
        _credence(
            "registry", "init", "--dir", self.registry_dir, "--federation-id", "local-demo",
            "--listen", address, "--public-listen", public,
            "--http-listen", f"127.0.0.1:{http_port}",
        )  # fmt: skip
        self.spawn("registry", ["registry", "serve", "--dir", self.registry_dir], address)
        root = load_signing_key(self.registry_dir / "root.key")
        (self.registry_dir / "root.jwks.json").write_text(
            json.dumps(KeySet([root.public]).to_jwks())
        )
        return address, public, http_port

    def agency(
        self,
        profile: synthetic.AgencyProfile,
        registry: tuple[str, str],
        subjects: int,
        seed: int,
    ) -> dict[str, Any]:
        node_dir = self.directory / "agencies" / profile.name
        node_address = f"127.0.0.1:{_free_port()}"
        self.progress(f"enrolling agency {profile.name} ({', '.join(profile.record_kinds)})")
        _credence(
            "node", "init", "--dir", node_dir, "--member-id", profile.name,
            "--kinds", ",".join(profile.record_kinds), "--listen", node_address,
        )  # fmt: skip
        enrol = ("node", "enrol", "--dir", node_dir, "--registry", registry[0],
                 "--public", registry[1],
                 "--ca", self.registry_dir / "ca.crt",
                 "--root-keys", self.registry_dir / "root.jwks.json",
                 "--display-name", profile.display_name)  # fmt: skip
        _credence(*enrol)
        _credence("registry", "members", "approve", "--dir", self.registry_dir, profile.name)
        _credence(*enrol, "--wait", "30")
        records = node_dir / "records.csv"
        records.write_text(synthetic.agency_csv(profile, subjects, seed, datetime.now(UTC).date()))
        _credence("node", "import", "--dir", node_dir, records)
        self.spawn(profile.name, ["node", "serve", "--dir", node_dir], node_address)
        return {
            "member_id": profile.name,
            "address": node_address,
            "kinds": list(profile.record_kinds),
            "data_dir": str(node_dir),
        }


def _up(launch: _Launch, *, agencies: int, subjects: int, seed: int) -> dict[str, Any]:
    address, public, http_port = launch.registry()
    registry_dir = launch.registry_dir
    ca_pem = (registry_dir / "ca.crt").read_bytes()
    root_set = KeySet.from_jwks(json.loads((registry_dir / "root.jwks.json").read_text()))
    # Members first: every node then collects a manifest that already lists them.
    members_dir = launch.directory / "members"
    company = _Member(COMPANY, "company", members_dir / COMPANY)
    authority = _Member(AUTHORITY, "authority", members_dir / AUTHORITY)
    idp = _Member(IDENTITY_VERIFIER, "company", members_dir / IDENTITY_VERIFIER)
    launch.progress("enrolling the demo company, authority and identity verifier")
    for member, approve_args in (
        (company, ["--purposes", "counterparty_verification,credit_assessment"]),
        (authority, ["--purposes", "legal_mandate,counterparty_verification"]),
        (idp, ["--purposes", "counterparty_verification", "--identity-verifier"]),
    ):
        _enrol_member(
            member, registry_dir=registry_dir, address=public, ca_pem=ca_pem,
            approve_args=approve_args,
        )  # fmt: skip
    profiles = synthetic.AGENCY_PROFILES[:agencies]
    agency_entries = [
        launch.agency(profile, (address, public), subjects, seed) for profile in profiles
    ]
    launch.progress("waiting until every server reports healthy")
    health_credentials = channel_credentials(
        (company.directory / "tls.key").read_bytes(),
        (company.directory / "tls.crt").read_bytes(),
        ca_pem,
    )
    for entry in launch.started:
        _wait_healthy(entry.address, health_credentials, entry.name)
    expected = synthetic.expected(profiles, subjects)
    with (
        Requester(address, company.credentials(), root_keys=root_set) as company_client,
        Requester(address, idp.credentials(), root_keys=root_set) as idp_client,
    ):
        launch.progress("making consents for sample persons")
        consents = _consents(
            launch.directory,
            expected.persons_with_history[:3],
            idp=idp,
            company=company_client,
            idp_requester=idp_client,
            pseudonymisation=PseudonymisationKey.from_bytes(
                (registry_dir / "pseudonymisation.key").read_bytes()
            ),
        )
    federation = {
        "registry": {
            "address": address,
            "public_address": public,
            "http_url": f"http://127.0.0.1:{http_port}",
            "ca_cert": str(registry_dir / "ca.crt"),
            "jwks_url": f"http://127.0.0.1:{http_port}/.well-known/jwks.json",
            "root_keys": str(registry_dir / "root.jwks.json"),
            "member_id": "registry",
            "data_dir": str(registry_dir),
        },
        "company": company.files(),
        "authority": authority.files(),
        "identity_verifier": idp.files(),
        "agencies": agency_entries,
        "samples": {
            "listed_organisation": expected.listed_organisations[:5],
            "clear_organisation": expected.clear_organisations[:5],
            "disputed": expected.disputed_organisations[:3],
            "expired_organisation": expected.expired_organisations[:3],
            "person_with_consent": consents,
        },
        "pseudonymisation_key": str(registry_dir / "pseudonymisation.key"),
        "seed": seed,
        "subjects": subjects,
    }
    (launch.directory / FEDERATION_FILE).write_text(json.dumps(federation, indent=2) + "\n")
    return federation


def _save_processes(directory: Path, started: Sequence[_Started]) -> None:
    document = [
        {"name": entry.name, "pid": entry.pid, "log": str(entry.log), "address": entry.address}
        for entry in started
    ]
    (directory / PROCESSES_FILE).write_text(json.dumps(document, indent=2) + "\n")


def _ours(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is still a Credence server of this federation (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"credence.cli" in command and str(directory).encode() in command


def status(directory: Path) -> list[dict[str, Any]]:
    """Every process of the federation in ``directory`` and whether it runs."""
    directory = directory.resolve()
    path = directory / PROCESSES_FILE
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    for entry in entries:
        entry["running"] = _ours(int(entry["pid"]), directory)
    return entries


def down(directory: Path, *, timeout: float = 15.0) -> list[str]:
    """Stop every process the federation in ``directory`` started.

    Returns:
        The names of processes that would not stop on SIGTERM (they are killed).
    """
    directory = directory.resolve()
    entries = [entry for entry in status(directory) if entry["running"]]
    for entry in entries:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    stubborn = []
    for entry in entries:
        pid = int(entry["pid"])
        while _ours(pid, directory) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _ours(pid, directory):
            stubborn.append(str(entry["name"]))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
    (directory / PROCESSES_FILE).unlink(missing_ok=True)
    return stubborn


def _reap(pid: int) -> None:
    # A server started by this very process is its child: collect its exit status.
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
