"""The registry's HTTP side, read the pinned way.

The HTTP side (``/manifest``, ``/.well-known/jwks.json``, ``/status-list``)
is served over TLS. A client trusts nothing it fetches from it on TLS alone:

1. fetch ``/manifest`` over HTTPS, the server certificate checked against the
   federation CA (or the operator's CA, for an operator's certificate);
2. verify the manifest envelope under the pinned root keys
   (:func:`credence.manifest.verify_manifest`: signature, expiry);
3. fetch ``/.well-known/jwks.json`` and accept it only if its keys are exactly
   the manifest's registry keys (:func:`match_jwks`).

The JWKS then serves any JOSE library (PyJWT, jose, joserfc) as a key set the
root keys vouch for, not one the network delivered.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from credence.envelope import Envelope
from credence.errors import ClaimMismatch, InvalidInput, Unavailable, UnknownKey
from credence.keys import KeySet
from credence.manifest import DEFAULT_MAX_MANIFEST_BYTES, TrustedManifest, verify_manifest

__all__ = ["fetch_manifest", "fetch_verified_jwks", "https_get", "match_jwks"]

_TIMEOUT_SECONDS = 10.0


def https_get(url: str, ca_pem: bytes, *, max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> bytes:
    """GET ``url`` over TLS, the server certificate checked against ``ca_pem``.

    Only ``https://`` URLs are accepted: a document fetched over plain HTTP is
    whatever the network delivered. The host name (or IP address) in the URL
    must be in the server certificate.

    Raises:
        InvalidInput: ``url`` is not https, or ``ca_pem`` is not a PEM certificate.
        Unavailable: the server could not be reached, its certificate did not
            verify, it answered with an error, or the body exceeds ``max_bytes``.
    """
    if not url.startswith("https://"):
        raise InvalidInput(
            f"the registry's HTTP side is served over TLS: use an https:// URL, not {url!r}"
        )
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the CA certificate for {url} is not a PEM certificate: {exc}") from exc
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS, context=context) as response:  # noqa: S310 - https only
            body: bytes = response.read(max_bytes + 1)
    except OSError as exc:
        # urllib wraps the TLS failure in a URLError whose reason is the cause.
        cause = getattr(exc, "reason", exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise Unavailable(
                f"{url}: the server's certificate does not verify against the given CA "
                f"({cause.verify_message}); pass the federation CA, or the operator's CA"
            ) from exc
        raise Unavailable(f"cannot fetch {url}: {exc}") from exc
    if len(body) > max_bytes:
        raise Unavailable(f"{url} returned more than {max_bytes} bytes; refusing it")
    return body


def fetch_manifest(
    http_url: str, *, ca_pem: bytes, root_keys: KeySet, now: datetime
) -> TrustedManifest:
    """Fetch ``/manifest`` over TLS and verify it under the pinned root keys.

    Raises:
        InvalidInput: ``http_url`` is not https, or the body is not an envelope.
        Unavailable: the registry could not be reached over TLS.
        VerificationError: not signed by the root keys, or expired.
    """
    body = https_get(f"{http_url.rstrip('/')}/manifest", ca_pem)
    return verify_manifest(Envelope.from_json(body), trusted_root=root_keys, threshold=1, now=now)


def match_jwks(document: Mapping[str, Any], manifest: TrustedManifest) -> KeySet:
    """The JWK Set ``document``, accepted only if it is the manifest's registry keys.

    Raises:
        InvalidInput: ``document`` is not a JWK Set of Ed25519 public keys.
        UnknownKey: the JWKS holds a key the manifest does not list for the registry.
        ClaimMismatch: the JWKS lacks a registry key the manifest lists.
    """
    served = KeySet.from_jwks(document)
    listed = manifest.registry_keys
    unknown = sorted(kid for kid in served if kid not in listed)
    if unknown:
        raise UnknownKey(
            f"the JWKS serves key(s) {', '.join(unknown)} that manifest version "
            f"{manifest.version} does not list for the registry; do not trust this JWKS"
        )
    missing = sorted(kid for kid in listed if kid not in served)
    if missing:
        raise ClaimMismatch(
            f"the JWKS lacks registry key(s) {', '.join(missing)} of manifest version "
            f"{manifest.version}; it is stale or not the registry's"
        )
    return listed


def fetch_verified_jwks(
    http_url: str, *, ca_pem: bytes, root_keys: KeySet, now: datetime
) -> KeySet:
    """The registry's JWKS, fetched over TLS and matched to the verified manifest.

    Follows the pinned path of this module: manifest over TLS, verified under
    ``root_keys``, then the JWKS matched key for key to its registry keys.

    Raises:
        InvalidInput: ``http_url`` is not https, or a document is malformed.
        Unavailable: the registry could not be reached over TLS.
        VerificationError: the manifest does not verify, or the JWKS does not
            match its registry keys.
    """
    manifest = fetch_manifest(http_url, ca_pem=ca_pem, root_keys=root_keys, now=now)
    body = https_get(f"{http_url.rstrip('/')}/.well-known/jwks.json", ca_pem)
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the JWKS at {http_url} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"the JWKS at {http_url} is not a JSON object")
    return match_jwks(document, manifest)
