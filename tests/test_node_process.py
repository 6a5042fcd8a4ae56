"""The node end to end as an operator runs it: the CLI, its own process, SIGTERM.

init -> install -> import -> serve in a separate process -> a signed query
over mutual TLS -> graceful shutdown. Also the all-or-nothing import from the
command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from support.blind import unmask
from test_node_service import LISTED_ORG, RECORDS_CSV

from credence import payloads
from credence.blind.masks import load_agreement_key
from credence.dev.offline_federation import Federation, Member
from credence.envelope import Envelope, verify_message
from credence.keys import KeySet, load_signing_key
from credence.pki import issue_member_certificate
from credence.rpc.tls import channel_credentials
from credence.v1 import agency_pb2, agency_pb2_grpc

COURT = "court-1"


def credence(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "credence.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Federation, Path]:
    federation = Federation.create()
    federation.enrol("acme")
    data_dir = tmp_path / COURT
    result = credence(
        "node", "init", "--dir", data_dir, "--member-id", COURT,
        "--kinds", "court_judgment", "--listen", "127.0.0.1:0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "signing key id" in result.stdout
    # The registry approves: certificate from the node's CSR, its key in the manifest.
    now = datetime.now(UTC)
    cert = issue_member_certificate(
        federation.ca, (data_dir / "tls.csr").read_bytes(), COURT, now, hosts=("127.0.0.1",)
    )
    federation.members[COURT] = Member(
        COURT,
        load_signing_key(data_dir / "signing.key"),
        (data_dir / "tls.key").read_bytes(),
        cert,
        # node init made the key agreement key beside the others, readable by its owner only.
        load_agreement_key(data_dir / "agreement.key"),
    )
    assert (data_dir / "agreement.key").stat().st_mode & 0o777 == 0o600
    federation.agencies[COURT] = ("court_judgment",)
    files = tmp_path / "enrolment"
    files.mkdir()
    (files / "node.crt").write_bytes(cert)
    (files / "ca.crt").write_bytes(federation.ca.certificate_pem)
    (files / "manifest.bin").write_bytes(federation.manifest_envelope(now=now).to_bytes())
    (files / "root.jwks.json").write_text(
        json.dumps(KeySet([federation.root_key.public]).to_jwks())
    )
    (files / "pseudo.key").write_bytes(federation.pseudonymisation_key.secret)
    result = credence(
        "node", "install", "--dir", data_dir, "--cert", files / "node.crt",
        "--ca", files / "ca.crt", "--manifest", files / "manifest.bin",
        "--root-keys", files / "root.jwks.json", "--pseudonymisation-key", files / "pseudo.key",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (tmp_path / "records.csv").write_text(RECORDS_CSV)
    result = credence("node", "import", "--dir", data_dir, tmp_path / "records.csv")
    assert result.returncode == 0, result.stderr
    assert "imported 4 rows: 4 new" in result.stdout
    return federation, data_dir


@pytest.fixture
def serving(
    installed: tuple[Federation, Path],
) -> Iterator[tuple[Federation, int, subprocess.Popen[str]]]:
    federation, data_dir = installed
    process = subprocess.Popen(
        [sys.executable, "-m", "credence.cli", "node", "serve", "--dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on port"), (
            line,
            process.stderr and process.stderr.read(),
        )
        yield federation, int(line.split()[-1]), process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps the process and closes its pipes


def test_node_in_its_own_process_answers_and_stops_gracefully(
    serving: tuple[Federation, int, subprocess.Popen[str]],
) -> None:
    federation, port, process = serving
    registry = federation.members["registry"]
    credentials = channel_credentials(
        registry.tls_key_pem, registry.cert_pem, federation.ca.certificate_pem
    )
    query = federation.query(federation.subject(LISTED_ORG), now=datetime.now(UTC))
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        stub = agency_pb2_grpc.AgencyNodeServiceStub(channel)
        response = stub.AnswerQuery(
            agency_pb2.AnswerQueryRequest(query=query.to_proto()), timeout=10
        )
    answer = verify_message(
        Envelope.from_proto(response.answer),
        payloads.ANSWER,
        KeySet([federation.members[COURT].signing_key.public]),
        agency_pb2.Answer,
    )
    assert unmask(answer, federation, agency=COURT, label=answer.query_id).listed
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=10)
        pytest.fail(f"node did not stop within 30 s of SIGTERM; its stderr:\n{stderr}")
    assert code == 0


def test_import_with_one_bad_row_changes_nothing(
    installed: tuple[Federation, Path], tmp_path: Path
) -> None:
    _, data_dir = installed
    before = hashlib.sha256((data_dir / "node.db").read_bytes()).digest()
    bad = RECORDS_CSV.replace(
        "court_judgment,judgment_debt,300.00", "court_judgment,judgment_debt,abc"
    )
    bad += (
        "j-9,reg:CN:NEW00001,court_judgment,dishonest_debtor,1.00,CNY,active,2026-01-01,,false,\n"
    )
    (tmp_path / "bad.csv").write_text(bad)
    result = credence("node", "import", "--dir", data_dir, tmp_path / "bad.csv")
    assert result.returncode == 1
    assert "row 5" in result.stderr
    assert hashlib.sha256((data_dir / "node.db").read_bytes()).digest() == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("node", "serve", "--dir", "/nonexistent/credence"), 1, "run `credence node init"),
        (("node", "init", "--dir", "/tmp/x", "--member-id", "Bad_Id"), 1, "member id"),
        (("node", "bogus"), 2, "invalid choice"),
    ],
)
def test_cli_errors(args: tuple[str, ...], code: int, message: str) -> None:
    result = credence(*args)
    assert result.returncode == code
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


def test_help_has_examples() -> None:
    result = credence("node", "import", "--help")
    assert result.returncode == 0
    assert "example:" in result.stdout
