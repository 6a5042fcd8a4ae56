"""Every ``credence`` command with its federation down: one line, never a traceback.

A real federation is started with ``credence dev up`` and stopped with
``credence dev down``; then every command of the argparse tree runs against
what is left (its files, its databases, its closed ports). A command that
needs the registry or a node fails with exit 1 and one line on stderr; one
that works on local files still works; bad usage exits 2. A command added to
the tree without an entry here fails :func:`test_every_command_is_covered`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli_tree import all_commands

from credence.cli import main
from credence.dev import federation as dev_federation
from credence.grants import tokens
from credence.keys import SigningKey, load_signing_key, save_signing_key
from credence.subjects import PseudonymisationKey, ref_for

pytestmark = pytest.mark.slow

#: Commands that serve until stopped or start a federation: not one-shot.
LONG_RUNNING = {"node serve", "registry serve", "dev up", "me portal"}
#: Checks that report on stdout: what the report says.
REPORTS = {
    "node audit": "cannot reach the registry",  # the registry's log is down
    "verdict check": "verdict file type is None",  # offline: the file is no verdict
    "verdict explain": "verdict file type is None",  # offline: the verdict file is no verdict
}
#: Commands that work on local files alone: they still succeed (exit 0).
LOCAL = {
    "node disputes list", "node migrate", "node purge", "node reviews",
    "registry migrate", "registry members list", "registry admin-token", "consent request",
    "registry reviews list", "dev status", "dev down",
}  # fmt: skip
#: Refused on local grounds before any network (exit 1 all the same).
LOCAL_REFUSAL = {
    "node init", "node install", "node import", "node disputes resolve", "registry init",
    "registry members approve", "registry members suspend", "registry members reinstate",
    "node open-answer", "registry reviews decide",
}  # fmt: skip


COMMANDS = all_commands()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("stopped")
    document = dev_federation.up(directory, agencies=1, subjects=20, seed=3)
    stubborn = dev_federation.down(directory)
    assert stubborn == []
    files = directory / "cli-inputs"
    files.mkdir()
    # A subject's key and binding, as an identity verifier issues them offline.
    pseudonymisation = PseudonymisationKey.from_bytes(
        Path(document["pseudonymisation_key"]).read_bytes()
    )
    subject_key = SigningKey.generate()
    save_signing_key(files / "me.key", subject_key)
    idp = document["identity_verifier"]
    binding = tokens.issue_binding(
        subject_ref_hex=ref_for(pseudonymisation, "cn-rid:11010519491231002X").hex(),
        subject_key=subject_key.public,
        member_id=idp["member_id"],
        member_key=load_signing_key(Path(idp["signing_key"])),
        now=datetime.now(UTC),
        validity=timedelta(days=30),
    )
    (files / "me.binding.jwt").write_text(binding)
    (files / "in.csv").write_text("identifier\nreg:CN:ORG000001\n")
    (files / "records.csv").write_text("")
    (files / "verdict.json").write_text("{}")
    (files / "request.jwt").write_text("x.y.z")
    return {"dir": directory, "doc": document, "files": files}


def arguments(name: str, context: dict[str, Any], tmp_path: Path) -> list[str]:
    """Plausible arguments for ``name``, taken from the stopped federation."""
    directory: Path = context["dir"]
    files: Path = context["files"]
    document = context["doc"]
    agency = document["agencies"][0]["data_dir"]
    registry = document["registry"]
    me = ["--key", str(files / "me.key"), "--binding", str(files / "me.binding.jwt")]
    table: dict[str, list[str]] = {
        "node init": ["--dir", agency, "--member-id", "court"],
        "node install": [
            "--dir", agency, "--cert", str(tmp_path / "none.crt"), "--ca", registry["ca_cert"],
            "--manifest", str(tmp_path / "none.manifest"), "--root-keys", registry["root_keys"],
            "--pseudonymisation-key", document["pseudonymisation_key"],
        ],
        "node enrol": [
            "--dir", agency, "--registry", registry["address"],
            "--public", registry["public_address"], "--ca", registry["ca_cert"],
            "--root-keys", registry["root_keys"],
        ],
        "node disputes list": ["--dir", agency],
        "node disputes resolve": ["--dir", agency, "no-such-contest", "--outcome", "upheld"],
        "node import": ["--dir", agency, str(files / "records.csv")],
        "node migrate": ["--dir", agency],
        "node purge": ["--dir", agency],
        "node audit": ["--dir", agency],
        "node open-answer": ["--dir", agency, "no-such-query"],
        "node reviews": ["--dir", agency],
        "registry reviews list": ["--dir", registry["data_dir"]],
        "registry reviews decide": [
            "--dir", registry["data_dir"], "no-such-review", "--outcome", "upheld",
            "--statement", "the verdict stands",
        ],
        "registry init": ["--dir", registry["data_dir"]],
        "registry migrate": ["--dir", registry["data_dir"]],
        "registry members list": ["--dir", registry["data_dir"]],
        "registry admin-token": [
            "--dir", registry["data_dir"], "--name", "alice", "--out", str(tmp_path / "a.token"),
        ],
        "registry members approve": ["--dir", registry["data_dir"], "no-such-member"],
        "registry members suspend": ["--dir", registry["data_dir"], "no-such-member"],
        "registry members reinstate": ["--dir", registry["data_dir"], "no-such-member"],
        "audit log": ["--since-head", str(tmp_path / "head.bin")],
        "me lookups": me,
        "me grants": me,
        "me revoke": [*me, "no-such-grant"],
        "me contest": [*me, "--agency", "court", "--statement", "paid in full"],
        "me contests": me,
        "me records": me,
        "me explanations": me,
        "me review": [*me, "no-such-verdict", "--statement", "please look again"],
        "me reviews": me,
        "verify": ["reg:CN:ORG000001"],
        "screen": [str(files / "in.csv"), "--out", str(tmp_path / "out.csv")],
        "verdict check": [str(files / "verdict.json")],
        "verdict explain": [str(files / "verdict.json"), str(files / "verdict.json")],
        "consent request": [
            "--requester", "demo-company", "--purpose", "credit_assessment",
            "--kinds", "blacklist", "--days", "7", "--uses", "1",
            *me, "--out", str(tmp_path / "request.jwt"),
        ],
        "consent issue": [
            str(files / "request.jwt"), "--binding", str(files / "me.binding.jwt"),
            "--out", str(tmp_path / "consent.jwt"),
        ],
        "dev status": ["--dir", str(directory)],
        "dev down": ["--dir", str(directory)],
    }  # fmt: skip
    return [*name.split(), *table[name]]


def test_every_command_is_covered(stopped: dict[str, Any], tmp_path: Path) -> None:
    for name in COMMANDS:
        if name not in LONG_RUNNING:
            assert arguments(name, stopped, tmp_path), name


@pytest.mark.parametrize("name", [name for name in COMMANDS if name not in LONG_RUNNING])
def test_command_with_the_federation_down(
    name: str,
    stopped: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Found the way every command finds it: the environment, not --federation.
    monkeypatch.setenv("CREDENCE_FEDERATION", str(stopped["dir"]))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    try:
        code = main(arguments(name, stopped, tmp_path))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "_InactiveRpcError" not in out + err
    if name in LOCAL:
        assert code == 0, err
        return
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    if name in REPORTS:
        # A check whose answer is a report on stdout, with exit code 1.
        assert REPORTS[name] in out
        return
    assert len(lines) == 1, (out, err)
    assert lines[0].startswith("credence: ")
    if name not in LOCAL_REFUSAL:
        assert any(word in lines[0] for word in ("connect", "reach", "not found", "refused"))
