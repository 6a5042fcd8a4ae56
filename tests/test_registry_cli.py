"""``credence registry ...`` as an operator uses it: exit codes, messages, help.

Exit codes: 0 success, 1 a refusal (one line on stderr saying what to fix),
2 bad usage. Pending enrolments are written with the domain function the
EnrolmentService calls, so no server is needed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from central_registry import config as registry_config
from central_registry import database, membership
from credence.cli import main
from credence.enrolment import enrol_proof
from credence.keys import SigningKey
from credence.pki import generate_tls_key, make_csr
from credence.storage import session_factory
from credence.v1 import common_pb2, manifest_pb2, registry_pb2

LOOPBACK = ["--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["registry", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command that must be refused; return its one-line message."""
    code, _, err = _run(capsys, *argv)
    assert code == 1
    assert err.endswith("\n")
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("credence: ")
    return err


@pytest.fixture
def data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "registry"
    code, out, _ = _run(capsys, "init", "--dir", str(directory), *LOOPBACK)
    assert code == 0
    assert "registry initialised" in out
    return directory


def _add_pending(
    data_dir: Path, member_id: str, role: manifest_pb2.Role.ValueType = manifest_pb2.ROLE_COMPANY
) -> None:
    signing_key = SigningKey.generate()
    csr = make_csr(generate_tls_key(), member_id)
    request = registry_pb2.EnrolRequest(
        member_id=member_id,
        display_name=member_id,
        role=role,
        csr_pem=csr.decode(),
        signing_key=common_pb2.PublicKey(kid=signing_key.kid, ed25519=signing_key.public.raw()),
        signing_key_proof=enrol_proof(signing_key, csr),
    )
    if role == manifest_pb2.ROLE_AGENCY:
        request.endpoint = "127.0.0.1:7801"
        request.record_kinds.append("court_judgment")
    config = registry_config.load_config(data_dir)
    engine = database.create_engine_for(config.effective_database_url)
    try:
        with session_factory(engine).begin() as session:
            membership.enrol(session, request, datetime.now(UTC))
    finally:
        engine.dispose()


def _members(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *extra: str
) -> list[dict[str, object]]:
    code, out, _ = _run(capsys, "members", "list", "--dir", str(data_dir), "--json", *extra)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_init_twice_is_refused_and_keeps_the_keys(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root_key = (data_dir / registry_config.ROOT_KEY_FILE).read_bytes()
    config = (data_dir / registry_config.CONFIG_FILE).read_text()
    err = _refused(capsys, "init", "--dir", str(data_dir), *LOOPBACK)
    assert "already holds a registry; refusing to overwrite it" in err
    assert (data_dir / registry_config.ROOT_KEY_FILE).read_bytes() == root_key
    assert (data_dir / registry_config.CONFIG_FILE).read_text() == config


def test_commands_on_a_directory_without_registry_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "members", "list", "--dir", str(tmp_path))
    assert "run `credence registry init" in err


def test_approve_unknown_member_is_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "members", "approve", "--dir", str(data_dir), "ghost")
    assert "no member 'ghost': check the id with `credence registry members list`" in err


def test_approve_twice_is_refused(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _add_pending(data_dir, "shop-7")
    assert _run(capsys, "members", "approve", "--dir", str(data_dir), "shop-7")[0] == 0
    err = _refused(capsys, "members", "approve", "--dir", str(data_dir), "shop-7")
    assert "member 'shop-7' is active, not pending" in err
    [row] = _members(capsys, data_dir)
    assert row["state"] == "active"


def test_approve_with_unknown_purpose_is_refused_and_stays_pending(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_pending(data_dir, "shop-7")
    argv = ("members", "approve", "--dir", str(data_dir), "shop-7", "--purposes", "gossip")
    assert "gossip" in _refused(capsys, *argv)
    [row] = _members(capsys, data_dir)
    assert row["state"] == "pending"


def test_suspend_and_reinstate_follow_the_states(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_pending(data_dir, "shop-7")
    members = ("members", "suspend", "--dir", str(data_dir), "shop-7")
    err = _refused(capsys, *members)
    assert "member 'shop-7' is pending, not active: approve it first" in err
    reinstate = ("members", "reinstate", "--dir", str(data_dir), "shop-7")
    assert "is pending, not suspended" in _refused(capsys, *reinstate)
    assert _run(capsys, "members", "approve", "--dir", str(data_dir), "shop-7")[0] == 0
    assert "only a member that is suspended can be reinstated" in _refused(capsys, *reinstate)
    code, out, _ = _run(capsys, *members)
    assert (code, out) == (0, "shop-7 is now suspended; published a new manifest\n")
    assert "only a member that is active can be suspended" in _refused(capsys, *members)
    assert _run(capsys, *reinstate)[0] == 0
    assert [row["state"] for row in _members(capsys, data_dir)] == ["active"]


def test_suspend_unknown_member_is_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(capsys, "members", "suspend", "--dir", str(data_dir), "ghost")
    assert "no member 'ghost'" in err


def test_members_list_json_parses(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _members(capsys, data_dir) == []
    _add_pending(data_dir, "court-1", manifest_pb2.ROLE_AGENCY)
    _add_pending(data_dir, "shop-7")
    argv = ("members", "approve", "--dir", str(data_dir), "shop-7", "--identity-verifier")
    assert _run(capsys, *argv)[0] == 0
    rows = _members(capsys, data_dir)
    assert [row["member_id"] for row in rows] == ["court-1", "shop-7"]
    court, shop = rows
    assert court == {
        "member_id": "court-1",
        "role": "agency",
        "state": "pending",
        "endpoint": "127.0.0.1:7801",
        "record_kinds": ["court_judgment"],
        "purposes": [],
        "kinds": [],
        "identity_verifier": False,
    }
    assert shop["state"] == "active"
    assert shop["identity_verifier"] is True
    assert shop["purposes"] == ["counterparty_verification", "credit_assessment"]
    assert [row["member_id"] for row in _members(capsys, data_dir, "--state", "pending")] == [
        "court-1"
    ]


def test_members_list_text(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "members", "list", "--dir", str(data_dir), "--state", "active")
    assert (code, out) == (0, "no members in state active\n")
    _add_pending(data_dir, "shop-7")
    code, out, _ = _run(capsys, "members", "list", "--dir", str(data_dir))
    assert code == 0
    assert out.splitlines()[1].split() == ["shop-7", "company", "pending"]


COMMANDS = [
    ("init",),
    ("serve",),
    ("migrate",),
    ("members", "list"),
    ("members", "approve"),
    ("members", "suspend"),
    ("members", "reinstate"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_of_each_command_has_an_example(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["registry", *command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert f"example:\n  credence registry {' '.join(command)} --dir " in out


@pytest.mark.parametrize("group", [(), ("members",)], ids=["registry", "members"])
def test_help_of_each_group_has_examples(
    group: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["registry", *group, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    # One example per line, as written, not reflowed into a paragraph.
    assert "examples:\n  credence registry init --dir" in out
    assert "\n  credence registry members approve --dir ./registry court-1\n" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["init"],  # no --dir
        ["frobnicate", "--dir", "x"],
        ["members"],
        ["members", "approve", "--dir", "x"],  # no member id
        ["members", "list", "--dir", "x", "--state", "deleted"],
        ["members", "suspend", "--dir", "x", "a", "b"],
        ["serve", "--dir", "x", "--port", "1"],
    ],
    ids=" ".join,
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["registry", *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: credence")
    assert re.search(r"^credence[a-z ]*: error: ", err, re.MULTILINE)
