"""The node's log audit keeps up (issue 10, section 7): ``python -m bench.bench_audit``.

Two targets, each printed with its figure and met/MISSED:

1. **Promises checked per second by one node**, at least 5,000: the node's
   background pass (:class:`agency_node.audit.LogAuditor`) over every
   answered query awaiting its check, in bulk requests of 1,000 against one
   signed tree head, marking each verified row.
2. **``credence node audit`` over 50,000 answered queries**, under 10 s: the
   real command in its own process (wall time, start-up included), which
   re-checks every answered query; its progress lines on stderr are counted.

Setup (untimed): a registry database in SQLite filled through the screening
append path (:func:`central_registry.log.entries.append_entries`, 1,000 rows
per transaction), the registry's TransparencyLogService on a loopback TLS
port in a process of its own, and a node data directory (the test federation
helper) whose query log holds the matching answered queries, received an hour
ago. For comparison, the old way (one ``GetInclusionProof`` per promise) is
timed over a sample.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.process
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.log_server import fill_log, new_promises, record_answers, serve_forever

from agency_node import config as node_config
from agency_node import database as node_database
from agency_node.audit import LogAuditor, log_keys
from agency_node.manifest_holder import ManifestHolder, load_manifest
from agency_node.offline_node import write_node_dir
from central_registry.database import create_engine_for, session_factory, sqlite_url_for
from central_registry.database import upgrade_schema as upgrade_registry
from credence.dev.offline_federation import REGISTRY_ID, Federation
from credence.keys import save_signing_key
from credence.transparency.log_audit import check_inclusion

TARGET_PER_S = 5_000.0
TARGET_AUDIT_NODE_S = 10.0
COURT = "court-1"
_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _auditor(node_dir: Path) -> LogAuditor:
    import grpc  # noqa: PLC0415 - the registry process is spawned before this is needed

    from credence.transparency.log_audit import LogClient  # noqa: PLC0415

    config = node_config.load_config(node_dir)
    return LogAuditor(
        engine=node_database.create_engine_for(config.effective_database_url),
        manifests=ManifestHolder(
            load_manifest(config, datetime.now(UTC)), config.path(node_config.MANIFEST_FILE)
        ),
        client=LogClient(
            config.registry_public,
            grpc.ssl_channel_credentials(
                root_certificates=config.path(node_config.CA_CERT_FILE).read_bytes()
            ),
            timeout=60,
        ),
        clock=lambda: datetime.now(UTC),
        merge_delay=timedelta(seconds=config.audit_merge_delay_seconds),
    )


def _single_rpc_rate(node_dir: Path, commitments: list[bytes]) -> float:
    """Promises per second the old way: one GetInclusionProof per promise."""
    auditor = _auditor(node_dir)
    client = auditor._client
    try:
        head = client.tree_head(log_keys(auditor._manifests))
        started = time.perf_counter()
        for commitment in commitments:
            check_inclusion(head, commitment, client.inclusion(commitment, head.tree_size))
        return len(commitments) / (time.perf_counter() - started)
    finally:
        auditor.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50_000)
    parser.add_argument("--single-sample", type=int, default=500, help="old-way sample size")
    args = parser.parse_args(argv)

    federation = Federation.create()
    federation.add_agency(COURT, ("court_judgment",))
    root = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process: multiprocessing.process.BaseProcess | None = None
    try:
        registry_dir = root / "registry"
        registry_dir.mkdir()
        registry_url = sqlite_url_for(registry_dir)
        engine = create_engine_for(registry_url)
        upgrade_registry(engine)
        made = new_promises(args.queries, datetime.now(UTC))
        started = time.perf_counter()
        fill_log(session_factory(engine), [row for _, row in made])
        engine.dispose()
        progress(
            f"registry log: {args.queries:,} entries appended 1,000 per transaction in "
            f"{time.perf_counter() - started:.1f} s (untimed setup)"
        )
        key_file = registry_dir / "log.key"
        save_signing_key(key_file, federation.registry_key)
        registry = federation.members[REGISTRY_ID]
        process = context.Process(
            target=serve_forever,
            args=(registry_url, key_file, registry.tls_key_pem, registry.cert_pem, theirs),
            daemon=True,
        )
        process.start()
        deadline = time.monotonic() + 120
        while not ours.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the log service did not start; see its traceback above")
        port = ours.recv()
        node_dir = write_node_dir(federation, root, COURT, registry_public=f"127.0.0.1:{port}")
        node_engine = node_database.create_engine_for(node_database.sqlite_url_for(node_dir))
        record_answers(
            node_engine, [item for item, _ in made], datetime.now(UTC) - timedelta(hours=1)
        )
        node_engine.dispose()
        progress(f"node: {args.queries:,} answered queries awaiting the audit; log on {port}")

        sample = [item.commitment for item, _ in made[: args.single_sample]]
        single = _single_rpc_rate(node_dir, sample)
        progress(f"old way, one GetInclusionProof per promise: {single:,.0f} promises/s")

        auditor = _auditor(node_dir)
        try:
            started = time.perf_counter()
            report = auditor.run_once()
            elapsed = time.perf_counter() - started
        finally:
            auditor.close()
        if report.problems or report.checked != args.queries:
            print(f"FAILED: background pass checked {report.checked}, problems {report.problems}")
            return 1
        rate = report.checked / elapsed
        print(
            f"promises checked per second by one node (background pass, {report.checked:,} "
            f"promises in {elapsed:.2f} s, lag after {report.lag_seconds:.0f} s): "
            f"{rate:,.0f}/s (target >= {TARGET_PER_S:,.0f}/s: {verdict(rate >= TARGET_PER_S)}; "
            f"{rate / single:.0f}x the one-request-per-promise way)"
        )

        command = [sys.executable, "-c", "import sys; from credence.cli import main; "
                   "sys.exit(main())", "node", "audit", "--dir", str(node_dir)]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, env=dict(os.environ)
        )
        wall = time.perf_counter() - started
        lines = [line for line in done.stderr.splitlines() if line.startswith("audit node:")]
        print(f"  $ credence node audit --dir {node_dir}  (exit {done.returncode})")
        for line in done.stdout.splitlines():
            print(f"    {line}")
        print(f"    stderr: {len(lines)} progress line(s), last: {lines[-1] if lines else '-'}")
        ok = done.returncode == 0 and wall < TARGET_AUDIT_NODE_S
        print(
            f"credence node audit over {args.queries:,} answered queries: {wall:.2f} s wall "
            f"(target < {TARGET_AUDIT_NODE_S:.0f} s: {verdict(ok)})"
        )
        return 0 if ok and rate >= TARGET_PER_S else 1
    finally:
        if process is not None:
            ours.send("stop")
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
