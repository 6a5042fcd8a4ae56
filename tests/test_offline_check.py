"""``credence verdict check`` is offline: it checks against a manifest the user holds.

A real federation (``credence.dev.federation``, one agency) issues a verdict;
the checks then run through :func:`credence.cli.main` against a copy of the
federation file whose registry addresses point at a closed port, so any
network use would fail. Only ``--refresh`` goes online, over TLS.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from credence.cli import main
from credence.dev import federation as dev_federation
from credence.envelope import Envelope
from credence.keys import SigningKey, load_signing_key
from credence.manifest import MANIFEST_PAYLOAD_TYPE, sign_manifest
from credence.v1 import manifest_pb2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    directory = tmp_path_factory.mktemp("federation")
    document = dev_federation.up(directory, agencies=1, subjects=20, seed=5)
    try:
        yield directory / dev_federation.FEDERATION_FILE, document
    finally:
        stubborn = dev_federation.down(directory)
        assert stubborn == [], f"processes that ignored SIGTERM: {stubborn}"


@pytest.fixture(scope="module")
def saved_verdict(
    federation: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path, document = federation
    saved = tmp_path_factory.mktemp("verdict") / "verdict.json"
    organisation = document["samples"]["listed_organisation"][0]
    assert main(["verify", str(organisation), "--federation", str(path), "--out", str(saved)]) == 0
    return saved


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unreachable_copy(
    document: dict[str, Any], directory: Path, *, keep_manifest: bool = False
) -> Path:
    """The federation file with every registry address on a closed port."""
    port = _closed_port()
    registry = {
        **document["registry"],
        "address": f"127.0.0.1:{port}",
        "public_address": f"127.0.0.1:{port}",
        "http_url": f"https://127.0.0.1:{port}",
    }
    copy = {k: v for k, v in document.items() if keep_manifest or k != "manifest"}
    directory.mkdir(exist_ok=True)
    path = directory / "offline-federation.json"
    path.write_text(json.dumps({**copy, "registry": registry}))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_refresh_fetches_over_tls_then_checks_run_with_the_registry_unreachable(
    federation: tuple[Path, dict[str, Any]],
    saved_verdict: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    held = tmp_path / "held-manifest.json"
    code, out, err = run(
        capsys, "verdict", "check", saved_verdict, "--federation", path,
        "--manifest", held, "--refresh", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["valid"] is True
    version = result["manifest_version"]
    assert f"fetched manifest version {version}, saved to {held}" in err
    assert Envelope.from_json(held.read_text()).payload_type == MANIFEST_PAYLOAD_TYPE

    offline = _unreachable_copy(document, tmp_path)
    code, out, _ = run(
        capsys, "verdict", "check", saved_verdict, "--federation", offline, "--manifest", held
    )
    assert code == 0
    assert out.startswith("yes: verdict ")
    assert f"(manifest version {version})" in out

    # By default: the manifest `dev up` wrote and named in the federation file.
    with_held = _unreachable_copy(document, tmp_path / "default", keep_manifest=True)
    code, out, _ = run(capsys, "verdict", "check", saved_verdict, "--federation", with_held)
    assert code == 0
    assert "(manifest version " in out

    # With nothing held, the check names what to do instead of going online.
    code, _, err = run(capsys, "verdict", "check", saved_verdict, "--federation", offline)
    assert code == 1
    assert "no manifest held at" in err
    assert "--refresh" in err
    # --refresh is the one online step, and says why it failed.
    code, _, err = run(
        capsys, "verdict", "check", saved_verdict, "--federation", offline, "--refresh"
    )
    assert code == 1
    assert err.startswith("credence: cannot fetch https://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1


def _resigned(held: Path, root: SigningKey, *, expires: datetime) -> Envelope:
    manifest = manifest_pb2.Manifest()
    manifest.ParseFromString(Envelope.from_json(held.read_text()).payload)
    manifest.issued_at.FromDatetime(expires - timedelta(days=2))
    manifest.expires_at.FromDatetime(expires)
    return sign_manifest(manifest, [root])


def test_an_expired_held_manifest_says_so_and_suggests_refresh(
    federation: tuple[Path, dict[str, Any]],
    saved_verdict: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    path, document = federation
    held = tmp_path / "manifest.json"
    assert run(capsys, "verdict", "check", saved_verdict, "--federation", path,
               "--manifest", held, "--refresh")[0] == 0  # fmt: skip
    root = load_signing_key(Path(document["registry"]["data_dir"]) / "root.key")
    expired = tmp_path / "expired.json"
    expired.write_text(
        _resigned(held, root, expires=datetime.now(UTC) - timedelta(days=1)).to_json()
    )
    offline = _unreachable_copy(document, tmp_path)
    code, out, err = run(
        capsys, "verdict", "check", saved_verdict, "--federation", offline, "--manifest", expired
    )
    assert (code, out) == (1, "")
    assert f"the manifest held at {expired} has expired" in err
    assert "with --refresh" in err


def test_a_held_manifest_not_signed_by_the_pinned_root_is_refused(
    federation: tuple[Path, dict[str, Any]],
    saved_verdict: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # The attacker's manifest: the real content, with a key of their own as
    # signer, valid for a year.
    path, document = federation
    held = tmp_path / "manifest.json"
    assert run(capsys, "verdict", "check", saved_verdict, "--federation", path,
               "--manifest", held, "--refresh")[0] == 0  # fmt: skip
    forged = tmp_path / "forged.json"
    attacker = SigningKey.generate()
    forged.write_text(
        _resigned(held, attacker, expires=datetime.now(UTC) + timedelta(days=365)).to_json()
    )
    before = forged.read_bytes()
    offline = _unreachable_copy(document, tmp_path)
    code, out, err = run(
        capsys, "verdict", "check", saved_verdict, "--federation", offline, "--manifest", forged
    )
    assert (code, out) == (1, "")
    assert "signed only by keys that are not trusted" in err
    assert forged.read_bytes() == before
