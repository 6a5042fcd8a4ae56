"""The registry's HTTP side over TLS, and the pinned path a client follows.

Each test serves :class:`central_registry.http_side.HttpSide` on loopback with
a certificate from an offline federation's CA, then reads it as a client of
:mod:`credence.client.pinned` would, or as an attacker would serve it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from central_registry.http_side import HttpSide
from credence.client.pinned import fetch_manifest, fetch_verified_jwks, https_get
from credence.dev.offline_federation import Federation
from credence.errors import InvalidInput, Unavailable, UnknownKey
from credence.keys import KeySet, SigningKey, private_key_pem
from credence.pki import create_ca, generate_tls_key, issue_member_certificate, make_csr


@pytest.fixture
def federation() -> Federation:
    return Federation.create()


def _files(directory: Path, key_pem: bytes, cert_pem: bytes) -> tuple[Path, Path]:
    cert, key = directory / "http.crt", directory / "http.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key


@contextmanager
def _serving(
    federation: Federation, tls: tuple[Path, Path], jwks: Callable[[], KeySet] | None = None
) -> Iterator[str]:
    envelope = federation.manifest_envelope(now=datetime.now(UTC))
    side = HttpSide(
        "127.0.0.1:0",
        tls_cert=tls[0],
        tls_key=tls[1],
        manifest=lambda: envelope,
        jwks=jwks or (lambda: KeySet([federation.registry_key.public])),
    )
    side.start()
    try:
        yield f"https://127.0.0.1:{side.port}"
    finally:
        side.stop()


def _registry_tls(federation: Federation, directory: Path) -> tuple[Path, Path]:
    registry = federation.members["registry"]
    return _files(directory, registry.tls_key_pem, registry.cert_pem)


def test_the_pinned_path_accepts_the_manifests_registry_keys(
    federation: Federation, tmp_path: Path
) -> None:
    root = KeySet([federation.root_key.public])
    with _serving(federation, _registry_tls(federation, tmp_path)) as url:
        now = datetime.now(UTC)
        jwks = fetch_verified_jwks(
            url, ca_pem=federation.ca.certificate_pem, root_keys=root, now=now
        )
    assert list(jwks) == [federation.registry_key.kid]


def test_a_jwks_that_does_not_match_the_manifest_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    # The attacker serves the genuine manifest but adds a key of their own to
    # the JWKS, hoping a client trusts whatever the JWKS lists.
    attacker = SigningKey.generate()
    forged = KeySet([federation.registry_key.public, attacker.public])
    root = KeySet([federation.root_key.public])
    now = datetime.now(UTC)
    with _serving(federation, _registry_tls(federation, tmp_path), jwks=lambda: forged) as url:
        with pytest.raises(UnknownKey, match=f"serves key\\(s\\) {attacker.kid} that manifest"):
            fetch_verified_jwks(url, ca_pem=federation.ca.certificate_pem, root_keys=root, now=now)
        # The manifest itself still verifies: only the JWKS was refused.
        manifest = fetch_manifest(
            url, ca_pem=federation.ca.certificate_pem, root_keys=root, now=now
        )
    assert attacker.kid not in manifest.registry_keys


def test_an_operators_certificate_needs_the_operators_ca(
    federation: Federation, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    operator_ca = create_ca("Operator web CA", now - timedelta(hours=1), timedelta(days=30))
    key = generate_tls_key()
    cert = issue_member_certificate(
        operator_ca, make_csr(key, "registry"), "registry", now - timedelta(hours=1),
        valid_for=timedelta(days=7), hosts=("127.0.0.1",),
    )  # fmt: skip
    tls = _files(tmp_path, private_key_pem(key), cert)
    root = KeySet([federation.root_key.public])
    with _serving(federation, tls) as url:
        with pytest.raises(Unavailable, match="does not verify against the given CA"):
            fetch_manifest(url, ca_pem=federation.ca.certificate_pem, root_keys=root, now=now)
        manifest = fetch_manifest(url, ca_pem=operator_ca.certificate_pem, root_keys=root, now=now)
    assert manifest.registry.member_id == "registry"


def test_plain_http_urls_are_refused_before_any_connection() -> None:
    with pytest.raises(InvalidInput, match="use an https:// URL"):
        https_get("http://127.0.0.1:1/manifest", b"")


def test_a_stalled_handshake_holds_up_no_other_client(
    federation: Federation, tmp_path: Path
) -> None:
    root = KeySet([federation.root_key.public])
    with _serving(federation, _registry_tls(federation, tmp_path)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            # This connection sends nothing; another client is served meanwhile.
            manifest = fetch_manifest(
                url, ca_pem=federation.ca.certificate_pem, root_keys=root, now=datetime.now(UTC)
            )
    assert manifest.version >= 1


def test_a_certificate_and_key_that_do_not_match_are_refused_at_start(
    federation: Federation, tmp_path: Path
) -> None:
    registry = federation.members["registry"]
    other = private_key_pem(generate_tls_key())
    cert, key = _files(tmp_path, other, registry.cert_pem)
    with pytest.raises(InvalidInput, match="cannot load certificate"):
        HttpSide("127.0.0.1:0", tls_cert=cert, tls_key=key, manifest=lambda: None,  # type: ignore[arg-type,return-value]
                 jwks=KeySet)  # fmt: skip
