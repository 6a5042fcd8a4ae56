"""Every server's log: one JSON object per line, and no subject anywhere in it.

A dev federation (a registry and three agency nodes, each its own process,
logging as ``serve`` does by default) gets lookups of organisations, a
person's lookup with consent, the same person refused without one, a
screening, the person reading their lookups and contesting at each agency.
Then every line the servers wrote is read: each parses as JSON with the
fields of :mod:`credence.ops.log_format`, and none holds an identifier, a
subject reference, a grant id, a consent or a query id the story used.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from credence.cli import main
from credence.cli.federation import Federation
from credence.client.results import ScreenRow
from credence.client.subject import SubjectClient
from credence.dev import federation as dev_federation
from credence.errors import CredenceError
from credence.keys import load_signing_key
from credence.ops import tracing
from credence.ops.log_format import configure_logging
from credence.subjects import ref_for
from credence.v1 import agency_pb2

pytestmark = pytest.mark.slow

#: What ``serve`` prints on stdout for whoever started it (the dev federation
#: waits for it); the dev federation's log file holds stdout and stderr both.
READY_LINES = ("listening on port ", "console https://")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """Run the story; return the federation's directory and every secret it used."""
    directory = tmp_path_factory.mktemp("logged")
    document = dev_federation.up(directory, agencies=3, subjects=40, seed=5)
    try:
        secrets = _tell(Federation(directory / dev_federation.FEDERATION_FILE), document)
    finally:
        stubborn = dev_federation.down(directory)
    assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"
    return directory, secrets


def _tell(federation: Federation, document: dict[str, Any]) -> set[str]:
    pseudonymisation = federation.pseudonymisation()
    samples = document["samples"]
    organisations = [
        *samples["listed_organisation"],
        *samples["clear_organisation"],
        *samples["disputed"],
    ]
    person = samples["person_with_consent"][0]
    subject = ref_for(pseudonymisation, person["id"])
    consent = Path(person["consent"]).read_text()
    binding = Path(person["binding"]).read_text()
    secrets = {person["id"], subject.hex(), person["grant_id"], consent, binding}
    with federation.requester("company") as company:
        for identifier in organisations:
            verified = company.verify_organisation(ref_for(pseudonymisation, identifier))
            secrets |= {identifier, verified.verdict.query_id, verified.verdict.verdict_id}
            secrets.add(ref_for(pseudonymisation, identifier).hex())
        credit = company.request_verdict(
            subject, kinds=("blacklist", "credit"), purpose="credit_assessment",
            grant=agency_pb2.Grant(consent_token=consent),
        )  # fmt: skip
        secrets |= {credit.verdict.query_id, credit.verdict.verdict_id}
        with pytest.raises(CredenceError):
            company.request_verdict(
                subject, kinds=("credit",), purpose="credit_assessment",
                grant=agency_pb2.Grant(public_register=agency_pb2.PublicRegisterBasis()),
            )  # fmt: skip
        rows = [
            ScreenRow(f"row-{index}", ref_for(pseudonymisation, identifier))
            for index, identifier in enumerate(organisations)
        ]
        screened = list(company.screen(rows, message_size=len(rows)))
        secrets |= {o.verdict.verdict.query_id for o in screened if o.verdict is not None}
    with SubjectClient(
        federation.registry["public_address"], federation.ca_cert(),
        subject_key=load_signing_key(Path(person["subject_key"])),
        subject_ref_hex=subject.hex(), registry_id=federation.registry["member_id"],
    ) as me:  # fmt: skip
        assert len(me.lookups()) >= 2
        for agency in document["agencies"]:
            try:
                contest_id, _ = me.contest(agency["member_id"], "paid in full")
            except CredenceError:  # an agency holding nothing about the person refuses
                continue
            secrets.add(contest_id)
    return {secret for secret in secrets if secret}


def _server_lines(directory: Path) -> dict[str, list[str]]:
    logs = sorted((directory / "logs").glob("*.log*"))
    assert {path.name for path in logs} >= {"registry.log"}, logs
    return {
        path.name: [line for line in path.read_text().splitlines() if line.strip()] for path in logs
    }


def test_every_server_line_is_one_json_object(story: tuple[Path, set[str]]) -> None:
    directory, _ = story
    by_file = _server_lines(directory)
    assert len(by_file) == 4, by_file.keys()  # the registry and three agencies
    for name, lines in by_file.items():
        logged = [line for line in lines if not line.startswith(READY_LINES)]
        assert logged, f"{name} logged nothing"
        levels = set()
        for line in logged:
            record = json.loads(line)  # fails the test on any line that is not JSON
            assert isinstance(record, dict), line
            assert {"ts", "level", "logger", "msg"} <= record.keys(), line
            assert set(record) <= {"ts", "level", "logger", "msg", "trace_id", "exc"}, line
            assert record["level"] in LEVELS, line
            assert record["ts"].endswith("Z"), line
            assert "trace_id" not in record, "tracing is off by default"
            levels.add(record["level"])
        assert "INFO" in levels, f"{name}: routine events are INFO"


def test_no_server_line_names_a_subject(story: tuple[Path, set[str]]) -> None:
    directory, secrets = story
    # What the story used: identifiers, references, grants, consents, queries, contests.
    assert len(secrets) > 20, secrets
    for name, lines in _server_lines(directory).items():
        for line in lines:
            leaked = [secret for secret in secrets if secret in line]
            assert not leaked, f"{name}: {line}"


def test_serve_takes_the_log_and_trace_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for group in ("registry", "node"):
        with pytest.raises(SystemExit):
            main([group, "serve", "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for flag in (
            "--log-format {json,text}",
            "--log-level",
            "--otlp ENDPOINT",
            "--trace-console",
        ):
            assert flag in text, (group, flag)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level as they were after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.usefixtures("root_logger")
def test_a_line_carries_the_trace_id_when_tracing_is_on() -> None:
    out = io.StringIO()
    configure_logging("json", stream=out)
    tracing.use_provider(TracerProvider())
    try:
        with tracing.span("registry.grant_check"):
            trace_id = tracing.current_trace_id()
            logging.getLogger("central_registry.test").warning("refused a flood from %s", "acme")
        logging.getLogger("central_registry.test").info("outside any span")
    finally:
        tracing.use_provider(None)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert trace_id is not None
    assert len(trace_id) == 32
    assert inside["trace_id"] == trace_id
    assert inside["level"] == "WARNING"
    assert inside["msg"] == "refused a flood from acme"
    assert inside["logger"] == "central_registry.test"
    assert "trace_id" not in outside


@pytest.mark.usefixtures("root_logger")
def test_text_format_is_one_line_and_an_unknown_format_is_refused() -> None:
    out = io.StringIO()
    configure_logging("text", stream=out)
    try:
        raise ValueError("the config says x")
    except ValueError:
        logging.getLogger("agency_node.test").exception("import failed")
    [line] = out.getvalue().splitlines()
    assert " ERROR agency_node.test: import failed (ValueError: the config says x)" in line
    with pytest.raises(ValueError, match="json, text"):
        configure_logging("xml")  # type: ignore[arg-type]
