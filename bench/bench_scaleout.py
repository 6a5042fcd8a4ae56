"""Registry scale-out on PostgreSQL (issues 7 and 13): ``python -m bench.bench_scaleout``.

One PostgreSQL database holds the registry: on the server named by
``$CREDENCE_BENCH_POSTGRES_URL`` (a ``postgresql+psycopg://`` URL; the
benchmark creates its databases there and drops them at the end), or else on
a private cluster started with ``scripts/postgres.sh``. Agency node processes
(SQLite each) and a company are enrolled; the company asks for
organisations' verdicts on the public-register basis through
:class:`credence.client.requester.Requester`, which verifies every verdict.

1. **Scale-out on one host**: one registry process, then two, **on one
   port** (gRPC listens with ``SO_REUSEPORT`` on Linux, so the kernel spreads
   the requesters' connections over the processes), sharing the database:
   single verdicts per second at concurrency 16, and ScreenBatch subjects per
   second from several concurrent streams. Each figure comes with the CPU
   each registry process spent, which shows the load was shared. With 2
   cores shared by the registries, the nodes and the client, expect little.
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
from credence.client.requester import MemberCredentials, Requester, ScreenRow
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
#: A PostgreSQL server URL to use instead of starting a private cluster.
POSTGRES_URL_ENV = "CREDENCE_BENCH_POSTGRES_URL"

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

    def serve_registry(self, port: int = 0) -> Child:
        """Start a registry process; on ``port`` (shared with the others) when given."""
        name = f"registry-{len(self.registries) + 1}"
        child = _spawn(
            name,
            ["registry", "serve", "--dir", self.registry_dir, "--listen", f"127.0.0.1:{port}",
             "--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
            self.root,
        )  # fmt: skip
        if port and child.port != port:
            child.stop()
            raise RuntimeError(f"{name} listens on {child.port}, not the shared port {port}")
        self.children.append(child)
        return child

    def requester(self, registry: Child, timeout: float = 30) -> Requester:
        assert self.company is not None
        return Requester(
            f"127.0.0.1:{registry.port}", self.company, root_keys=self.root_keys, timeout=timeout
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


def build(federation: Federation, agencies: int, subjects: int, port: int) -> list[SubjectRef]:
    """Init the registry on PostgreSQL, serve one process on ``port``, enrol company and nodes."""
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
    # Every process of the one directory would bind the operator's console on
    # the same address: the benchmark needs none.
    config_path = registry_dir / registry_config.CONFIG_FILE
    config_path.write_text(
        re.sub(r"(?m)^console_listen = .*$", 'console_listen = ""', config_path.read_text())
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
    first = federation.serve_registry(port)
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
    registry: Child,
    subjects: Sequence[SubjectRef],
    concurrency: int,
    calls: int,
) -> tuple[float, int]:
    """Verdicts per second from ``concurrency`` requesters, each its own connection to the port."""
    requesters = [federation.requester(registry) for _ in range(concurrency)]
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


def screening(
    federation: Federation, registry: Child, subjects: Sequence[SubjectRef], streams: int,
    message_size: int,
) -> float:  # fmt: skip
    """Subjects screened per second by ``streams`` concurrent ScreenBatch streams."""
    requesters = [federation.requester(registry, timeout=600) for _ in range(streams)]
    shares = [subjects[index::streams] for index in range(streams)]

    def stream(requester: Requester, share: Sequence[SubjectRef]) -> int:
        rows = [ScreenRow(f"r{index}", subject) for index, subject in enumerate(share)]
        outcomes = requester.screen(rows, message_size=message_size, timeout=600)
        return sum(1 for outcome in outcomes if outcome.verdict is None)

    try:
        for requester in requesters:  # connect and fetch the manifest before timing
            requester.verify_organisation(subjects[0])
        started = time.perf_counter()
        with ThreadPoolExecutor(streams) as pool:
            refused = sum(pool.map(stream, requesters, shares))
        elapsed = time.perf_counter() - started
    finally:
        for requester in requesters:
            requester.close()
    if refused:
        raise RuntimeError(f"{refused} screened rows were refused; the figure would not count")
    return len(subjects) / elapsed


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(children: Sequence[Child]) -> list[float]:
    """CPU seconds (user + system) each child process has spent so far."""
    seconds = []
    for child in children:
        fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        seconds.append((int(fields[11]) + int(fields[12])) / _TICKS)
    return seconds


@dataclass(frozen=True)
class Figures:
    """One scale-out step: verdicts/s, subjects/s, and each registry's share of the CPU."""

    processes: int
    verdicts_per_s: float
    refused: int
    subjects_per_s: float
    cpu_split: tuple[float, ...]


def measure(
    federation: Federation, subjects: Sequence[SubjectRef], screened: Sequence[SubjectRef],
    args: argparse.Namespace,
) -> Figures:  # fmt: skip
    """Verdicts/s and subjects/s against the shared port with the registries now running."""
    registries = federation.registries
    count = len(registries)
    before = cpu_seconds(registries)
    progress(f"{args.calls} verdicts at c={args.concurrency}, {count} registry process(es)")
    rate, refused = throughput(federation, registries[0], subjects, args.concurrency, args.calls)
    progress(f"ScreenBatch of {len(screened):,} in {args.streams} streams, {count} process(es)")
    subjects_per_s = screening(federation, registries[0], screened, args.streams,
                               args.message_size)  # fmt: skip
    spent = [after - first for after, first in zip(cpu_seconds(registries), before, strict=True)]
    total = sum(spent) or 1.0
    return Figures(count, rate, refused, subjects_per_s, tuple(part / total for part in spent))


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


def _server_url(cluster: Path) -> tuple[str, bool]:
    """The PostgreSQL server to use, and whether a private cluster was started for it.

    Raises:
        RuntimeError: the private cluster did not start.
    """
    given = os.environ.get(POSTGRES_URL_ENV)
    if given:
        return given, False
    progress("starting a private PostgreSQL cluster")
    started = subprocess.run(
        ["bash", str(_POSTGRES), "start", str(cluster), str(_free_port())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if started.returncode != 0:
        raise RuntimeError(f"cannot start PostgreSQL: {started.stderr.strip()}")
    return started.stdout.strip(), True


def _drop_databases(server_url: str, names: Sequence[str]) -> None:
    admin = database.create_engine_for(server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.engine.dispose()


def _report(figures: Sequence[Figures], args: argparse.Namespace, single: float,
            batched: float) -> None:  # fmt: skip
    print()
    print(f"Registry scale-out on PostgreSQL ({os.cpu_count()} cores, "
          f"{args.agencies} agency processes, verdicts verified by the client;")  # fmt: skip
    print(" every registry process on one port, SO_REUSEPORT)")
    for step in figures:
        split = " / ".join(f"{share:.0%}" for share in step.cpu_split)
        print(f"  {step.processes} registry process(es): verdicts/s at c={args.concurrency} "
              f"{step.verdicts_per_s:8.1f} (refused {step.refused}),  ScreenBatch "
              f"{step.subjects_per_s:9,.0f} subj/s;  registry CPU split {split}")  # fmt: skip
    first, last = figures[0], figures[-1]
    print(f"  {last.processes} processes / 1: verdicts/s "
          f"{last.verdicts_per_s / first.verdicts_per_s:5.2f}x, subjects/s "
          f"{last.subjects_per_s / first.subjects_per_s:5.2f}x")  # fmt: skip
    print(f"  log appends/s, 1 per transaction       : {single:8.0f}")
    print(f"  log appends/s, {args.batch} per transaction    : {batched:8.0f}"
          f"  ({batched / single:.0f}x the single appends)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agencies", type=int, default=2, help="agency node processes")
    parser.add_argument("--subjects", type=int, default=200, help="synthetic subjects per kind")
    parser.add_argument("--processes", type=int, default=2, help="registry processes at most")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=1200, help="verdicts per measurement")
    parser.add_argument("--screen", type=int, default=40_000, help="subjects screened per step")
    parser.add_argument("--streams", type=int, default=4, help="concurrent ScreenBatch streams")
    parser.add_argument("--message-size", type=int, default=1000)
    parser.add_argument("--single-appends", type=int, default=3000)
    parser.add_argument("--batch-appends", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000, help="entries per batch transaction")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="credence-scaleout-"))
    # Not under a 0700 directory of ours: the postgres user must traverse it.
    cluster = Path(tempfile.gettempdir()) / f"credence-pg-bench-{secrets.token_hex(6)}"
    federation: Federation | None = None
    private = False
    server_url = ""
    suffix = secrets.token_hex(4)
    names = [f"bench_registry_{suffix}", f"bench_appends_1_{suffix}", f"bench_appends_n_{suffix}"]
    try:
        try:
            server_url, private = _server_url(cluster)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        federation = Federation(work, _create_database(server_url, names[0]))
        port = _free_port()
        subjects = build(federation, args.agencies, args.subjects, port)
        key = PseudonymisationKey.from_bytes(
            (federation.registry_dir / "pseudonymisation.key").read_bytes()
        )
        screened = [ref_for(key, synthetic.organisation(index)) for index in range(args.screen)]

        figures = []
        for count in range(1, args.processes + 1):
            if count > 1:
                progress(f"starting registry process {count} on the same port {port}")
                federation.serve_registry(port)
            for registry in federation.registries:
                _wait_listed(federation, registry, subjects[0])
            figures.append(measure(federation, subjects, screened, args))
        federation.stop()

        progress(f"{args.single_appends} log appends, one per transaction")
        single = appends(_create_database(server_url, names[1]), args.single_appends, 1)
        progress(f"{args.batch_appends} log appends, {args.batch} per transaction")
        batched = appends(_create_database(server_url, names[2]), args.batch_appends, args.batch)
        _report(figures, args, single, batched)
        return 0
    finally:
        if federation is not None:
            federation.stop()
        if private:
            subprocess.run(
                ["bash", str(_POSTGRES), "stop", str(cluster)],
                capture_output=True,
                check=False,
                timeout=120,
            )
        elif server_url:
            _drop_databases(server_url, names)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
