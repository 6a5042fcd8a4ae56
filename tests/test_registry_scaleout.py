"""Two ``credence registry serve`` processes on one PostgreSQL database.

One registry data directory, one database, two processes on their own ports;
an agency node (in this process) and a company enrolled through them. Under
concurrent load from several clients split across both processes the log
stays one tree: dense indexes, one entry per lookup, every signed head a
prefix of the last. Killing one process mid-load loses no lookup that got a
verdict and corrupts nothing; the other keeps serving. The request rate
limit is one budget across both processes.

PostgreSQL only (SQLite is one writer on one host: nothing to scale out);
under CI the conftest fixtures fail rather than skip without a server.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, select
from support.registry import free_port, init_registry, run
from support.witnessed import wait_witnessed

from agency_node.server import RunningNode, start_node
from central_registry import config as registry_config
from central_registry import database
from central_registry.keyring import load_keys
from central_registry.models import LogEntry
from central_registry.publishing import publish
from credence.client import enrol as client_enrol
from credence.client.requester import MemberCredentials, Requester
from credence.dev import synthetic
from credence.errors import CredenceError, ResourceExhausted
from credence.keys import KeySet, SigningKey, load_signing_key, private_key_pem
from credence.pki import generate_tls_key, make_csr
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.subjects import PseudonymisationKey, SubjectRef, ref_for
from credence.transparency import merkle
from credence.transparency.checkpoint import log_origin
from credence.transparency.log_audit import (
    LogClient,
    LogIdentity,
    TrustedHead,
    check_consistency,
    check_inclusion,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COMPANY = "acme"
PROFILE = synthetic.AGENCY_PROFILES[0]
SUBJECTS = 40
_LISTENING = re.compile(r"listening on port (\d+) \(members\), (\d+) \(public\), http (\d+)")
_START_TIMEOUT_S = 60.0
# Generous enough that the load test never meets it, while every request still
# goes through the shared bucket row.
_NO_LIMIT = {"requests_per_second": 1_000_000.0, "burst": 1_000_000}


@dataclass
class RegistryProcess:
    """One ``credence registry serve`` child and its ports."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    public_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def public(self) -> str:
        return f"127.0.0.1:{self.public_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


@dataclass
class ScaleOut:
    """The registry directory, its database, two serving processes, a node and a company."""

    root: Path
    database_url: str
    engine: Engine
    processes: list[RegistryProcess] = field(default_factory=list)
    nodes: list[RunningNode] = field(default_factory=list)
    company: MemberCredentials | None = None

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def ca_pem(self) -> bytes:
        return (self.registry_dir / "ca.crt").read_bytes()

    @property
    def root_keys(self) -> KeySet:
        return KeySet([load_signing_key(self.registry_dir / "root.key").public])

    @property
    def log_identity(self) -> LogIdentity:
        config = registry_config.load_config(self.registry_dir)
        key = load_keys(config).signing.public.raw()
        return LogIdentity(log_origin(config.federation_id), key)

    def subjects(self) -> list[SubjectRef]:
        key = PseudonymisationKey.from_bytes(
            (self.registry_dir / "pseudonymisation.key").read_bytes()
        )
        expected = synthetic.expected([PROFILE], SUBJECTS)
        names = expected.listed_organisations + expected.clear_organisations
        return [ref_for(key, name) for name in names]

    def requester(self, process: RegistryProcess) -> Requester:
        assert self.company is not None
        return Requester(process.address, self.company, root_keys=self.root_keys, timeout=15)

    def log_client(self, process: RegistryProcess) -> LogClient:
        assert self.company is not None
        credentials = channel_credentials(
            self.company.key_pem, self.company.cert_pem, self.company.ca_pem
        )
        return LogClient(process.public, credentials, timeout=15)

    def log(self) -> list[tuple[int, str, bytes, str]]:
        """Every log entry: (index, query id, commitment, outcome), by index."""
        with database.session_factory(self.engine)() as session:
            rows = session.execute(
                select(
                    LogEntry.idx, LogEntry.query_id, LogEntry.commitment, LogEntry.outcome
                ).order_by(LogEntry.idx)
            ).all()
        return [(row.idx, row.query_id, bytes(row.commitment), row.outcome) for row in rows]


def _serve(registry_dir: Path, log: Path, port: int = 0) -> RegistryProcess:
    with log.open("ab") as out:
        command = [sys.executable, "-m", "credence.cli", "registry", "serve"]
        command += ["--dir", str(registry_dir), "--listen", f"127.0.0.1:{port}"]
        command += ["--public-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return RegistryProcess(process, log)


def _wait_listening(started: RegistryProcess) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _LISTENING.search(started.log.read_text(errors="replace"))
        if found:
            started.port, started.public_port = int(found[1]), int(found[2])
            return
        if started.process.poll() is not None:
            pytest.fail(f"registry exited while starting:\n{started.log.read_text()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"registry did not start within {_START_TIMEOUT_S:.0f} s: see {started.log}")


def _enrol_company(scale: ScaleOut, public: str) -> MemberCredentials:
    tls_key, signing_key = generate_tls_key(), SigningKey.generate()
    client_enrol.enrol(
        public, scale.ca_pem, member_id=COMPANY, display_name="Acme", role="company",
        csr_pem=make_csr(tls_key, COMPANY), signing_key=signing_key,
    )  # fmt: skip
    run("registry", "members", "approve", "--dir", scale.registry_dir, COMPANY)
    result = client_enrol.collect_enrolment(
        public, scale.ca_pem, member_id=COMPANY, signing_key=signing_key
    )
    return MemberCredentials(
        COMPANY, private_key_pem(tls_key), result.certificate_pem, result.ca_pem, signing_key
    )


def _add_agency(scale: ScaleOut, registry: RegistryProcess) -> RunningNode:
    node_dir = scale.root / PROFILE.name
    kinds = ",".join(PROFILE.record_kinds)
    run("node", "init", "--dir", node_dir, "--member-id", PROFILE.name,
        "--kinds", kinds, "--listen", f"127.0.0.1:{free_port()}")  # fmt: skip
    jwks = scale.root / "root.jwks.json"
    jwks.write_text(json.dumps(scale.root_keys.to_jwks()))
    enrol = ("node", "enrol", "--dir", node_dir, "--registry", registry.address,
             "--public", registry.public, "--ca", scale.registry_dir / "ca.crt",
             "--root-keys", jwks)  # fmt: skip
    run(*enrol)
    run("registry", "members", "approve", "--dir", scale.registry_dir, PROFILE.name)
    run(*enrol, "--wait", "10")
    records = node_dir / "records.csv"
    records.write_text(synthetic.agency_csv(PROFILE, SUBJECTS, 7, datetime.now(UTC).date()))
    run("node", "import", "--dir", node_dir, records)
    return start_node(node_dir)


@pytest.fixture
def scaleout(tmp_path: Path, postgres_database: str) -> Iterator[Callable[..., ScaleOut]]:
    """Builds the federation with the given rate limits; stops all of it afterwards.

    With ``one_port`` both processes listen for members on the same port.
    """
    built: list[ScaleOut] = []

    def build(limits: dict[str, float], *, one_port: bool = False) -> ScaleOut:
        scale = ScaleOut(tmp_path, postgres_database, database.create_engine_for(postgres_database))
        built.append(scale)
        # `registry init` builds its config without the environment, so it always
        # starts on SQLite: point the directory at PostgreSQL, migrate it, and
        # publish the first manifest there as init did.
        init_registry(scale.registry_dir, {"database_url": postgres_database, **limits})
        run("registry", "migrate", "--dir", scale.registry_dir)
        config = registry_config.load_config(scale.registry_dir)
        with database.session_factory(scale.engine).begin() as session:
            publish(
                session, config=config, keys=load_keys(config),
                scorecard=default_scorecard(), now=datetime.now(UTC),
            )  # fmt: skip
        port = free_port() if one_port else 0
        for name in ("a", "b"):
            log = tmp_path / f"registry-{name}.log"
            scale.processes.append(_serve(scale.registry_dir, log, port))
        for process in scale.processes:
            _wait_listening(process)
        first = scale.processes[0]
        scale.company = _enrol_company(scale, first.public)
        scale.nodes.append(_add_agency(scale, first))
        wait_witnessed(scale.nodes[-1])
        return scale

    yield build
    for scale in built:
        for node in scale.nodes:
            node.stop(0)
        for process in scale.processes:
            process.stop()
        scale.engine.dispose()


def _warm_up(scale: ScaleOut, listed: SubjectRef) -> list[str]:
    """One listed verdict from each process: both see the agency in their manifest."""
    query_ids = []
    for process in scale.processes:
        with scale.requester(process) as requester:
            deadline = time.monotonic() + 30
            while True:
                verdict = requester.verify_organisation(listed)
                query_ids.append(verdict.verdict.query_id)
                if verdict.status == "listed":
                    break
                assert time.monotonic() < deadline, "the agency never reached the manifest"
                time.sleep(0.2)
    return query_ids


@dataclass
class Load:
    """What the clients saw: verdicts' query ids, failures, tree heads."""

    query_ids: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    heads: list[TrustedHead] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self) -> int:
        with self.lock:
            return len(self.query_ids) + len(self.failures)


def _client(
    scale: ScaleOut,
    load: Load,
    targets: list[RegistryProcess],
    subjects: list[SubjectRef],
    count: int,
    seed: int,
) -> None:
    """Look ``count`` organisations up, failing over to the next target on a failure."""
    chooser = random.Random(seed)
    alive = list(targets)
    requester = scale.requester(alive[0])
    try:
        for _ in range(count):
            try:
                verdict = requester.verify_organisation(chooser.choice(subjects))
            except CredenceError as exc:
                with load.lock:
                    load.failures.append(f"{type(exc).__name__}: {exc}")
                if len(alive) > 1:
                    requester.close()
                    alive.pop(0)
                    requester = scale.requester(alive[0])
                continue
            with load.lock:
                load.query_ids.append(verdict.verdict.query_id)
    except BaseException as exc:  # reported by the test, not lost in the thread
        load.errors.append(exc)
    finally:
        requester.close()


def _watch_heads(scale: ScaleOut, load: Load, stop: threading.Event) -> None:
    """Collect signed tree heads from both processes, alternately, until ``stop``."""
    log = scale.log_identity
    clients = [scale.log_client(process) for process in scale.processes]
    try:
        for client in itertools.cycle(clients):
            if stop.wait(0.1):
                return
            try:
                head = client.tree_head(log)
            except grpc.RpcError:
                continue  # a killed process
            with load.lock:
                load.heads.append(head)
    except BaseException as exc:
        load.errors.append(exc)
    finally:
        for client in clients:
            client.close()


def _run_load(
    scale: ScaleOut,
    load: Load,
    plan: list[tuple[list[RegistryProcess], int]],
    during: Callable[[], None] = lambda: None,
) -> None:
    subjects = scale.subjects()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_heads, args=(scale, load, stop))
    clients = [
        threading.Thread(target=_client, args=(scale, load, targets, subjects, count, seed))
        for seed, (targets, count) in enumerate(plan)
    ]
    watcher.start()
    for thread in clients:
        thread.start()
    try:
        during()
    finally:
        for thread in clients:
            thread.join()
        stop.set()
        watcher.join()
    assert load.errors == []


def _tree(commitments: list[bytes]) -> merkle.MemorySubtrees:
    tree = merkle.MemorySubtrees()
    for index, commitment in enumerate(commitments):
        merkle.append(tree, index, merkle.leaf_hash(commitment))
    return tree


def _check_log(scale: ScaleOut, load: Load, survivor: RegistryProcess) -> list[bytes]:
    """The log is one dense, consistent tree holding every verdict's lookup; its leaves."""
    log = scale.log()
    assert [index for index, _, _, _ in log] == list(range(len(log)))
    query_ids = [query_id for _, query_id, _, _ in log]
    assert len(set(query_ids)) == len(query_ids)
    assert {outcome for _, _, _, outcome in log} == {"dispatched"}
    # Every lookup that got a verdict is in the log.
    assert set(load.query_ids) <= set(query_ids)
    commitments = [commitment for _, _, commitment, _ in log]
    tree = _tree(commitments)
    client = scale.log_client(survivor)
    try:
        final = client.tree_head(scale.log_identity)
        # The registry's stored tree (merkle_nodes) agrees with the entries, leaf by leaf.
        assert final.tree_size == len(log)
        assert final.root_hash == merkle.root(tree, len(log))
        for index in random.Random(1).sample(range(len(log)), 25):
            proof = client.inclusion(commitments[index], final.tree_size)
            assert check_inclusion(final, commitments[index], proof) == index
        # Every pair of heads seen: one a prefix of the other (proofs from our own tree).
        heads = sorted(
            {(head.tree_size, head.root_hash): head for head in [*load.heads, final]}.values(),
            key=lambda head: head.tree_size,
        )
        assert len(heads) > 5, "the watcher saw too few heads to prove anything"
        for old, new in itertools.combinations(heads, 2):
            check_consistency(
                old, new, merkle.consistency_proof(tree, old.tree_size, new.tree_size)
            )
        # And the registry's own proofs link each head to the next.
        for old, new in itertools.pairwise(heads):
            check_consistency(old, new, client.consistency(old.tree_size, new.tree_size))
    finally:
        client.close()
    return commitments


def test_two_processes_keep_one_consistent_log_under_load(
    scaleout: Callable[[dict[str, float]], ScaleOut],
) -> None:
    scale = scaleout(_NO_LIMIT)
    first, second = scale.processes
    load = Load()
    load.query_ids.extend(_warm_up(scale, scale.subjects()[0]))
    warm_up = len(load.query_ids)
    # 2,000 lookups from four clients, two on each process.
    _run_load(scale, load, [([first], 500), ([second], 500), ([first], 500), ([second], 500)])
    assert load.failures == []
    log = scale.log()
    # One entry per lookup, each the lookup of a verdict a client holds.
    assert len(load.query_ids) == 2000 + warm_up
    assert len(log) == len(load.query_ids)
    assert sorted(query_id for _, query_id, _, _ in log) == sorted(load.query_ids)
    _check_log(scale, load, first)


def test_killing_one_process_mid_load_loses_no_logged_lookup(
    scaleout: Callable[[dict[str, float]], ScaleOut],
) -> None:
    scale = scaleout(_NO_LIMIT)
    first, second = scale.processes
    load = Load()
    load.query_ids.extend(_warm_up(scale, scale.subjects()[0]))

    def kill_second() -> None:
        deadline = time.monotonic() + 120
        while load.done() < 400:
            assert time.monotonic() < deadline, "the load never got going"
            time.sleep(0.01)
        second.process.send_signal(signal.SIGKILL)
        second.process.wait(timeout=20)

    # Clients of the second process fail over to the first when it dies.
    _run_load(
        scale,
        load,
        [([first], 300), ([second, first], 300), ([first], 300), ([second, first], 300)],
        kill_second,
    )
    assert second.process.returncode == -signal.SIGKILL
    # At most one failure per client of the killed process: then it failed over.
    assert 1 <= len(load.failures) <= 2, load.failures
    log = scale.log()
    # A lookup killed after its log entry committed is logged without a verdict.
    assert len(load.query_ids) <= len(log) <= len(load.query_ids) + len(load.failures)
    _check_log(scale, load, first)
    # The survivor still serves, and its next entry extends the same tree.
    with scale.requester(first) as requester:
        verdict = requester.verify_organisation(scale.subjects()[0])
    assert verdict.status == "listed"
    assert scale.log()[-1][:2] == (len(log), verdict.verdict.query_id)


def test_the_rate_limit_is_one_budget_across_processes(
    scaleout: Callable[[dict[str, float]], ScaleOut],
) -> None:
    # A refill too slow to matter: the burst is the whole budget.
    scale = scaleout({"requests_per_second": 0.001, "burst": 6})
    subject = scale.subjects()[0]
    requesters = [scale.requester(process) for process in scale.processes]
    try:
        for _ in range(3):
            for requester in requesters:
                requester.verify_organisation(subject)
        # Each process alone would still allow three more; together they spent six.
        for requester in requesters:
            with pytest.raises(
                ResourceExhausted, match=r"rate limit of 0\.001 lookups/s for 'acme' reached"
            ) as caught:
                requester.verify_organisation(subject)
            assert caught.value.retry_after is not None
            assert caught.value.retry_after > 100
    finally:
        for requester in requesters:
            requester.close()
    outcomes = [outcome for _, _, _, outcome in scale.log()]
    assert outcomes == ["dispatched"] * 6 + ["refused"] * 2


def test_two_processes_serve_one_port_and_either_carries_it_alone(
    scaleout: Callable[..., ScaleOut],
) -> None:
    # gRPC binds with SO_REUSEPORT on Linux: the second process shares the port
    # instead of failing to bind, and the kernel spreads connections over both.
    scale = scaleout(_NO_LIMIT, one_port=True)
    first, second = scale.processes
    assert first.port == second.port
    load = Load()
    load.query_ids.extend(_warm_up(scale, scale.subjects()[0]))
    _run_load(scale, load, [([first], 100) for _ in range(4)])
    assert load.failures == []
    _check_log(scale, load, first)
    # With the first process gone, the same port still answers: the second holds it.
    first.stop()
    with scale.requester(second) as requester:
        verdict = requester.verify_organisation(scale.subjects()[0])
    assert verdict.status == "listed"
    assert scale.log()[-1][1] == verdict.verdict.query_id
