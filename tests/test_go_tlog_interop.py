"""Go's reference packages read a real registry's log: checkpoint, tiles, proofs.

tests/go_tlog/checker.go, built offline against Debian's golang.org/x/mod
(``golang-golang-x-mod-dev``, its ``sumdb/note`` and ``sumdb/tlog`` are the
upstream files), verifies the registry's checkpoint with ``note.Open`` under
the vkey the manifest names, reads the tiles over HTTPS (trusting the
federation CA only), rebuilds the tree from the entry bundles and checks every
tile against its root, and proves inclusion and consistency with
``tlog.ProveRecord``/``CheckRecord`` and ``ProveTree``/``CheckTree``.

Without Go the test skips and says why; under CI (``CI=true``) it fails
instead, as ``.ci/run`` installs both packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update
from support.log_server import fill_log, new_promises
from support.registry import init_registry, running_registry

from central_registry.models import MerkleNode
from central_registry.server import RegistryThread
from credence.client.pinned import fetch_manifest, https_get
from credence.keys import KeySet, SigningKey, load_signing_key
from credence.storage import session_factory
from credence.transparency.checkpoint import open_checkpoint
from credence.transparency.log_audit import LogIdentity
from credence.transparency.note import ED25519_TYPE, vkey

CHECKER = Path(__file__).parent / "go_tlog" / "checker.go"
#: Where Debian's golang-golang-x-mod-dev installs the x/mod sources (a GOPATH).
GOPATH = Path("/usr/share/gocode")
OLD_SIZE = 300
SIZE = 1_100


def _go_or_skip() -> str:
    go = shutil.which("go")
    if go is None:
        reason = "the Go toolchain is not installed (Debian package golang-go)"
    elif not all((GOPATH / "src/golang.org/x/mod/sumdb" / p).is_dir() for p in ("note", "tlog")):
        reason = f"golang.org/x/mod is not in {GOPATH} (Debian package golang-golang-x-mod-dev)"
    else:
        return go
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; .ci/run installs it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = _go_or_skip()
    directory = tmp_path_factory.mktemp("go")
    binary = directory / "checker"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",  # Debian's tree is a GOPATH; no module proxy is reachable
        "GOCACHE": str(directory / "cache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    built = subprocess.run(
        [go, "build", "-o", str(binary), str(CHECKER)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return binary


def _check(checker: Path, url: str, ca: Path, log_vkey: str, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(checker), "-url", url, "-ca", str(ca), "-vkey", log_vkey, *extra],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[RegistryThread, Path]]:
    directory = init_registry(tmp_path / "registry")
    with running_registry(directory) as running:
        yield running, directory


def test_go_verifies_the_checkpoint_tiles_and_proofs_of_a_real_registry(
    checker: Path, registry: tuple[RegistryThread, Path], tmp_path: Path
) -> None:
    running, directory = registry
    ca = directory / "ca.crt"
    url = f"https://127.0.0.1:{running.running.http.port}"
    # The log's origin and key, as any reader finds them: in the signed manifest.
    root_keys = KeySet([load_signing_key(directory / "root.key").public])
    manifest = fetch_manifest(
        url, ca_pem=ca.read_bytes(), root_keys=root_keys, now=datetime.now(UTC)
    )
    log = LogIdentity.from_manifest(manifest)
    sessions = session_factory(running.running.engine)
    rows = [row for _, row in new_promises(SIZE, datetime.now(UTC))]
    fill_log(sessions, rows[:OLD_SIZE])
    old = https_get(f"{url}/checkpoint", ca.read_bytes())
    assert open_checkpoint(old, log.origin, log.public_key)[0].size == OLD_SIZE
    (tmp_path / "old.checkpoint").write_bytes(old)
    fill_log(sessions, rows[OLD_SIZE:])

    indexes = "0,255,256,299,511,512,1023,1024,1099"
    status, output = _check(
        checker, url, ca, log.vkey, "-old", str(tmp_path / "old.checkpoint"), "-prove", indexes
    )
    assert status == 0, output
    assert output.startswith(f"ok size={SIZE} ")
    assert "inclusion=9 consistency=300->1100" in output

    # Another key under the same origin: note.Open refuses the checkpoint.
    stranger = vkey(log.origin, ED25519_TYPE, SigningKey.generate().public.raw())
    status, output = _check(checker, url, ca, stranger)
    assert status == 1
    assert output.startswith("FAIL: note.Open"), output

    # A level-1 hash rewritten in the store: the root from the entries still
    # matches the signed checkpoint, so only checking every tile catches it.
    with sessions.begin() as session:
        session.execute(
            update(MerkleNode)
            .where(MerkleNode.level == 8, MerkleNode.idx == 1)
            .values(hash=bytes(32))
        )
    status, output = _check(checker, url, ca, log.vkey)
    assert status == 1
    assert "FAIL: tile tile/1/000.p/4 does not match the checkpoint's tree" in output, output
