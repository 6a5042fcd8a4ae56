"""Receipts for subjects through the command line, against a real federation.

``credence dev up`` starts a registry and three agency nodes, each its own process
(the nodes are the log's witnesses, their audits reading tiles); the commands run
in-process through :func:`credence.cli.main` with ``$CREDENCE_FEDERATION`` set.
A subject saves a receipt per lookup (``me lookups --proofs``) and checks one
beside the verdict offline (``verdict check --log-proof``); forged receipts are
refused, naming what failed.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from credence.cli import main
from credence.dev import federation as dev_federation
from credence.transparency.note import format_note, parse_note
from credence.transparency.tlog_proof import TlogProof, format_tlog_proof, parse_tlog_proof

pytestmark = pytest.mark.slow

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("receipts")
    document = dev_federation.up(directory, agencies=3, subjects=40, seed=11)
    document["path"] = str(directory / dev_federation.FEDERATION_FILE)
    try:
        yield document
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


@pytest.fixture
def cli(
    federation: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    monkeypatch.setenv("CREDENCE_FEDERATION", federation["path"])

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _receipts(cli: Cli, sample: dict[str, str], directory: Path) -> dict[str, Path]:
    """``me lookups --proofs``, again until every lookup is in a cosigned checkpoint."""
    deadline = time.monotonic() + 60
    while True:
        code, out, err = cli(
            "me", "lookups", "--key", sample["subject_key"], "--binding", sample["binding"],
            "--json", "--proofs", directory,
        )  # fmt: skip
        assert code == 0, err
        if "newer than that checkpoint" not in err or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert re.search(r"saved \d+ receipt\(s\) to .* cosigned by [23] witness", err), err
    return {
        json.loads(line)["query_id"]: directory / f"{json.loads(line)['query_id']}.tlog-proof"
        for line in out.splitlines()
    }


def test_a_receipt_proves_the_verdicts_lookup_offline_and_forgeries_are_refused(
    federation: dict[str, Any], cli: Cli, tmp_path: Path
) -> None:
    samples = federation["samples"]
    for organisation in samples["listed_organisation"][:3]:
        assert cli("verify", organisation)[0] == 0
    first, second = samples["person_with_consent"][:2]
    verdicts = {}
    for sample in (first, second):
        verdicts[sample["id"]] = tmp_path / f"{sample['id'].replace(':', '_')}.json"
        code, _, err = cli(
            "verify", "--person", sample["id"], "--grant", sample["consent"],
            "--out", verdicts[sample["id"]],
        )  # fmt: skip
        assert code == 0, err
    [(_, receipt)] = _receipts(cli, first, tmp_path / "first").items()
    [(_, other)] = _receipts(cli, second, tmp_path / "second").items()
    verdict = verdicts[first["id"]]

    code, out, err = cli("verdict", "check", verdict, "--log-proof", receipt)
    assert code == 0, err
    assert re.search(r"logged: entry \d+ of the log's checkpoint of \d+ entries, cosigned by", out)
    code, out, _ = cli("verdict", "check", verdict, "--log-proof", receipt, "--json")
    logged = json.loads(out)["log_proof"]
    assert logged["index"] < logged["tree_size"]
    assert len(logged["cosigners"]) >= 2  # the manifest's quorum: 2 of the 3 agencies

    genuine = parse_tlog_proof(receipt.read_bytes())
    assert genuine.path, "the log holds several entries: the proof has hashes"

    def refused(forged: TlogProof | bytes, words: str, against: Path = verdict) -> None:
        path = tmp_path / "forged.tlog-proof"
        path.write_bytes(forged if isinstance(forged, bytes) else format_tlog_proof(forged))
        code, out, _ = cli("verdict", "check", against, "--log-proof", path)
        assert code == 1
        assert out.startswith("no: ")
        assert words in out, out

    # Another lookup's receipt beside this verdict.
    refused(other.read_bytes(), "the receipt is for entry")
    # A path hash changed, or the receipt moved to another index.
    path = list(genuine.path)
    path[0] = bytes(32)
    refused(TlogProof(genuine.index, tuple(path), genuine.checkpoint_note, genuine.extra),
            "leads to root")  # fmt: skip
    refused(TlogProof(genuine.index + 1, genuine.path, genuine.checkpoint_note, genuine.extra),
            "inclusion proof for leaf")  # fmt: skip
    # The checkpoint stripped of its witness's cosignature: no quorum.
    note = parse_note(genuine.checkpoint_note)
    lone = format_note(type(note)(note.text, note.signatures[:1]))
    refused(TlogProof(genuine.index, genuine.path, lone, genuine.extra),
            "cosigned by 0 of the 3 witnesses")  # fmt: skip
    # A receipt that is not one.
    refused(b"c2sp.org/tlog-proof@v1\nindex x\n\nsome checkpoint\n", "not a canonical decimal")
    # The genuine receipt still verifies: nothing was changed by the refusals.
    assert cli("verdict", "check", verdict, "--log-proof", receipt)[0] == 0
    assert base64.b64encode(genuine.extra).decode() in receipt.read_text()


def test_the_node_audits_from_tiles_as_dev_up_enrols_it(
    federation: dict[str, Any], cli: Cli
) -> None:
    agency = Path(federation["agencies"][0]["data_dir"])
    assert 'registry_http = "https://127.0.0.1:' in (agency / "node.toml").read_text()
    code, out, err = cli("node", "audit", "--dir", agency, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True
    assert result["checked"] > 0
