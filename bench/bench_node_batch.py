"""One node's answering cost: ``python -m bench.bench_node_batch``.

Issue 3's and issue 13's targets, for one node process over loopback mutual
TLS with records in SQLite and most subjects holding no record (as in real
screening): batches of 1,000 answered at 50,000 subjects/s or more, at most
15 us of the node's CPU per screened subject, and at most 1.5 ms of its CPU
per single query (``AnswerQuery``, one at a time). CPU is the node process's
own (``/proc/PID/stat``), so the figures hold on a busy machine where
wall-clock rates do not.

The bench builds a node data directory with the offline federation
(:mod:`credence.dev.offline_federation`), imports N generated court judgments about
``reg:CN:`` organisations, starts the node in its own process (spawned, real
clock), pre-signs every batch in this process (signing is the registry's
cost, not the node's), then times streaming all batches through one
``AnswerBatch`` stream and reading every answer. A second, in-process part
times the hot path's record fetch, ``IN`` over 1,000 references, through
SQLAlchemy Core and through the raw ``sqlite3`` driver on the same file.

``--profile`` runs the node under cProfile and prints its top functions;
``--flame PREFIX`` records the node with py-spy (threads and native frames)
during the single queries and during the batches, into ``PREFIX-single.svg``
and ``PREFIX-batch.svg``.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import hashlib
import io
import multiprocessing
import multiprocessing.connection
import os
import pstats
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import select

from agency_node import config as node_config
from agency_node import database
from agency_node.answering import RecordReader
from agency_node.importer import import_records
from agency_node.models import Record
from agency_node.offline_node import write_node_dir
from credence import payloads, queries
from credence.blind.layout import for_scorecard
from credence.blind.sums import MOD
from credence.dev.offline_federation import REGISTRY_ID, Federation
from credence.envelope import Envelope, verify_message
from credence.import_format import FIELDS
from credence.keys import KeySet
from credence.rpc.tls import channel_credentials
from credence.scorecard import default_scorecard
from credence.transparency import log_promise
from credence.v1 import agency_pb2, agency_pb2_grpc, common_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.blind import masks_of  # the tests' helper: reads masked answers

_LAYOUT = for_scorecard(default_scorecard())
LENGTH, LISTED = _LAYOUT.length, _LAYOUT.listed_index

TARGET_SUBJECTS_PER_S = 50_000
#: The node's CPU per screened subject, and per single query, at most (issue 13).
TARGET_CPU_PER_SUBJECT_US = 15.0
TARGET_CPU_PER_SINGLE_US = 1_500.0
_TICKS = os.sysconf("SC_CLK_TCK")
COURT = "court-1"
HEADER = ",".join(FIELDS)
# Four rows for every three subjects: some organisations have two judgments.
_ROWS_PER_SUBJECT = (4, 3)
_COLUMNS = (
    Record.subject_ref,
    Record.kind,
    Record.category,
    Record.status,
    Record.occurred_at,
    Record.expires_at,
    Record.disputed,
    Record.days_overdue,
    Record.contest_due_at,
)
_RAW_COLUMNS = (
    "subject_ref, kind, category, status, occurred_at, expires_at, disputed, days_overdue, "
    "contest_due_at"
)


def _held(index: int) -> str:
    return f"reg:CN:H{index:09d}"


def _absent(index: int) -> str:
    return f"reg:CN:A{index:09d}"


def held_subjects(rows: int) -> int:
    """How many distinct subjects ``rows`` generated records are about."""
    per_rows, per_subjects = _ROWS_PER_SUBJECT
    return (rows * per_subjects + per_rows - 1) // per_rows


def generate_csv(path: Path, rows: int, now: datetime, seed: int = 3) -> None:
    """Write ``rows`` court judgments about ``reg:CN:H...`` organisations."""
    rng = random.Random(seed)
    per_rows, per_subjects = _ROWS_PER_SUBJECT
    with path.open("w", newline="", encoding="utf-8") as out:
        out.write(HEADER + "\n")
        writer = csv.writer(out)
        for n in range(rows):
            occurred = (now - timedelta(days=rng.randrange(1, 365 * 7))).date()
            writer.writerow(
                [
                    f"J-{n:09d}",
                    _held(n * per_subjects // per_rows),
                    "court_judgment",
                    rng.choice(("dishonest_debtor", "judgment_debt")),
                    f"{rng.randrange(100, 900_000)}.{rng.randrange(100):02d}",
                    "CNY",
                    "active" if rng.random() < 0.8 else "settled",
                    occurred.isoformat(),
                    "",
                    "true" if rng.random() < 0.02 else "",
                    "",
                ]
            )


# -- the node, in its own process ------------------------------------------------------


def _node_main(
    data_dir: str, conn: multiprocessing.connection.Connection, profile: bool
) -> None:  # pragma: no cover - runs in the spawned process
    from agency_node.answering import Answerer  # noqa: PLC0415 - imported in the child
    from agency_node.server import start_node  # noqa: PLC0415 - imported in the child

    profiler = cProfile.Profile() if profile else None
    inside = [0.0]
    if profiler is not None:
        # cProfile is not thread-aware and the server answers in pool threads;
        # one stream's batches run one after another, so profile each call.
        original = Answerer.answer_batch

        def profiled(self: Answerer, message: common_pb2.Envelope) -> Envelope:
            started = time.perf_counter()
            try:
                return profiler.runcall(original, self, message)
            finally:
                inside[0] += time.perf_counter() - started

        Answerer.answer_batch = profiled  # type: ignore[method-assign]
    node = start_node(Path(data_dir), listen="127.0.0.1:0")
    try:
        conn.send(node.port)
        conn.recv()  # the bench says stop
    finally:
        node.stop(0)
        if profiler is not None:
            text = io.StringIO()
            text.write(f"time inside Answerer.answer_batch, all batches: {inside[0]:.2f} s\n")
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
            text.write("\n--- by own time ---\n")
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
            conn.send(text.getvalue())
        conn.close()


# -- the registry's side -------------------------------------------------------------------


def sign_batches(
    federation: Federation,
    identifiers: Sequence[str],
    batch_size: int,
    now: datetime,
) -> list[agency_pb2.AnswerBatchRequest]:
    """Every batch signed in advance, living the longest the node accepts.

    ``Federation.batch`` signs for the default 60 s; a long run needs the
    full allowed lifetime, so the same steps are repeated here with it.
    """
    purpose = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
    kinds = (common_pb2.VERDICT_KIND_BLACKLIST,)
    grant = queries.public_register()
    requests = []
    for start in range(0, len(identifiers), batch_size):
        signed = []
        for identifier in identifiers[start : start + batch_size]:
            lookup = queries.Lookup(
                subject=federation.subject(identifier),
                grant=grant,
                grant_id="",
                query_id=queries.new_query_id(),
            )
            entry = lookup.log_entry(requester="acme", purpose=purpose, kinds=kinds, issued_at=now)
            promise = log_promise.make_promise(
                entry,
                log_promise.new_salt(),
                log_id=federation.registry_key.kid,
                promised_at=now,
                max_merge_delay=timedelta(minutes=5),
            )
            signed.append((lookup, promise))
        envelope = queries.sign_batch(
            signed,
            requester="acme",
            purpose=purpose,
            kinds=kinds,
            audience=sorted(federation.agencies),
            scorecard_version="v1",
            now=now,
            registry_key=federation.registry_key,
            lifetime=payloads.MAX_QUERY_LIFETIME,
        )
        requests.append(agency_pb2.AnswerBatchRequest(batch=envelope.to_proto()))
    return requests


def sign_singles(
    federation: Federation, identifiers: Sequence[str], now: datetime
) -> list[agency_pb2.AnswerQueryRequest]:
    """One signed single query per identifier, as the registry sends them, long-lived."""
    return [
        agency_pb2.AnswerQueryRequest(
            query=federation.query(
                federation.subject(identifier), now=now, lifetime=payloads.MAX_QUERY_LIFETIME
            ).to_proto()
        )
        for identifier in identifiers
    ]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def verdict(ok: bool) -> str:
    """How a figure stands against its target."""
    return "met" if ok else "MISSED"


class Flame:
    """A py-spy recording of one process while a phase runs (a no-op without a path)."""

    def __init__(self, pid: int, path: str | None, form: str = "flamegraph") -> None:
        self._pid = pid
        self._path = path
        self._form = form
        self._spy: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Flame:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if self._path is not None:
            command = [spy, "record", "--native", "--threads", "-f", self._form, "-o", self._path]
            self._spy = subprocess.Popen(
                [*command, "--pid", str(self._pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self._spy.wait(60)
            print(f"flame graph: {self._path}")


def single_queries(
    stub: agency_pb2_grpc.AgencyNodeServiceStub,
    requests: Sequence[agency_pb2.AnswerQueryRequest],
) -> tuple[float, list[float]]:
    """Send each query alone, waiting for its answer; elapsed seconds and latencies."""
    latencies = []
    started = time.perf_counter()
    for request in requests:
        sent = time.perf_counter()
        stub.AnswerQuery(request, timeout=60)
        latencies.append(time.perf_counter() - sent)
    return time.perf_counter() - started, latencies


def screening_identifiers(count: int, held: int, hit_rate: float, rng: random.Random) -> list[str]:
    """``count`` subjects, a ``hit_rate`` share of them holding records."""
    return [
        _held(rng.randrange(held)) if rng.random() < hit_rate else _absent(n) for n in range(count)
    ]


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def stream_batches(
    stub: agency_pb2_grpc.AgencyNodeServiceStub,
    requests: Sequence[agency_pb2.AnswerBatchRequest],
) -> tuple[float, list[float], list[float], list[agency_pb2.AnswerBatchResponse]]:
    """Elapsed seconds, send-to-answer latencies, gaps between answers, answers."""
    sent: list[float] = []

    def generate() -> Iterator[agency_pb2.AnswerBatchRequest]:
        for request in requests:
            sent.append(time.perf_counter())
            yield request

    started = time.perf_counter()
    received: list[float] = []
    responses = []
    for response in stub.AnswerBatch(generate(), timeout=600):
        received.append(time.perf_counter())
        responses.append(response)
    elapsed = time.perf_counter() - started
    latencies = [got - put for put, got in zip(sent, received, strict=True)]
    gaps = [b - a for a, b in zip([started, *received], received, strict=False)]
    return elapsed, latencies, gaps, responses


def check_answers(
    federation: Federation,
    requests: Sequence[agency_pb2.AnswerBatchRequest],
    responses: Sequence[agency_pb2.AnswerBatchResponse],
) -> tuple[int, int, int]:
    """Verify every signed answer against its batch; (answered, refused, listed)."""
    node_keys = KeySet([federation.members[COURT].signing_key.public])
    answered = refused = listed = 0
    for request, response in zip(requests, responses, strict=True):
        reply = verify_message(
            Envelope.from_proto(response.answers),
            payloads.BATCH_ANSWER,
            node_keys,
            agency_pb2.BatchAnswer,
        )
        if reply.batch_hash != hashlib.sha256(request.batch.payload).digest():
            msg = f"answer to batch {reply.batch_id} is for another batch"
            raise AssertionError(msg)
        # The bench holds every agency's key, so it reads the listed slot the node masked.
        masks = masks_of(
            federation,
            COURT,
            sorted(federation.agencies),
            reply.batch_id,
            LENGTH * len(reply.items),
        )
        for index, item in enumerate(reply.items):
            if item.WhichOneof("outcome") == "answer":
                answered += 1
                slot = index * LENGTH + LISTED
                listed += (item.answer.masked[LISTED] - masks[slot]) % MOD == 1
            else:
                refused += 1
    return answered, refused, listed


# -- the hot path, in process --------------------------------------------------------------


def _utc(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


def _time(function: object, rounds: int) -> float:
    assert callable(function)
    function()  # warm: statement cache, page cache
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds


def hot_path(db_file: Path, held_refs: list[bytes], absent_refs: list[bytes], rounds: int) -> None:
    """Time ``IN`` over 1,000 references: SQLAlchemy Core against raw ``sqlite3``."""
    engine = database.create_engine_for(f"sqlite:///{db_file}")
    raw = sqlite3.connect(str(db_file))
    raw.execute(f"PRAGMA cache_size=-{64 * 1024}")
    raw.execute(f"PRAGMA mmap_size={256 * 1024 * 1024}")
    try:

        def core(refs: list[bytes]) -> int:
            count = 0
            with engine.connect() as connection:
                for start in range(0, len(refs), 900):
                    statement = select(*_COLUMNS).where(
                        Record.subject_ref.in_(refs[start : start + 900])
                    )
                    count += len(connection.execute(statement).all())
            return count

        def driver(refs: list[bytes], *, parse: bool = False) -> int:
            count = 0
            for start in range(0, len(refs), 900):
                chunk = refs[start : start + 900]
                marks = ",".join("?" * len(chunk))
                cursor = raw.execute(
                    f"SELECT {_RAW_COLUMNS} FROM records WHERE subject_ref IN ({marks})",
                    chunk,
                )
                rows = cursor.fetchall()
                if parse:
                    # What Core's result processing does: text to aware datetimes.
                    rows = [
                        (*row[:4], _utc(row[4]), _utc(row[5]), bool(row[6]), row[7]) for row in rows
                    ]
                count += len(rows)
            return count

        reader = RecordReader(engine)
        mixed = held_refs[:50] + absent_refs[:950]
        reader.warm()  # builds the Bloom filter, untimed
        print(f"hot path, one fetch of 1,000 references (mean of {rounds} rounds):")
        for label, refs in (("1,000 held", held_refs), ("1,000 absent", absent_refs)):
            core_s = _time(lambda refs=refs: core(refs), rounds)
            raw_s = _time(lambda refs=refs: driver(refs), rounds)
            parsed_s = _time(lambda refs=refs: driver(refs, parse=True), rounds)
            print(
                f"  {label:>13}: SQLAlchemy Core IN {core_s * 1e3:7.2f} ms "
                f"({1000 / core_s:>9,.0f} keys/s) | raw sqlite3 IN {raw_s * 1e3:7.2f} ms "
                f"({1000 / raw_s:>9,.0f} keys/s) | Core/raw {core_s / raw_s:.2f}x | "
                f"raw + datetime parsing {parsed_s * 1e3:.2f} ms (Core/that "
                f"{core_s / parsed_s:.2f}x)"
            )
        reader_s = _time(lambda: reader.records_for(mixed), rounds)
        print(
            f"  RecordReader.records_for, 1,000 refs at 5% held (Bloom first): "
            f"{reader_s * 1e3:.2f} ms ({1000 / reader_s:,.0f} refs/s)"
        )
    finally:
        raw.close()
        engine.dispose()


# -- main ------------------------------------------------------------------------------------


def _prepare(federation: Federation, root: Path, records: int, now: datetime) -> Path:
    data_dir = write_node_dir(federation, root, COURT)
    # The helper signs the manifest at its fixed test time; the node runs on the real clock.
    (data_dir / node_config.MANIFEST_FILE).write_bytes(
        federation.manifest_envelope(now=now).to_bytes()
    )
    source = root / "records.csv"
    started = time.perf_counter()
    generate_csv(source, records, now)
    print(f"generated {records:,} rows in {time.perf_counter() - started:.1f} s")
    engine = database.create_engine_for(database.sqlite_url_for(data_dir))
    try:
        started = time.perf_counter()
        report = import_records(
            database.session_factory(engine), source, federation.pseudonymisation_key, now=now
        )
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    source.unlink()
    print(
        f"imported {report} in {elapsed:.1f} s: {report.rows / elapsed:,.0f} rows/s "
        f"(import target 50,000 rows/s)"
    )
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--subjects", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--hit-rate", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=50, help="hot-path repetitions")
    parser.add_argument("--singles", type=int, default=2000, help="single queries, one at a time")
    parser.add_argument("--profile", action="store_true", help="cProfile the node process")
    parser.add_argument("--flame", metavar="PREFIX", help="py-spy flame graphs of the node")
    parser.add_argument(
        "--flame-format", default="flamegraph", choices=("flamegraph", "raw", "speedscope")
    )
    parser.add_argument(
        "--skip-hot-path", action="store_true", help="leave out the in-process IN timing"
    )
    args = parser.parse_args(argv)

    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    # Three more agencies in the audience: the court masks every answer with each (issue 14).
    for other in ("bank-1", "tax-1", "telecom-1"):
        federation.add_agency(other, ("loan_default",))
    federation.enrol("acme")
    rng = random.Random(7)
    root = Path(tempfile.mkdtemp(prefix="bench-node-batch-"))
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process: multiprocessing.process.BaseProcess | None = None
    try:
        data_dir = _prepare(federation, root, args.records, datetime.now(UTC))
        held = held_subjects(args.records)
        process = context.Process(
            target=_node_main, args=(str(data_dir), theirs, args.profile), daemon=True
        )
        process.start()
        deadline = time.monotonic() + 60
        while not ours.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the node process did not start; see its traceback above")
        port = ours.recv()

        now = datetime.now(UTC)
        started = time.perf_counter()
        warmup = sign_batches(
            federation, screening_identifiers(args.batch, held, args.hit_rate, rng), args.batch, now
        )
        identifiers = screening_identifiers(args.subjects, held, args.hit_rate, rng)
        # Fresh absent subjects for the timed run: none repeats the warm-up's.
        identifiers = [
            identifier.replace(":A", ":B", 1) if identifier.startswith("reg:CN:A") else identifier
            for identifier in identifiers
        ]
        requests = sign_batches(federation, identifiers, args.batch, now)
        singles = sign_singles(
            federation,
            [
                identifier.replace(":A", ":C", 1)
                for identifier in screening_identifiers(args.singles, held, args.hit_rate, rng)
            ],
            now,
        )
        sign_s = time.perf_counter() - started
        print(
            f"pre-signed {len(requests) + 1} batches of {args.batch:,} and {len(singles):,} "
            f"single queries in {sign_s:.1f} s (registry side, untimed); hit rate "
            f"{args.hit_rate:.0%}, {held:,} subjects held"
        )

        registry = federation.members[REGISTRY_ID]
        credentials = channel_credentials(
            registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
        )
        limit = 64 * 1024 * 1024
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
            stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
            warm_s, _, _, warm_answers = stream_batches(stub, warmup)
            check_answers(federation, warmup, warm_answers)
            print(f"warm-up batch (connection, Bloom filter build): {warm_s * 1e3:.0f} ms")
            single_queries(stub, singles[:50])  # warm the single path
            pid = process.pid
            assert pid is not None
            extension = {"flamegraph": "svg", "raw": "txt"}.get(args.flame_format, "json")
            with Flame(pid, args.flame and f"{args.flame}-single.{extension}", args.flame_format):
                cpu_before = cpu_seconds(pid)
                single_s, single_latencies = single_queries(stub, singles[50:])
                single_cpu = (cpu_seconds(pid) - cpu_before) / len(singles[50:])
            with Flame(pid, args.flame and f"{args.flame}-batch.{extension}", args.flame_format):
                cpu_before = cpu_seconds(pid)
                elapsed, latencies, gaps, responses = stream_batches(stub, requests)
                batch_cpu = cpu_seconds(pid) - cpu_before

        if datetime.now(UTC) - now > payloads.MAX_QUERY_LIFETIME:
            print("WARNING: the run outlived the batches' lifetime; answers may be refusals")
        answered, refused, listed = check_answers(federation, requests, responses)
        subjects = answered + refused
        rate = subjects / elapsed
        per_subject_us = batch_cpu * 1e6 / subjects
        print(
            f"streamed {len(requests)} batches, {subjects:,} subjects in {elapsed:.2f} s over "
            f"loopback mTLS: {rate:,.0f} subjects/s "
            f"(target >= {TARGET_SUBJECTS_PER_S:,}/s: {rate / TARGET_SUBJECTS_PER_S:.2f}x, "
            f"{verdict(rate >= TARGET_SUBJECTS_PER_S)}; wall clock, noisy on a shared machine)"
        )
        print(
            f"node CPU per screened subject: {per_subject_us:.1f} us "
            f"(target <= {TARGET_CPU_PER_SUBJECT_US:.0f} us: "
            f"{verdict(per_subject_us <= TARGET_CPU_PER_SUBJECT_US)})"
        )
        single_us = single_cpu * 1e6
        print(
            f"single queries, one at a time: {len(single_latencies):,} in {single_s:.2f} s, "
            f"p50 {statistics.median(single_latencies) * 1e3:.2f} ms, "
            f"p99 {_percentile(single_latencies, 0.99) * 1e3:.2f} ms (wall clock)"
        )
        print(
            f"node CPU per single query: {single_us:,.0f} us "
            f"(target <= {TARGET_CPU_PER_SINGLE_US:,.0f} us: "
            f"{verdict(single_us <= TARGET_CPU_PER_SINGLE_US)})"
        )
        print(
            f"answers: {answered:,} answered, {refused:,} refused, {listed:,} listed; "
            f"all {len(responses)} batch signatures verified"
        )
        print(
            f"per batch: p50 send-to-answer {statistics.median(latencies) * 1e3:.1f} ms "
            f"(includes queueing behind earlier batches in the stream), "
            f"p50 gap between answers {statistics.median(gaps) * 1e3:.1f} ms, "
            f"p99 gap {_percentile(gaps, 0.99) * 1e3:.1f} ms"
        )

        ours.send("stop")
        process.join(30)
        if args.profile and ours.poll(30):
            print("--- node process profile ---")
            print(ours.recv())

        if not args.skip_hot_path:
            held_refs = [federation.subject(_held(rng.randrange(held))).ref for _ in range(1000)]
            absent_refs = [federation.subject(_absent(10**8 + n)).ref for n in range(1000)]
            hot_path(data_dir / node_config.DATABASE_FILE, held_refs, absent_refs, args.rounds)
    finally:
        if process is not None:
            if process.is_alive():
                process.terminate()
            process.join(10)
        ours.close()
        theirs.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
