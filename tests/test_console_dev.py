"""`credence dev up` says where the operator's console is, and its admin token logs in there."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path

import httpx
import pytest
from support.registry import run

from credence.cli import main

pytestmark = pytest.mark.slow


def test_dev_up_prints_the_console_and_its_token_logs_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "fed"
    try:
        run("dev", "up", "--dir", directory, "--agencies", "1", "--subjects", "16")
        out = capsys.readouterr().out
        printed = r"console   (https://127\.0\.0\.1:\d+/) \(log in with the token in (.+)\)"
        found = re.search(printed, out)
        assert found, out
        url, token_file = found[1], Path(found[2])
        registry = json.loads((directory / "federation.json").read_text())["registry"]
        assert (registry["console_url"], registry["admin_token"]) == (url, str(token_file))
        assert token_file.stat().st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cadata=Path(registry["ca_cert"]).read_text())
        with httpx.Client(base_url=url, verify=context, timeout=30) as client:
            login = client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
            assert csrf
            done = client.post("/login", data={"csrf": csrf[1], "token": token_file.read_text()})
            assert done.headers["location"] == "/members"
            members = client.get("/members").text
            assert 'id="member-demo-company"' in members
            agency = json.loads((directory / "federation.json").read_text())["agencies"][0]
            assert f'id="agency-{agency["member_id"]}"' in client.get("/agencies").text
    finally:
        main(["dev", "down", "--dir", str(directory)])  # whatever up left running
