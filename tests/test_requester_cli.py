"""The requester's commands against a real federation: verify, screen, verdict check, consent.

One federation (registry and three agency nodes, each its own process) is
started for the module with ``credence.dev.federation``; the commands run
in-process through :func:`credence.cli.main`, except the screen that is killed
mid-run, which runs as a process of its own.
"""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli_run import run_cli

from credence.client.requester import MemberCredentials, Requester
from credence.client.screening import (
    COLUMNS,
    INVALID_ROW,
    ScreenProgress,
    done_row_keys,
    screen_file,
)
from credence.dev import federation as dev_federation
from credence.errors import InvalidInput
from credence.keys import KeySet
from credence.subjects import PseudonymisationKey
from credence.v1 import common_pb2

pytestmark = pytest.mark.slow

FederationDoc = dict[str, Any]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FederationDoc]]:
    directory = tmp_path_factory.mktemp("federation")
    document = dev_federation.up(directory, agencies=3, subjects=80, seed=7)
    try:
        yield directory / dev_federation.FEDERATION_FILE, document
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("credence: ")
    return lines[0]


def sample(document: FederationDoc, name: str, index: int = 0) -> Any:
    return document["samples"][name][index]


# --- pure: the results file ---------------------------------------------------------


def test_done_row_keys_drops_a_half_written_last_line(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_text(",".join(COLUMNS) + "\nr1,reg:CN:1,clear,,false,1/1,v1,,\nr2,reg:CN:2,cle")
    assert done_row_keys(out) == {"r1"}
    assert out.read_text().endswith("v1,,\n")


def test_done_row_keys_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    out = tmp_path / "other.csv"
    out.write_text("name,amount\nx,1\n")
    with pytest.raises(InvalidInput, match="does not start with the results header"):
        done_row_keys(out)
    jsonl = tmp_path / "other.jsonl"
    jsonl.write_text('{"name": "x"}\n')
    with pytest.raises(InvalidInput, match="line 1 is not a screening result"):
        done_row_keys(jsonl)


# --- verify --------------------------------------------------------------------------


def test_verify_listed_and_clear_organisations_as_json(
    federation: tuple[Path, FederationDoc], capsys: pytest.CaptureFixture[str]
) -> None:
    path, document = federation
    code, out, _ = run_cli(
        capsys, "verify", sample(document, "listed_organisation"), "--federation", path, "--json"
    )
    assert code == 0
    listed = json.loads(out)
    assert listed["status"] == "listed"
    assert listed["categories"] == ["dishonest_debtor"]
    assert listed["requester"] == "demo-company"
    assert listed["key_ids"]
    code, out, _ = run_cli(
        capsys, "verify", sample(document, "clear_organisation"), "--federation", path, "--json"
    )
    assert code == 0
    clear = json.loads(out)
    assert clear["status"] == "clear"
    assert clear["categories"] == []
    assert clear["coverage"] == {
        "asked": 2,
        "answered": 2,
        "answered_by": clear["coverage"]["answered_by"],
        "missing": [],
    }
    assert len(set(clear["coverage"]["answered_by"])) == 2
    # The identifier asked about, as given and as looked up.
    assert clear["subject"] == {
        "identifier": sample(document, "clear_organisation"),
        "normalised": sample(document, "clear_organisation"),
        "type": "organisation",
    }


def test_verify_prints_the_verdict_and_the_key(
    federation: tuple[Path, FederationDoc], capsys: pytest.CaptureFixture[str]
) -> None:
    path, document = federation
    code, out, _ = run_cli(capsys, "verify", sample(document, "disputed"), "--federation", path)
    assert code == 0
    assert f"subject   {sample(document, 'disputed')} (organisation)" in out
    assert "coverage  2 of 2 agencies answered" in out
    assert "status    listed" in out
    assert "[disputed by the subject]" in out
    assert "expires   " in out
    assert "signature verified against the registry key " in out


def test_verify_person_with_the_sample_consent(
    federation: tuple[Path, FederationDoc], capsys: pytest.CaptureFixture[str]
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 0)
    code, out, _ = run_cli(
        capsys, "verify", "--person", person["id"], "--grant", person["consent"],
        "--purpose", "credit_assessment", "--kinds", "blacklist,credit",
        "--federation", path, "--json",
    )  # fmt: skip
    assert code == 0
    verdict = json.loads(out)
    assert 350 <= verdict["score"] <= 950
    assert verdict["band"]
    assert verdict["grant_id"] == person["grant_id"]


def test_verify_person_without_consent_is_refused_in_one_line(
    federation: tuple[Path, FederationDoc], capsys: pytest.CaptureFixture[str]
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 0)
    code, out, err = run_cli(capsys, "verify", "--person", person["id"], "--federation", path)
    assert code == 1
    assert out == ""
    assert "pass --grant FILE" in one_line_error(err)


def test_verify_person_with_a_grant_for_another_purpose_is_refused(
    federation: tuple[Path, FederationDoc], capsys: pytest.CaptureFixture[str]
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 0)
    code, _, err = run_cli(
        capsys, "verify", "--person", person["id"], "--grant", person["consent"],
        "--purpose", "tenancy_screening", "--federation", path,
    )  # fmt: skip
    assert code == 1
    one_line_error(err)


def test_saved_verdict_checks_yes_and_tampered_no(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    saved = tmp_path / "verdict.json"
    org = sample(document, "listed_organisation", 1)
    code, _, _ = run_cli(capsys, "verify", org, "--federation", path, "--out", saved)
    assert code == 0
    code, out, _ = run_cli(capsys, "verdict", "check", saved, "--federation", path)
    assert code == 0
    assert out.startswith("yes: verdict ")
    assert "issued to demo-company" in out
    code, out, _ = run_cli(capsys, "verdict", "check", saved, "--federation", path, "--json")
    assert code == 0
    assert json.loads(out)["valid"] is True

    # Another member holding the file: not issued to them.
    code, out, _ = run_cli(
        capsys, "verdict", "check", saved, "--federation", path, "--as", "authority"
    )
    assert code == 1
    assert out.startswith("no: verdict was issued to 'demo-company', not 'demo-authority'")

    # One flipped character of the signed payload.
    document_json = json.loads(saved.read_text())
    payload = document_json["envelope"]["payload"]
    flipped = "A" if payload[10] != "A" else "B"
    document_json["envelope"]["payload"] = payload[:10] + flipped + payload[11:]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document_json))
    code, out, _ = run_cli(capsys, "verdict", "check", tampered, "--federation", path, "--json")
    assert code == 1
    result = json.loads(out)
    assert result["valid"] is False
    assert result["error"] in {"BadSignature", "InvalidInput"}

    # The JWS of another verdict next to this envelope.
    other = tmp_path / "other.json"
    clear = sample(document, "clear_organisation", 1)
    assert run_cli(capsys, "verify", clear, "--federation", path, "--out", other)[0] == 0
    document_json = json.loads(saved.read_text())
    document_json["jws"] = json.loads(other.read_text())["jws"]
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(document_json))
    code, out, _ = run_cli(capsys, "verdict", "check", mixed, "--federation", path)
    assert code == 1
    assert out.startswith("no: verdict file's JWS and envelope disagree on ")


# --- screen ---------------------------------------------------------------------------


def test_screen_reports_bad_rows_with_reasons_and_keeps_going(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 0)["id"]
    source = tmp_path / "in.csv"
    source.write_text(
        "identifier,row_key\n"
        f"{sample(document, 'listed_organisation')},a\n"
        "reg:XX,b\n"
        ",c\n"
        f"{sample(document, 'clear_organisation')},d\n"
        f"{sample(document, 'clear_organisation')},d\n"
        f"{person},e\n"
        "110105:123,f\n"
        f"{sample(document, 'clear_organisation', 2)},\n"
    )
    out = tmp_path / "results.jsonl"
    code, stdout, err = run_cli(capsys, "screen", source, "--out", out, "--federation", path)
    assert code == 0, err
    assert "8 rows written" in stdout
    rows = {row["row_key"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["9", "a", "b", "c", "d", "e", "f"], "row 9 keyed by its line"
    assert rows["a"]["status"] == "listed"
    assert rows["a"]["categories"] == ["dishonest_debtor"]
    assert rows["d"]["status"] == "clear"
    assert rows["9"]["status"] == "clear"
    assert rows["b"]["refusal_code"] == INVALID_ROW
    assert "ISO 3166" in rows["b"]["refusal_reason"]
    assert rows["c"]["refusal_reason"] == "identifier is empty"
    assert "not a known scheme" in rows["f"]["refusal_reason"]
    assert "123" not in rows["f"]["refusal_reason"]
    # The person is refused by the registry, per row: no consent in a screen.
    assert rows["e"]["status"] == "refused"
    assert rows["e"]["refusal_code"] == "PERMISSION_DENIED"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    repeated = [line for line in lines if line["row_key"] == "d" and line["status"] == "invalid"]
    assert len(repeated) == 1
    assert "repeats an earlier row" in repeated[0]["refusal_reason"]


def test_screen_refuses_to_overwrite_without_resume(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, _ = federation
    source = tmp_path / "in.csv"
    source.write_text("identifier\nreg:CN:ORG000000\n")
    out = tmp_path / "results.csv"
    out.write_text("something\n")
    code, _, err = run_cli(capsys, "screen", source, "--out", out, "--federation", path)
    assert code == 1
    assert "pass --resume" in one_line_error(err)
    source.write_text("name\nx\n")
    out.unlink()
    code, _, err = run_cli(capsys, "screen", source, "--out", out, "--federation", path)
    assert code == 1
    assert "no 'identifier' column" in one_line_error(err)


def _dispatched(document: FederationDoc, requester: str, purpose: int) -> int:
    database = Path(document["registry"]["data_dir"]) / "registry.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM log_entries "
            "WHERE requester = ? AND purpose = ? AND outcome = 'dispatched'",
            (requester, purpose),
        ).fetchone()
    connection.close()
    return int(count)


def test_screen_killed_mid_run_resumes_without_looking_anyone_up_twice(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    requester = document["identity_verifier"]["member_id"]
    purpose = common_pb2.PURPOSE_COUNTERPARTY_VERIFICATION
    before = _dispatched(document, requester, purpose)
    source = tmp_path / "many.csv"
    rows = [f"k{index},reg:CN:ORG{index:06d}" for index in range(5000)]
    bad = {17, 2500, 4999}
    for index in bad:
        rows[index] = f"k{index},reg:CN:"
    source.write_text("row_key,identifier\n" + "\n".join(rows) + "\n")
    out = tmp_path / "results.csv"
    command = [
        sys.executable, "-m", "credence.cli", "screen", str(source), "--out", str(out),
        "--as", "identity_verifier", "--message-size", "25", "--federation", str(path),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() or out.read_text().count("\n") < 3:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no results within 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    first = done_row_keys(out)
    assert 0 < len(first) < 5000, "the first run was stopped before the end"
    assert stdout.startswith(f"{len(first)} rows written")

    code, stdout, err = run_cli(
        capsys, "screen", source, "--out", out, "--as", "identity_verifier",
        "--message-size", "25", "--resume", "--federation", path,
    )  # fmt: skip
    assert code == 0, err
    assert f"{5000 - len(first)} rows written" in stdout
    assert f"{len(first)} already there" in stdout
    with out.open(newline="") as handle:
        results = list(csv.DictReader(handle))
    keys = [row["row_key"] for row in results]
    assert len(keys) == len(set(keys)) == 5000
    assert {row["row_key"] for row in results if row["refusal_code"] == INVALID_ROW} == {
        f"k{index}" for index in bad
    }
    assert _dispatched(document, requester, purpose) - before == 5000 - len(bad)


def test_screen_file_library_stops_reports_progress_and_resumes(
    federation: tuple[Path, FederationDoc], tmp_path: Path
) -> None:
    _, document = federation
    files = document["authority"]
    credentials = MemberCredentials.from_files(
        files["member_id"],
        key=Path(files["key"]),
        cert=Path(files["cert"]),
        ca=Path(document["registry"]["ca_cert"]),
    )
    root_keys = KeySet.from_jwks(json.loads(Path(document["registry"]["root_keys"]).read_text()))
    pseudonymisation = PseudonymisationKey.from_bytes(
        Path(document["pseudonymisation_key"]).read_bytes()
    )
    source = tmp_path / "in.csv"
    source.write_text("identifier\n" + "".join(f"reg:CN:ORG{index:06d}\n" for index in range(2000)))
    out = tmp_path / "out.csv"
    stop = threading.Event()
    seen: list[ScreenProgress] = []

    def progress(update: ScreenProgress) -> None:
        seen.append(update)
        stop.set()

    with Requester(document["registry"]["address"], credentials, root_keys=root_keys) as requester:
        first = screen_file(
            requester, pseudonymisation, source, out,
            message_size=20, window=2, stop=stop, progress=progress,
        )  # fmt: skip
        assert first.interrupted
        assert 0 < first.written < 2000
        assert seen[-1].done == first.written
        assert seen[-1].total == 2000
        assert all(update.done <= update.total for update in seen)
        with pytest.raises(InvalidInput, match="pass --resume"):
            screen_file(requester, pseudonymisation, source, out)
        second = screen_file(requester, pseudonymisation, source, out, resume=True)
    assert not second.interrupted
    assert second.skipped == first.written
    assert second.written == 2000 - first.written
    keys = [line.split(",", 1)[0] for line in out.read_text().splitlines()[1:]]
    assert sorted(keys, key=int) == [str(line) for line in range(2, 2002)], "keyed by line"


# --- consent ---------------------------------------------------------------------------


def test_consent_request_then_issue_then_verify_the_person(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 2)
    request = tmp_path / "request.jwt"
    code, out, err = run_cli(
        capsys, "consent", "request", "--person", person["id"], "--requester", "demo-company",
        "--purpose", "credit_assessment", "--kinds", "blacklist,credit", "--days", "7",
        "--uses", "1", "--key", person["subject_key"], "--binding", person["binding"],
        "--out", request, "--federation", path,
    )  # fmt: skip
    assert code == 0, err
    assert "written to" in out
    consent = tmp_path / "consent.jwt"
    code, out, err = run_cli(
        capsys, "consent", "issue", request, "--binding", person["binding"],
        "--out", consent, "--federation", path,
    )  # fmt: skip
    assert code == 0, err
    grant_id = out.split("grant ")[1].split(",")[0]
    code, out, err = run_cli(
        capsys, "verify", "--person", person["id"], "--grant", consent,
        "--federation", path, "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["grant_id"] == grant_id
    # One use only: the second lookup is refused.
    code, _, err = run_cli(
        capsys, "verify", "--person", person["id"], "--grant", consent, "--federation", path
    )
    assert code == 1
    one_line_error(err)


def test_consent_request_for_another_person_than_the_binding_is_refused(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    person = sample(document, "person_with_consent", 2)
    other = sample(document, "person_with_consent", 1)
    code, _, err = run_cli(
        capsys, "consent", "request", "--person", other["id"], "--requester", "demo-company",
        "--purpose", "credit_assessment", "--kinds", "credit", "--days", "7", "--uses", "1",
        "--key", person["subject_key"], "--binding", person["binding"],
        "--out", tmp_path / "r.jwt", "--federation", path,
    )  # fmt: skip
    assert code == 1
    assert "binds another subject" in one_line_error(err)
    assert not (tmp_path / "r.jwt").exists()


# --- usage errors ----------------------------------------------------------------------


def test_missing_federation_file_is_one_line_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.json"
    code, _, err = run_cli(capsys, "verify", "reg:CN:ORG000001", "--federation", missing)
    assert code == 1
    assert "not found: start a federation" in one_line_error(err)
    code, _, err = run_cli(capsys, "verdict", "check", tmp_path / "v.json", "--federation", missing)
    assert code == 1
    one_line_error(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "reg:XX"], "ISO 3166"),
        (["verify", "cn-uscc:123"], "cn-uscc"),
        (["verify", "reg:CN:ORG000001", "--purpose", "curiosity"], "invalid choice: 'curiosity'"),
        (["verify", "reg:CN:ORG000001", "--kinds", "gossip"], "name verdict kinds"),
        (["verify"], "name one subject"),
        (["verify", "reg:CN:1", "--person", "nin:P0000000"], "name one subject"),
        (["verify", "--person", "reg:CN:ORG000001"], "--person takes a person"),
        (["screen", "in.csv"], "--out"),
        (["screen", "in.csv", "--out", "o.csv", "--message-size", "0"], "at least 1"),
        (["verdict"], "COMMAND"),
        (["consent", "request", "--requester", "x"], "required"),
    ],
)
def test_bad_usage_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, *args, "--federation", tmp_path / "absent.json")
    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    "command",
    [["verify"], ["screen"], ["verdict", "check"], ["consent", "request"], ["consent", "issue"]],
)
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code, out, _ = run_cli(capsys, *command, "--help")
    assert code == 0
    assert "example" in out
    assert "credence " in out.split("example", 1)[1]
