"""A complete federation on loopback, for trying Credence and for end-to-end tests.

:func:`up` starts a registry and N agency nodes, each its own process with its
own SQLite database and real mutual TLS, exactly as an operator would: through
the ``credence`` command line (init, enrol, approve, import, serve). It enrols
a demo company, a demo authority and a demo identity verifier, loads
reproducible synthetic records (:mod:`credence.dev.synthetic`), makes a few
consents, waits until every server reports healthy, and writes
``DIR/federation.json`` describing it all, with the manifest it verified in
``DIR/manifest.bin``. :func:`down` stops every process it started (and only
those); :func:`status` shows them; :func:`up` on a stopped federation's
directory starts its servers again on their data.

Where the seconds go: a fresh interpreter costs about a second of imports, so
the one-shot commands (init, enrol, approve, import) run in this process
through :func:`credence.cli.app.main`, and only the servers get processes of
their own. The agencies go through each stage together: all are enrolled, all
approved, all installed, then every node starts at once, each with a manifest
that already lists all of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
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

from credence.cli.app import main as credence_main
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
MANIFEST_FILE = "manifest.bin"
#: The operator's console token (``credence registry admin-token``), 0600.
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
REGISTRY_DIR = "registry"
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


def _credence(step: str, *args: str | Path) -> str:
    """Run one ``credence`` command in this process; returns its standard output.

    Args:
        step: what the command does, in words; a failure names the step, never
            the command, which the user did not type.
        *args: the command line after ``credence``.

    Raises:
        FailedPrecondition: the command failed; its error line is in the message.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = credence_main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else 1
    if code != 0:
        reason = err.getvalue().strip().removeprefix("credence: ") or out.getvalue().strip()
        raise FailedPrecondition(f"{step} failed: {reason}")
    return out.getvalue()


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
        f"approving {member.member_id}",
        "registry", "members", "approve", "--dir", registry_dir, member.member_id, *approve_args,
    )  # fmt: skip
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

    A directory that holds a stopped federation (see :func:`is_stopped`) gets
    its servers started again on their data; ``agencies``, ``subjects`` and
    ``seed`` then do not apply.

    Raises:
        InvalidInput: a bad number of agencies or subjects, a directory whose
            federation runs already, or one holding an unfinished federation.
        FailedPrecondition: a step failed; what has started is stopped again.
    """
    if not 1 <= agencies <= MAX_AGENCIES:
        raise InvalidInput(f"--agencies must be 1..{MAX_AGENCIES}, got {agencies}")
    if subjects < 16:
        raise InvalidInput(f"--subjects must be at least 16, got {subjects}")
    directory = directory.resolve()
    if (directory / FEDERATION_FILE).exists():
        if not is_stopped(directory):
            raise InvalidInput(
                f"{directory} already runs a federation: use it as it is, or stop it "
                f"with `credence dev down --dir {directory}` first"
            )
        down(directory)  # whatever is left of a partly stopped one
        return _guarded(directory, progress, _restart)
    if (directory / REGISTRY_DIR).exists() or (directory / PROCESSES_FILE).exists():
        raise InvalidInput(
            f"{directory} holds a federation that never finished starting: remove that "
            "directory or choose another one"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return _guarded(
        directory,
        progress,
        lambda launch: _up(launch, agencies=agencies, subjects=subjects, seed=seed),
    )


def is_stopped(directory: Path) -> bool:
    """Whether ``directory`` holds a complete federation with a server not running."""
    directory = directory.resolve()
    if not (directory / FEDERATION_FILE).exists():
        return False
    entries = status(directory)
    return not entries or not all(entry["running"] for entry in entries)


def _guarded(
    directory: Path, progress: Progress, start: Callable[[_Launch], dict[str, Any]]
) -> dict[str, Any]:
    launch = _Launch(directory, progress, [])
    try:
        return start(launch)
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
        return self.directory / REGISTRY_DIR

    def spawn(self, name: str, args: Sequence[str | Path], address: str) -> None:
        """Start a server; :meth:`wait_listening` waits for it."""
        log = self.directory / "logs" / f"{name}.log"
        if log.exists():  # a restart: readiness is read from a fresh log, the old one kept
            log.replace(log.with_suffix(".log.1"))
        process = _spawn(args, log)
        _CHILDREN[process.pid] = process
        self.started.append(_Started(name, process.pid, log, address))
        _save_processes(self.directory, self.started)

    def wait_listening(self) -> None:
        """Wait until every server started so far listens."""
        for entry in self.started:
            _wait_listening(_CHILDREN[entry.pid], entry.log, entry.name)

    def wait_healthy(self, credentials: grpc.ChannelCredentials) -> None:
        """Wait until every server started so far reports SERVING."""
        self.progress("waiting until every server reports healthy")
        for entry in self.started:
            _wait_healthy(entry.address, credentials, entry.name)

    def registry(self) -> tuple[str, str, int, int]:
        address, public = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
        http_port, console_port = _free_port(), _free_port()
        self.progress("initialising the registry (root key, CA, database)")
        _credence(
            "initialising the registry",
            "registry", "init", "--dir", self.registry_dir, "--federation-id", "local-demo",
            "--listen", address, "--public-listen", public,
            "--http-listen", f"127.0.0.1:{http_port}",
            "--console-listen", f"127.0.0.1:{console_port}",
        )  # fmt: skip
        _credence(
            "making the console's admin token",
            "registry", "admin-token", "--dir", self.registry_dir, "--name", "operator",
            "--out", self.directory / ADMIN_TOKEN_FILE,
        )  # fmt: skip
        # A witnessing round every second: nodes answer soon after they start. And a
        # fan-out deadline with headroom: a local federation shares one machine's
        # cores with whatever else runs there (tests, benchmarks), and a node's first
        # answer (its channel, its pair keys) can take over the default 2 s on a
        # busy machine, making the first lookup INCOMPLETE.
        config = self.registry_dir / "registry.toml"
        text = config.read_text()
        for default, local in (
            ("witness_interval_seconds = 10.0", "witness_interval_seconds = 1.0"),
            ("fanout_deadline_seconds = 2.0", "fanout_deadline_seconds = 5.0"),
        ):
            if default not in text:
                raise FailedPrecondition(f"registry.toml no longer says {default!r}")
            text = text.replace(default, local)
        config.write_text(text)
        self.spawn("registry", ["registry", "serve", "--dir", self.registry_dir], address)
        root = load_signing_key(self.registry_dir / "root.key")
        (self.registry_dir / "root.jwks.json").write_text(
            json.dumps(KeySet([root.public]).to_jwks())
        )
        return address, public, http_port, console_port


@dataclass(frozen=True)
class _Agency:
    """An agency node being brought up: its profile, directory and address."""

    profile: synthetic.AgencyProfile
    directory: Path
    address: str
    #: Where the node serves Prometheus's /metrics (plain HTTP, loopback).
    metrics_address: str

    def entry(self) -> dict[str, Any]:
        return {
            "member_id": self.profile.name,
            "address": self.address,
            "kinds": list(self.profile.record_kinds),
            "data_dir": str(self.directory),
            "metrics_url": f"http://{self.metrics_address}/metrics",
        }


def _agencies(
    launch: _Launch,
    profiles: Sequence[synthetic.AgencyProfile],
    registry: tuple[str, str, str],
    subjects: int,
    seed: int,
) -> list[_Agency]:
    """Enrol, approve, install, load and start every agency, each stage for all at once."""
    nodes = [
        _Agency(
            profile,
            launch.directory / "agencies" / profile.name,
            f"127.0.0.1:{_free_port()}",
            f"127.0.0.1:{_free_port()}",
        )
        for profile in profiles
    ]
    names = ", ".join(node.profile.name for node in nodes)
    launch.progress(f"enrolling {len(nodes)} agencies ({names})")
    for node in nodes:
        _credence(
            f"initialising agency {node.profile.name}",
            "node", "init", "--dir", node.directory, "--member-id", node.profile.name,
            "--kinds", ",".join(node.profile.record_kinds), "--listen", node.address,
        )  # fmt: skip
        # A fixed port, so that `dev up` can say where each node's /metrics is.
        config = node.directory / "node.toml"
        config.write_text(
            re.sub(
                r"(?m)^metrics_listen = .*$",
                f'metrics_listen = "{node.metrics_address}"',
                config.read_text(),
            )
        )

    def enrol(node: _Agency) -> tuple[str | Path, ...]:
        return ("node", "enrol", "--dir", node.directory, "--registry", registry[0],
                "--public", registry[1], "--http", registry[2],
                "--ca", launch.registry_dir / "ca.crt",
                "--root-keys", launch.registry_dir / "root.jwks.json",
                "--display-name", node.profile.display_name)  # fmt: skip

    for node in nodes:
        _credence(f"enrolling agency {node.profile.name}", *enrol(node))
    for node in nodes:
        _credence(
            f"approving agency {node.profile.name}",
            "registry", "members", "approve", "--dir", launch.registry_dir, node.profile.name,
        )  # fmt: skip
    # Installed after every approval: each node starts with a manifest listing all of them.
    for node in nodes:
        out = _credence(f"installing agency {node.profile.name}", *enrol(node), "--wait", "30")
        if "approved" not in out:
            raise FailedPrecondition(f"agency {node.profile.name} was not approved: {out.strip()}")
    launch.progress(f"loading synthetic records ({subjects} subjects per agency)")
    today = datetime.now(UTC).date()
    for node in nodes:
        records = node.directory / "records.csv"
        records.write_text(synthetic.agency_csv(node.profile, subjects, seed, today))
        _credence(
            f"loading agency {node.profile.name}'s records",
            "node", "import", "--dir", node.directory, records,
        )  # fmt: skip
    launch.progress(f"starting {len(nodes)} agency nodes")
    for node in nodes:
        launch.spawn(node.profile.name, ["node", "serve", "--dir", node.directory], node.address)
    launch.wait_listening()
    return nodes


def _health_credentials(federation: dict[str, Any]) -> grpc.ChannelCredentials:
    company = federation["company"]
    return channel_credentials(
        Path(company["key"]).read_bytes(),
        Path(company["cert"]).read_bytes(),
        Path(federation["registry"]["ca_cert"]).read_bytes(),
    )


def _restart(launch: _Launch) -> dict[str, Any]:
    """Start a stopped federation's servers again, on the data they left."""
    federation: dict[str, Any] = json.loads((launch.directory / FEDERATION_FILE).read_text())
    registry = federation["registry"]
    launch.progress(f"restarting the stopped federation in {launch.directory} with its data")
    launch.spawn("registry", ["registry", "serve", "--dir", registry["data_dir"]],
                 registry["address"])  # fmt: skip
    for agency in federation["agencies"]:
        launch.spawn(agency["member_id"], ["node", "serve", "--dir", agency["data_dir"]],
                     agency["address"])  # fmt: skip
    launch.wait_listening()
    launch.wait_healthy(_health_credentials(federation))
    return federation


def _up(launch: _Launch, *, agencies: int, subjects: int, seed: int) -> dict[str, Any]:
    address, public, http_port, console_port = launch.registry()
    registry_dir = launch.registry_dir
    launch.wait_listening()
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
    nodes = _agencies(
        launch, profiles, (address, public, f"https://127.0.0.1:{http_port}"), subjects, seed
    )
    launch.wait_healthy(
        channel_credentials(
            (company.directory / "tls.key").read_bytes(),
            (company.directory / "tls.crt").read_bytes(),
            ca_pem,
        )
    )
    expected = synthetic.expected(profiles, subjects)
    with (
        Requester(address, company.credentials(), root_keys=root_set) as company_client,
        Requester(address, idp.credentials(), root_keys=root_set) as idp_client,
    ):
        # Kept for offline checks (`credence verdict check`): the manifest as verified here.
        manifest_path = launch.directory / MANIFEST_FILE
        manifest_path.write_bytes(company_client.refresh_manifest().envelope.to_bytes())
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
            "http_url": f"https://127.0.0.1:{http_port}",
            "ca_cert": str(registry_dir / "ca.crt"),
            "jwks_url": f"https://127.0.0.1:{http_port}/.well-known/jwks.json",
            "root_keys": str(registry_dir / "root.jwks.json"),
            "member_id": "registry",
            "data_dir": str(registry_dir),
            # The operator's console; log in with the token in admin_token.
            "console_url": f"https://127.0.0.1:{console_port}/",
            "admin_token": str(launch.directory / ADMIN_TOKEN_FILE),
            # Prometheus's /metrics, beside the console (no login).
            "metrics_url": f"https://127.0.0.1:{console_port}/metrics",
        },
        "manifest": str(manifest_path),
        "company": company.files(),
        "authority": authority.files(),
        "identity_verifier": idp.files(),
        "agencies": [node.entry() for node in nodes],
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
