"""The registry aggregates in the blind, and anyone can re-add a verdict (issue 14C).

One federation (registry and three agency nodes, each its own process) runs
for the module; the commands run in-process through :func:`credence.cli.main`.
The test knows what the registry must not: each node keeps its cleartext
vectors in its own query log (``answer_vectors``), which the test reads to
look for them in the registry's database files and log output. The tests
run in file order: the last one stops a node to make a dropout.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from credence.blind.layout import for_scorecard
from credence.blind.sums import to_signed
from credence.cli import main
from credence.dev import federation as dev_federation
from credence.envelope import Envelope
from credence.keys import load_signing_key
from credence.scorecard import default_scorecard
from credence.v1 import agency_pb2, common_pb2, registry_pb2
from credence.verdicts import read_verdict_file, sign_verdict, verdict_file, verdict_jws

pytestmark = pytest.mark.slow

LAYOUT = for_scorecard(default_scorecard())
FederationDoc = dict[str, Any]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FederationDoc]]:
    directory = tmp_path_factory.mktemp("federation")
    document = dev_federation.up(directory, agencies=3, subjects=80, seed=11)
    try:
        yield directory / dev_federation.FEDERATION_FILE, document
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Run ``credence ARGS`` in-process: exit code and stdout."""
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().out


def sample(document: FederationDoc, name: str, index: int = 0) -> str:
    return str(document["samples"][name][index])


def saved_verdict(path: Path) -> registry_pb2.Verdict:
    envelope, _ = read_verdict_file(path.read_text())
    return registry_pb2.Verdict.FromString(envelope.payload)


def kept_vectors(document: FederationDoc) -> dict[str, list[tuple[int, ...]]]:
    """Per agency, every cleartext vector its node kept (one per single answer or batch item)."""
    kept: dict[str, list[tuple[int, ...]]] = {}
    for agency in document["agencies"]:
        database = Path(agency["data_dir"]) / "node.db"
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute("SELECT vectors FROM answer_vectors").fetchall()
        words = [struct.unpack(f"<{len(raw) // 8}Q", raw) for (raw,) in rows]
        kept[agency["member_id"]] = [
            tuple(flat[start : start + LAYOUT.length])
            for flat in words
            for start in range(0, len(flat), LAYOUT.length)
        ]
    return kept


def encodings(vector: tuple[int, ...]) -> list[bytes]:
    """The ways a vector could sit in a file: packed words, signed text, and JSON."""
    signed = [to_signed(value) for value in vector]
    return [
        struct.pack(f"<{len(vector)}Q", *vector),
        struct.pack(f"<{len(vector)}Q", *vector).hex().encode(),
        ", ".join(map(str, signed)).encode(),
        ",".join(map(str, signed)).encode(),
        json.dumps(signed).encode(),
    ]


def resigned(
    federation: tuple[Path, FederationDoc], saved: Path, verdict: registry_pb2.Verdict, out: Path
) -> Path:
    """``verdict`` signed by the registry's own key, as a registry that lies would sign it."""
    _, document = federation
    registry_dir = Path(document["registry"]["data_dir"])
    key = load_signing_key(registry_dir / "signing.key")
    envelope = sign_verdict(verdict, key)
    original, _ = read_verdict_file(saved.read_text())
    assert original.signatures[0].keyid == key.kid
    out.write_text(verdict_file(envelope, verdict_jws(verdict, key, "registry")))
    return out


def test_no_registry_file_or_log_holds_an_agency_s_cleartext_answer(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    listed = sample(document, "listed_organisation")
    saved = tmp_path / "listed.json"
    assert run(capsys, "verify", listed, "--federation", path, "--out", saved)[0] == 0
    assert (
        run(capsys, "verify", sample(document, "clear_organisation"), "--federation", path)[0] == 0
    )
    source = tmp_path / "rows.csv"
    source.write_text(
        "row_key,identifier\n"
        + "".join(
            f"r{index},{sample(document, 'listed_organisation', index)}\n" for index in range(1, 4)
        )
    )
    results = tmp_path / "results.csv"
    assert run(capsys, "screen", source, "--out", results, "--federation", path)[0] == 0
    assert results.read_text().count(",listed,") == 3

    verdict = saved_verdict(saved)
    assert verdict.blacklist.status == common_pb2.BLACKLIST_STATUS_LISTED
    # The test knows what the nodes answered: some listed, and not as sent.
    kept = kept_vectors(document)
    listing = [
        vector
        for vectors in kept.values()
        for vector in vectors
        if vector[LAYOUT.listed_index] == 1
    ]
    assert len(listing) >= 4  # the single lookup and the three screened rows
    sent = [tuple(agency_pb2.Answer.FromString(a.payload).masked) for a in verdict.answers]
    assert len(sent) == verdict.coverage.answered == verdict.coverage.expected >= 2
    assert not set(sent) & {v for vectors in kept.values() for v in vectors}

    # Nothing of the registry's holds any of them: its database files and its log output.
    registry_dir = Path(document["registry"]["data_dir"])
    stored = b"".join(
        entry.read_bytes() for entry in sorted(registry_dir.rglob("*")) if entry.is_file()
    )
    logged = b"".join(
        entry.read_bytes()
        for entry in sorted((path.parent / "logs").glob("registry*"))
        if entry.is_file()
    )
    # The right files: the lookup's log entry is there, by its query id.
    assert (registry_dir / "registry.db").is_file()
    assert verdict.query_id.encode() in stored
    assert logged
    nonzero = {v for vectors in kept.values() for v in vectors if any(v)}
    assert nonzero
    for vector in nonzero:
        for encoded in encodings(vector):
            assert encoded not in stored, f"registry database holds a cleartext vector {vector}"
            assert encoded not in logged, f"registry log holds a cleartext vector {vector}"
    # ...and what it says in its log about a lookup is never a value.
    assert b"listed_and_disputed" not in logged


def test_verdict_check_re_adds_and_refuses_a_tampered_answer_or_field(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    saved = tmp_path / "verdict.json"
    code, _ = run(
        capsys, "verify", sample(document, "listed_organisation", 0), "--federation", path,
        "--out", saved,
    )  # fmt: skip
    assert code == 0
    code, out = run(capsys, "verdict", "check", saved, "--federation", path)
    assert code == 0, out
    verdict = saved_verdict(saved)
    answers = verdict.coverage.answered
    assert answers >= 2
    assert f"re-added: {answers} signed masked answers and 0 recovery shares" in out

    def check(tampered: registry_pb2.Verdict, name: str) -> dict[str, Any]:
        forged = resigned(federation, saved, tampered, tmp_path / f"{name}.json")
        code, out = run(capsys, "verdict", "check", forged, "--federation", path, "--json")
        assert code == 1, out
        result: dict[str, Any] = json.loads(out)
        assert result["valid"] is False
        return result

    # A field the sum does not give: one more listing agency.
    more = registry_pb2.Verdict()
    more.CopyFrom(verdict)
    more.blacklist.listing_agencies += 1
    result = check(more, "field")
    assert result["error"] == "ClaimMismatch"
    assert "its blacklist part does not follow from the re-added sum" in result["reason"]

    # Cleared: the registry claims CLEAR over answers whose sum lists the subject.
    cleared = registry_pb2.Verdict()
    cleared.CopyFrom(verdict)
    cleared.blacklist.CopyFrom(
        registry_pb2.BlacklistVerdict(status=common_pb2.BLACKLIST_STATUS_CLEAR)
    )
    assert check(cleared, "cleared")["error"] == "ClaimMismatch"

    # One masked word of a node-signed answer changed: its signature fails.
    altered = registry_pb2.Verdict()
    altered.CopyFrom(verdict)
    answer = agency_pb2.Answer.FromString(altered.answers[0].payload)
    answer.masked[0] = (answer.masked[0] + 1) % (1 << 64)
    altered.answers[0].payload = answer.SerializeToString()
    assert check(altered, "answer")["error"] == "BadSignature"

    # An answer left out: the sum cannot be re-added.
    dropped = registry_pb2.Verdict()
    dropped.CopyFrom(verdict)
    del dropped.answers[1]
    result = check(dropped, "dropped")
    assert result["error"] == "ClaimMismatch"
    assert "lacks the answers of" in result["reason"]

    # An answer the same node signed for another lookup, put in place of this one's.
    other_file = tmp_path / "other.json"
    code, _ = run(
        capsys, "verify", sample(document, "clear_organisation", 2), "--federation", path,
        "--out", other_file,
    )  # fmt: skip
    assert code == 0
    other = saved_verdict(other_file)
    swapped = registry_pb2.Verdict()
    swapped.CopyFrom(verdict)
    swapped.answers[0].CopyFrom(other.answers[0])
    result = check(swapped, "swapped")
    assert "is not one its coverage lists answered to this query" in result["reason"]

    # Nothing changed: the verdict as the registry signed it still checks.
    assert run(capsys, "verdict", "check", saved, "--federation", path)[0] == 0


def _stop_node(federation: tuple[Path, FederationDoc], member_id: str) -> None:
    """Stop one node of the federation (a process this module's fixture started)."""
    path, _ = federation
    for entry in dev_federation.status(path.parent):
        if entry["name"] == member_id and entry["running"]:
            os.kill(int(entry["pid"]), signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not any(
                    e["name"] == member_id and e["running"]
                    for e in dev_federation.status(path.parent)
                ):
                    return
                time.sleep(0.1)
            raise AssertionError(f"node {member_id} did not stop")
    raise AssertionError(f"no running node {member_id}")


def test_a_dropout_is_recovered_and_the_verdict_still_re_adds(
    federation: tuple[Path, FederationDoc],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    listed = sample(document, "listed_organisation", 1)
    before = tmp_path / "before.json"
    assert run(capsys, "verify", listed, "--federation", path, "--out", before)[0] == 0
    full = saved_verdict(before)
    assert full.blacklist.status == common_pb2.BLACKLIST_STATUS_LISTED
    listers = {
        agency["member_id"]
        for agency in document["agencies"]
        if any(
            v[LAYOUT.listed_index]
            for v in kept_vectors({"agencies": [agency]})[agency["member_id"]]
        )
    }
    quiet = next(
        agency["member_id"]
        for agency in document["agencies"]
        if agency["member_id"] not in listers
        and any(c.member_id == agency["member_id"] for c in full.coverage.agencies)
    )
    _stop_node(federation, quiet)

    saved = tmp_path / "dropout.json"
    code, _ = run(capsys, "verify", listed, "--federation", path, "--out", saved)
    assert code == 0
    verdict = saved_verdict(saved)
    states = {a.member_id: a.state for a in verdict.coverage.agencies}
    assert states[quiet] != common_pb2.COVERAGE_STATE_ANSWERED
    assert verdict.incomplete_reason == ""
    # The same listing, read from the answering agencies' sum once the shares are removed.
    assert verdict.blacklist.status == common_pb2.BLACKLIST_STATUS_LISTED
    assert list(verdict.blacklist.categories) == list(full.blacklist.categories)
    assert verdict.blacklist.listing_agencies == full.blacklist.listing_agencies
    answering = len(verdict.answers)
    assert len(verdict.recoveries) == answering == verdict.coverage.answered
    for proto in verdict.recoveries:
        share = agency_pb2.RecoveryShare.FromString(proto.payload)
        assert list(share.missing) == [quiet]
        assert share.query_id == verdict.query_id
    code, out = run(capsys, "verdict", "check", saved, "--federation", path)
    assert code == 0, out
    assert f"re-added: {answering} signed masked answers and {answering} recovery shares" in out

    # Screening recovers a batch's masks the same way: one share per answering node.
    source = tmp_path / "rows.csv"
    source.write_text(
        f"row_key,identifier\nlisted,{listed}\nclear,{sample(document, 'clear_organisation')}\n"
    )
    results = tmp_path / "results.jsonl"
    assert run(capsys, "screen", source, "--out", results, "--federation", path)[0] == 0
    screened = {row["row_key"]: row for row in map(json.loads, results.read_text().splitlines())}
    assert screened["listed"]["status"] == "listed"
    # Every blacklist agency must answer for CLEAR: the stopped one did not.
    assert screened["clear"]["status"] == "incomplete"

    # A share changed after the node signed it is refused.
    altered = registry_pb2.Verdict()
    altered.CopyFrom(verdict)
    share = agency_pb2.RecoveryShare.FromString(altered.recoveries[0].payload)
    share.share[0] = (share.share[0] + 1) % (1 << 64)
    altered.recoveries[0].payload = share.SerializeToString()
    forged = resigned(federation, saved, altered, tmp_path / "share.json")
    code, out = run(capsys, "verdict", "check", forged, "--federation", path, "--json")
    assert code == 1
    assert json.loads(out)["error"] == "BadSignature"
    # A share left out: the registry would have to say the sum could not be read.
    short = registry_pb2.Verdict()
    short.CopyFrom(verdict)
    del short.recoveries[0]
    forged = resigned(federation, saved, short, tmp_path / "short.json")
    code, out = run(capsys, "verdict", "check", forged, "--federation", path, "--json")
    assert code == 1
    assert "does not say its sum could not be read" in json.loads(out)["reason"]
    assert Envelope.from_proto(verdict.recoveries[0]).payload_type == (
        "application/vnd.credence.recovery-share.v1+proto"
    )
