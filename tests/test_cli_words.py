"""The command line's words against a real federation: ``me``, contest, revoke, errors.

One federation (registry and three agency nodes, each its own process) is
started for the module with ``credence.dev.federation``; the commands run
in-process through :func:`credence.cli.main`, finding the federation through
``$CREDENCE_FEDERATION`` as a user's shell would.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli_run import run_cli

from credence.cli import progress
from credence.dev import federation as dev_federation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("federation")
    document = dev_federation.up(directory, agencies=3, subjects=80, seed=7)
    document["path"] = str(directory / dev_federation.FEDERATION_FILE)
    try:
        yield document
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


@pytest.fixture
def cli(
    federation: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """``cli(*args)``: run ``credence ARGS`` with ``$CREDENCE_FEDERATION`` set; (code, out, err)."""
    monkeypatch.setenv("CREDENCE_FEDERATION", federation["path"])

    def run(*args: str | Path) -> tuple[int, str, str]:
        return run_cli(capsys, *args)

    return run


def person(federation: dict[str, Any], index: int) -> dict[str, str]:
    sample: dict[str, str] = federation["samples"]["person_with_consent"][index]
    return sample


def me(sample: dict[str, str]) -> list[str]:
    return ["--key", sample["subject_key"], "--binding", sample["binding"]]


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("credence: ")
    return lines[0]


def test_me_lookups_and_grants_fit_80_columns_in_words(
    federation: dict[str, Any], cli: Any
) -> None:
    sample = person(federation, 0)
    code, _, err = cli("verify", "--person", sample["id"], "--grant", sample["consent"])
    assert code == 0, err
    for what in ("lookups", "grants"):
        code, out, err = cli("me", what, *me(sample))
        assert code == 0, err
        assert out.strip()
        assert max(len(line) for line in out.splitlines()) <= 80, out
        assert "credit assessment: blacklist and credit" in out
        for machine in ("PURPOSE_", "VERDICT_KIND_", "['", "']"):
            assert machine not in out, out
    code, out, _ = cli("me", "lookups", *me(sample))
    assert "demo-company" in out
    assert f"basis: consent {sample['grant_id']}" in out
    # --json keeps the machine form, one object a line.
    code, out, _ = cli("me", "grants", *me(sample), "--json")
    [grant] = [json.loads(line) for line in out.splitlines()]
    assert grant["purpose"] == "PURPOSE_CREDIT_ASSESSMENT"
    assert grant["kinds"] == ["VERDICT_KIND_BLACKLIST", "VERDICT_KIND_CREDIT"]
    assert grant["grant_id"] == sample["grant_id"]


def test_revoking_twice_says_it_was_already_revoked(federation: dict[str, Any], cli: Any) -> None:
    sample = person(federation, 1)
    code, out, err = cli("me", "revoke", *me(sample), sample["grant_id"])
    assert code == 0, err
    assert out.startswith(f"grant {sample['grant_id']} revoked at ")
    first = out.split(" revoked at ")[1].strip()
    code, out, err = cli("me", "revoke", *me(sample), sample["grant_id"])
    assert code == 0, err
    assert out.strip() == (
        f"grant {sample['grant_id']} was already revoked at {first}; nothing changed"
    )
    # And the grant is refused from then on.
    code, _, err = cli("verify", "--person", sample["id"], "--grant", sample["consent"])
    assert code == 1
    assert "revoked" in one_line_error(err)


def test_contest_where_no_record_is_held_says_so(federation: dict[str, Any], cli: Any) -> None:
    sample = person(federation, 2)
    outcomes = {}
    for agency in federation["agencies"]:
        code, out, err = cli(
            "me", "contest", *me(sample), "--agency", agency["member_id"], "--statement", "paid"
        )
        outcomes[agency["member_id"]] = (code, out, err)
    refused = {name: err for name, (code, _, err) in outcomes.items() if code == 1}
    filed = {name: out for name, (code, out, _) in outcomes.items() if code == 0}
    assert refused, outcomes  # at least one agency holds nothing about this person
    assert filed, outcomes  # and at least one holds something
    for name, err in refused.items():
        assert one_line_error(err) == (
            f"credence: {name} holds no record of this subject: there is nothing to contest "
            "there, and no contest was filed"
        )
    for name, out in filed.items():
        assert f"filed with {name}: " in out
    # Only the filed contests are kept: nothing open at an agency holding nothing.
    code, out, _ = cli("me", "contests", *me(sample), "--json")
    kept = {json.loads(line)["agency"] for line in out.splitlines()}
    assert kept == set(filed)


def test_a_flipped_bit_in_a_jws_header_reads_as_damage(
    federation: dict[str, Any], cli: Any, tmp_path: Path
) -> None:
    sample = person(federation, 0)
    header, rest = Path(sample["consent"]).read_text().strip().split(".", 1)
    decoded = bytearray(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    at = decoded.index(b'"alg"') + 3  # the "g" of "alg"
    decoded[at] ^= 0x01  # "alg" -> "alf"
    flipped = base64.urlsafe_b64encode(bytes(decoded)).rstrip(b"=").decode()
    damaged = tmp_path / "consent.jwt"
    damaged.write_text(f"{flipped}.{rest}")
    code, _, err = cli("verify", "--person", sample["id"], "--grant", damaged)
    assert code == 1
    line = one_line_error(err)
    assert "header does not decode to a JOSE header" in line
    assert "alg None" not in line


def test_an_unassigned_country_code_is_refused(cli: Any) -> None:
    code, _, err = cli("verify", "reg:XX:123")
    assert code == 2
    assert "ISO 3166 alpha-2" in err
    assert "'XX'" in err


def test_audit_log_finds_the_federation_in_the_environment(cli: Any, tmp_path: Path) -> None:
    head = tmp_path / "head.bin"
    code, out, err = cli("audit", "log", "--since-head", head)
    assert code == 0, err
    assert head.is_file()
    code, out, err = cli("audit", "log", "--since-head", head)
    assert code == 0, (out, err)


def test_long_commands_report_progress_off_a_terminal(
    federation: dict[str, Any], cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line every "few seconds" is every call here, so a short run shows several.
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    source = tmp_path / "in.csv"
    source.write_text("identifier\n" + "".join(f"reg:CN:ORG{index:06d}\n" for index in range(3000)))
    code, _, err = cli("screen", source, "--out", tmp_path / "out.csv", "--message-size", "100")
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) >= 2, err
    assert all(re.match(r"screen: [\d,]+/3,000 rows \(\d+%\)", line) for line in lines), err
    assert lines[-1].startswith("screen: 3,000/3,000 rows (100%)")
    assert "\r" not in err
    agency = Path(federation["agencies"][0]["data_dir"])
    code, out, err = cli("node", "import", "--dir", agency, agency / "records.csv")
    assert code == 0, err
    assert err.splitlines()[-1].startswith("import: ")
    assert " bytes read (100%)" in err.splitlines()[-1]
    assert "unchanged" in out
