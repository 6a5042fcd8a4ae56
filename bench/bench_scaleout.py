"""Registry scale-out on PostgreSQL (issue 7): ``python -m bench.bench_scaleout``.

A private PostgreSQL cluster (``scripts/postgres.sh``) holds one registry
database. Agency node processes (SQLite each) and a company are enrolled; the
company asks for organisations' verdicts on the public-register basis through
:class:`credence.client.requester.Requester`, which verifies every verdict.

1. **Single-verdict throughput at concurrency 16** with one registry process,
   then with two on the same database (the 16 requesters split between them).
   The ratio shows what the second process buys on this machine; with 2 cores
   shared by the registries, the nodes and the client, expect little.
2. **Log appends per second on PostgreSQL**:
   :func:`central_registry.log.entries.append_entries` on a fresh database, one
   entry per transaction and 1,000 per transaction (entries and Merkle
   subtrees, under the log's advisory lock; no promise signing).

Every process and the cluster are stopped whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import make_url, text

from central_registry import config as registry_config
from central_registry import database
from central_registry.keyring import load_keys
from central_registry.log.entries import append_entries
from central_registry.log.rows import OUTCOME_DISPATCHED, LogRow
from central_registry.publishing import publish
from credence.cli import main as credence_main
from credence.client import enrol as client_enrol
from credence.client.requester import MemberCredentials, Requester
from credence.dev import synthetic
from credence.errors import ResourceExhausted
from credence.keys import KeySet, SigningKey, load_signing_key, private_key_pem
from credence.pki import generate_tls_key, make_csr
from credence.scorecard import default_scorecard
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for

_ROOT = Path(__file__).resolve().parent.parent
_POSTGRES = _ROOT / "scripts" / "postgres.sh"
# What `registry serve` and `node serve` print once listening (the public port only
# for the registry).
_LISTENING = re.compile(r"^listening on port (\d+)(?: \(members\), (\d+) \(public\))?", re.M)
_START_TIMEOUT_S = 60.0
COMPANY = "bench-company"

_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cli(*args: str | Path) -> None:
    code = credence_main([str(arg) for arg in args])
    if code != 0:
        raise RuntimeError(f"`credence {' '.join(map(str, args))}` exited {code}")


# -- processes --------------------------------------------------------------------------


@dataclass
class Child:
    """A server process this benchmark started, and its members' port."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    ports: tuple[int, ...] = ()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def _spawn(name: str, args: Sequence[str | Path], logs: Path) -> Child:
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "credence.cli", *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    child = Child(name, process, log)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            child.ports = tuple(int(port) for port in found.groups() if port)
            child.port = child.ports[0]
            return child
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited while starting:\n{log.read_text()[-1500:]}")
        time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"{name} did not start within {_START_TIMEOUT_S:.0f} s (see {log})")


@dataclass
class Federation:
    """The registry directory on PostgreSQL, its serving processes, nodes and company."""

    root: Path
    database_url: str
    children: list[Child] = field(default_factory=list)
    company: MemberCredentials | None = None

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def registries(self) -> list[Child]:
        return [child for child in self.children if child.name.startswith("registry")]

    @property
    def root_keys(self) -> KeySet:
        return KeySet([load_signing_key(self.registry_dir / "root.key").public])

    def serve_registry(self) -> Child:
        name = f"registry-{len(self.registries) + 1}"
        child = _spawn(
            name,
            ["registry", "serve", "--dir", self.registry_dir, "--listen", "127.0.0.1:0",
             "--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
            self.root,
        )  # fmt: skip
        self.children.append(child)
        return child

    def requester(self, registry: Child) -> Requester:
        assert self.company is not None
        return Requester(
            f"127.0.0.1:{registry.port}", self.company, root_keys=self.root_keys, timeout=30
        )

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _set_config(path: Path, **values: object) -> None:
    content = path.read_text()
    for key, value in values.items():
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        content, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {rendered}", content)
        if count != 1:
            raise RuntimeError(f"{key} not in {path}")
    path.write_text(content)


def build(federation: Federation, agencies: int, subjects: int) -> list[SubjectRef]:
    """Init the registry on PostgreSQL, serve one process, enrol the company and nodes."""
    registry_dir = federation.registry_dir
    progress("initialising the registry on PostgreSQL")
    _cli("registry", "init", "--dir", registry_dir, "--listen", "127.0.0.1:0",
         "--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")  # fmt: skip
    # `registry init` always starts on SQLite; move the directory to PostgreSQL and
    # publish the first manifest there. Rate limits out of the way: this measures
    # throughput, and every lookup still passes through the shared bucket.
    _set_config(
        registry_dir / registry_config.CONFIG_FILE,
        database_url=federation.database_url,
        requests_per_second=1_000_000.0,
        burst=1_000_000,
    )
    _cli("registry", "migrate", "--dir", registry_dir)
    config = registry_config.load_config(registry_dir)
    engine = database.create_engine_for(federation.database_url)
    try:
        with database.session_factory(engine).begin() as session:
            publish(
                session, config=config, keys=load_keys(config),
                scorecard=default_scorecard(), now=datetime.now(UTC),
            )  # fmt: skip
    finally:
        engine.dispose()
    first = federation.serve_registry()
    address = f"127.0.0.1:{first.ports[0]}"
    public = f"127.0.0.1:{first.ports[1]}"
    ca_pem = (registry_dir / "ca.crt").read_bytes()
    progress("enrolling the company")
    tls_key, signing_key = generate_tls_key(), SigningKey.generate()
    client_enrol.enrol(
        public, ca_pem, member_id=COMPANY, display_name="Bench Company", role="company",
        csr_pem=make_csr(tls_key, COMPANY), signing_key=signing_key,
    )  # fmt: skip
    _cli("registry", "members", "approve", "--dir", registry_dir, COMPANY)
    result = client_enrol.collect_enrolment(
        public, ca_pem, member_id=COMPANY, signing_key=signing_key
    )
    federation.company = MemberCredentials(
        COMPANY, private_key_pem(tls_key), result.certificate_pem, result.ca_pem, signing_key
    )
    jwks = federation.root / "root.jwks.json"
    jwks.write_text(json.dumps(federation.root_keys.to_jwks()))
    profiles = synthetic.AGENCY_PROFILES[:agencies]
    for profile in profiles:
        progress(f"enrolling agency {profile.name}")
        node_dir = federation.root / profile.name
        _cli("node", "init", "--dir", node_dir, "--member-id", profile.name,
             "--kinds", ",".join(profile.record_kinds),
             "--listen", f"127.0.0.1:{_free_port()}")  # fmt: skip
        enrol = ("node", "enrol", "--dir", node_dir, "--registry", address, "--public", public,
                 "--ca", registry_dir / "ca.crt", "--root-keys", jwks)  # fmt: skip
        _cli(*enrol)
        _cli("registry", "members", "approve", "--dir", registry_dir, profile.name)
        _cli(*enrol, "--wait", "30")
        records = node_dir / "records.csv"
        records.write_text(synthetic.agency_csv(profile, subjects, 7, datetime.now(UTC).date()))
        _cli("node", "import", "--dir", node_dir, records)
        federation.children.append(
            _spawn(profile.name, ["node", "serve", "--dir", node_dir], federation.root)
        )
    key = PseudonymisationKey.from_bytes((registry_dir / "pseudonymisation.key").read_bytes())
    expected = synthetic.expected(profiles, subjects)
    names = expected.listed_organisations + expected.clear_organisations
    return [ref_for(key, name) for name in names]


# -- 1. verdicts per second ---------------------------------------------------------------


def _wait_listed(federation: Federation, registry: Child, listed: SubjectRef) -> None:
    """Until the registry's manifest cache holds every agency (a listed verdict)."""
    with federation.requester(registry) as requester:
        deadline = time.monotonic() + 30
        while requester.verify_organisation(listed).status != "listed":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{registry.name} never saw the agencies")
            time.sleep(0.2)


def throughput(
    federation: Federation,
    registries: Sequence[Child],
    subjects: Sequence[SubjectRef],
    concurrency: int,
    calls: int,
) -> tuple[float, int]:
    """Verdicts per second with ``concurrency`` requesters spread over ``registries``."""
    requesters = [
        federation.requester(registries[index % len(registries)]) for index in range(concurrency)
    ]
    indices = iter(range(calls))
    lock = threading.Lock()
    refused = [0]

    def worker(requester: Requester) -> None:
        while True:
            with lock:
                index = next(indices, None)
            if index is None:
                return
            try:
                requester.verify_organisation(subjects[index % len(subjects)])
            except ResourceExhausted:
                with lock:
                    refused[0] += 1

    try:
        for requester in requesters:  # connect, handshake and fetch manifests before timing
            requester.verify_organisation(subjects[0])
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(worker, requesters))
        elapsed = time.perf_counter() - started
    finally:
        for requester in requesters:
            requester.close()
    return (calls - refused[0]) / elapsed, refused[0]


# -- 2. log appends -----------------------------------------------------------------------


def _rows(count: int, now: datetime) -> list[LogRow]:
    return [
        LogRow(
            query_id=secrets.token_hex(16),
            requester=COMPANY,
            subject_type=2,
            subject_ref=secrets.token_bytes(32),
            purpose=1,
            kinds="1",
            grant_id="",
            basis="public register",
            outcome=OUTCOME_DISPATCHED,
            reason="",
            issued_at=now,
            salt=secrets.token_bytes(16),
            commitment=secrets.token_bytes(32),
        )
        for _ in range(count)
    ]


def appends(url: str, entries: int, batch: int) -> float:
    """Log entries appended per second, ``batch`` per transaction, on a migrated database."""
    engine = database.create_engine_for(url)
    database.upgrade_schema(engine)
    sessions = database.session_factory(engine)
    now = datetime.now(UTC)
    batches = [_rows(batch, now) for _ in range(max(1, entries // batch))]
    try:
        started = time.perf_counter()
        for rows in batches:
            with sessions.begin() as session:
                append_entries(session, rows)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    return len(batches) * batch / elapsed


def _create_database(server_url: str, name: str) -> str:
    admin = database.create_engine_for(server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agencies", type=int, default=2, help="agency node processes")
    parser.add_argument("--subjects", type=int, default=200, help="synthetic subjects per kind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=1200, help="verdicts per measurement")
    parser.add_argument("--single-appends", type=int, default=3000)
    parser.add_argument("--batch-appends", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000, help="entries per batch transaction")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="credence-scaleout-"))
    # Not under a 0700 directory of ours: the postgres user must traverse it.
    cluster = Path(tempfile.gettempdir()) / f"credence-pg-bench-{secrets.token_hex(6)}"
    federation: Federation | None = None
    try:
        progress("starting a private PostgreSQL cluster")
        started = subprocess.run(
            ["bash", str(_POSTGRES), "start", str(cluster), str(_free_port())],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if started.returncode != 0:
            print(f"cannot start PostgreSQL: {started.stderr.strip()}", file=sys.stderr)
            return 1
        server_url = started.stdout.strip()
        federation = Federation(work, _create_database(server_url, "registry"))
        subjects = build(federation, args.agencies, args.subjects)

        first = federation.registries[0]
        _wait_listed(federation, first, subjects[0])
        progress(f"{args.calls} verdicts at c={args.concurrency}, one registry process")
        one, refused_one = throughput(federation, [first], subjects, args.concurrency, args.calls)
        second = federation.serve_registry()
        _wait_listed(federation, second, subjects[0])
        progress(f"{args.calls} verdicts at c={args.concurrency}, two registry processes")
        two, refused_two = throughput(
            federation, [first, second], subjects, args.concurrency, args.calls
        )
        federation.stop()

        progress(f"{args.single_appends} log appends, one per transaction")
        single = appends(_create_database(server_url, "appends_1"), args.single_appends, 1)
        progress(f"{args.batch_appends} log appends, {args.batch} per transaction")
        batched = appends(_create_database(server_url, "appends_n"), args.batch_appends, args.batch)

        print()
        print(f"Registry scale-out on PostgreSQL ({os.cpu_count()} cores, "
              f"{args.agencies} agency processes, verdicts verified by the client)")  # fmt: skip
        print(f"  verdicts/s at c={args.concurrency}, 1 registry process : {one:8.1f}"
              f"  (refused {refused_one})")  # fmt: skip
        print(f"  verdicts/s at c={args.concurrency}, 2 registry processes: {two:8.1f}"
              f"  (refused {refused_two})")  # fmt: skip
        print(f"  two processes / one                    : {two / one:8.2f}x")
        print(f"  log appends/s, 1 per transaction       : {single:8.0f}")
        print(f"  log appends/s, {args.batch} per transaction    : {batched:8.0f}"
              f"  ({batched / single:.0f}x the single appends)")  # fmt: skip
        return 0
    finally:
        if federation is not None:
            federation.stop()
        subprocess.run(
            ["bash", str(_POSTGRES), "stop", str(cluster)],
            capture_output=True,
            check=False,
            timeout=120,
        )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
