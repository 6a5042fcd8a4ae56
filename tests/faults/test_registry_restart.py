"""A registry restarted in the middle of a screening run loses and doubles nothing.

The company screens a CSV file through the fault proxy in front of the
registry (:func:`credence.client.screening.screen_file`, what ``credence screen``
runs). Partway through, the registry is stopped abruptly (no grace: the
stream is cut with rows in flight) and started again on the same data
directory and ports (or, a lesser fault, the proxy resets the stream while
the registry runs on). The company resumes the run, as ``credence screen
--resume`` does. Afterwards the output holds every row exactly once, the
log's new head is consistent with the head before the run, and the log grew
by exactly the lookups the registry made: every row once, plus at most the
rows that were in flight when it stopped (looked up again on resume, as
:mod:`credence.client.screening` documents).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from support.fault_federation import FaultFederation

from central_registry import config as registry_config
from central_registry import database as registry_database
from central_registry.models import LogEntry
from central_registry.server import RegistryThread
from credence.client.requester import Requester
from credence.client.screening import ScreenProgress, screen_file
from credence.errors import CredenceError
from credence.transparency.log_audit import LogIdentity, TrustedHead, check_consistency, log_client

pytestmark = pytest.mark.slow

_ROWS = 2000
_MESSAGE_SIZE = 50
_WINDOW = 4


def _log(company: Requester) -> LogIdentity:
    return LogIdentity.from_manifest(company.manifest())


def _head(fed: FaultFederation, log: LogIdentity) -> TrustedHead:
    credentials = grpc.ssl_channel_credentials(root_certificates=fed.federation.ca_pem)
    with log_client(fed.federation.public, credentials) as client:
        return client.tree_head(log)


def _restart_registry(fed: FaultFederation) -> None:
    """Stop the registry at once (in-flight calls cut) and start it on the same ports."""
    old = fed.federation.registry
    ports = (old.port, old.public_port, old.http_port)
    old.stop(grace=0)
    fed.federation.registry = RegistryThread(
        fed.federation.registry_dir,
        listen=f"127.0.0.1:{ports[0]}",
        public_listen=f"127.0.0.1:{ports[1]}",
        http_listen=f"127.0.0.1:{ports[2]}",
    )


def _logged_since(fed: FaultFederation, size: int) -> list[LogEntry]:
    config = registry_config.load_config(fed.federation.registry_dir)
    engine = registry_database.create_engine_for(config.effective_database_url)
    try:
        with registry_database.session_factory(engine)() as session:
            query = select(LogEntry).where(LogEntry.idx >= size).order_by(LogEntry.idx)
            return list(session.scalars(query))
    finally:
        engine.dispose()


@pytest.mark.parametrize("fault", ["restart", "drop"])
def test_registry_restarted_mid_screen(fed: FaultFederation, tmp_path: Path, fault: str) -> None:
    """``restart``: the registry stops and starts again; ``drop``: the stream is reset."""
    identifiers = {f"r{index}": f"reg:CN:{fault.upper()}{index:06d}" for index in range(_ROWS)}
    source = tmp_path / "suppliers.csv"
    source.write_text(
        "row_key,identifier\n" + "".join(f"{key},{value}\n" for key, value in identifiers.items())
    )
    out = tmp_path / "results.jsonl"
    pseudonymisation = fed.federation.pseudonymisation
    with fed.requester() as company:
        log = _log(company)
    before = _head(fed, log)

    restarted: list[int] = []

    def restart_once(progress: ScreenProgress) -> None:
        # Called on the screening thread between results: the stream is live.
        if not restarted and progress.done > 0:
            restarted.append(progress.done)
            if fault == "restart":
                _restart_registry(fed)
            else:
                fed.registry_proxy.drop()

    with (
        fed.requester(via_proxy=True) as company,
        pytest.raises(CredenceError, match="--resume"),
    ):
        screen_file(
            company, pseudonymisation, source, out,
            message_size=_MESSAGE_SIZE, window=_WINDOW, progress=restart_once,
        )  # fmt: skip
    assert restarted, "the registry was never restarted: the run ended first"
    # A new client, as a second `credence screen --resume` would start.
    with fed.requester(via_proxy=True) as company:
        summary = screen_file(
            company, pseudonymisation, source, out,
            message_size=_MESSAGE_SIZE, window=_WINDOW, resume=True,
        )  # fmt: skip
    assert summary.skipped > 0
    assert summary.refused == summary.invalid == 0

    results = [json.loads(line) for line in out.read_text().splitlines()]
    counts = collections.Counter(result["row_key"] for result in results)
    assert set(counts) == set(identifiers), "a row is missing from the output"
    assert max(counts.values()) == 1, f"rows doubled: {[k for k, n in counts.items() if n > 1]}"
    assert {result["identifier"] for result in results} == set(identifiers.values())
    assert {result["status"] for result in results} <= {"clear", "listed"}

    with fed.requester() as company:
        after = _head(fed, _log(company))
    credentials = grpc.ssl_channel_credentials(root_certificates=fed.federation.ca_pem)
    with log_client(fed.federation.public, credentials) as client:
        check_consistency(before, after, client.consistency(before.tree_size, after.tree_size))
    entries = _logged_since(fed, before.tree_size)
    assert len(entries) == after.tree_size - before.tree_size, "the head counts every entry"
    assert [entry.idx for entry in entries] == list(range(before.tree_size, after.tree_size))
    subjects = {fed.federation.subject(value).ref: key for key, value in identifiers.items()}
    logged = collections.Counter(subjects.get(entry.subject_ref) for entry in entries)
    assert None not in logged, "the log holds a lookup nobody asked for"
    assert set(logged) == set(identifiers), "a screened row is missing from the log"
    repeated = [key for key, times in logged.items() if times > 1]
    # Only rows in flight at the restart are looked up again, and only once more.
    assert len(repeated) <= _MESSAGE_SIZE * _WINDOW
    assert max(logged.values()) <= 2
    assert {entry.outcome for entry in entries} == {"dispatched"}
