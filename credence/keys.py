"""Ed25519 signing keys, their JWK form, RFC 7638 key ids, and key files.

A :class:`SigningKey` signs; a :class:`VerifyKey` verifies and raises on
failure; a :class:`KeySet` resolves key ids (RFC 7638 JWK thumbprints) to
verify keys and is the only way a verifier finds a key. Verification always
takes key objects, never raw key bytes (RFC 8725 section 3.1).

Key files are PKCS#8 PEM, written atomically with mode 0600, optionally
encrypted under a passphrase.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from credence.encoding import b64url_decode, b64url_encode
from credence.errors import BadSignature, InvalidInput, UnknownKey

# RFC 7638 section 3.2: the required members of each key type, in the
# lexicographic order the thumbprint's canonical JSON uses.
_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
    "oct": ("k", "kty"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a JWK, base64url-encoded.

    Only the required members of the key type count, so optional members such
    as ``kid`` or ``use`` never change a key's id.

    Raises:
        InvalidInput: the key type is unknown or a required member is missing.
    """
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _THUMBPRINT_MEMBERS:
        raise InvalidInput(f"JWK has unsupported kty {kty!r}")
    members = {}
    for name in _THUMBPRINT_MEMBERS[kty]:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise InvalidInput(f"JWK of kty {kty} lacks the required member {name!r}")
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key and its key id."""

    public_key: Ed25519PublicKey
    kid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", jwk_thumbprint(self._bare_jwk()))

    def raw(self) -> bytes:
        """The 32-byte raw public key."""
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def _bare_jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(self.raw())}

    def to_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 8037) with ``kid``, ``alg`` and ``use``."""
        return {**self._bare_jwk(), "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerifyKey:
        """Read a public Ed25519 JWK; a ``kid`` in it must equal its thumbprint.

        Raises:
            InvalidInput: not an Ed25519 public JWK, it holds private material,
                or its ``kid`` is not its thumbprint.
        """
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise InvalidInput("JWK is not an Ed25519 key (kty OKP, crv Ed25519)")
        if "d" in jwk:
            raise InvalidInput("JWK holds a private key; publish only public keys")
        if "alg" in jwk and jwk["alg"] != "EdDSA":
            raise InvalidInput(f"JWK names alg {jwk['alg']!r}; only EdDSA is accepted")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise InvalidInput("JWK lacks the public key member 'x'")
        key = cls.from_raw(b64url_decode(x))
        if "kid" in jwk and jwk["kid"] != key.kid:
            raise InvalidInput(f"JWK kid {jwk['kid']!r} is not its RFC 7638 thumbprint {key.kid}")
        return key

    @classmethod
    def from_raw(cls, raw: bytes) -> VerifyKey:
        """Wrap a 32-byte raw Ed25519 public key.

        Raises:
            InvalidInput: the bytes are not 32 long.
        """
        if len(raw) != 32:
            raise InvalidInput(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check an Ed25519 signature over ``data``.

        Raises:
            BadSignature: the signature does not match.
        """
        try:
            self.public_key.verify(signature, data)
        except InvalidSignature:
            raise BadSignature(f"signature does not verify under key {self.kid}") from None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and the id of its public half."""

    private_key: Ed25519PrivateKey
    public: VerifyKey = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public", VerifyKey(self.private_key.public_key()))

    @property
    def kid(self) -> str:
        """The RFC 7638 thumbprint of the public key."""
        return self.public.kid

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's random source."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key for a 32-byte RFC 8032 seed (tests and vectors).

        Raises:
            InvalidInput: the seed is not 32 bytes.
        """
        if len(seed) != 32:
            raise InvalidInput(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


class KeySet(Mapping[str, VerifyKey]):
    """Verify keys by key id: the only place a verifier resolves a ``kid``."""

    def __init__(self, keys: Iterable[VerifyKey] = ()) -> None:
        self._keys: dict[str, VerifyKey] = {key.kid: key for key in keys}

    def __getitem__(self, kid: str) -> VerifyKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet({sorted(self._keys)!r})"

    def resolve(self, kid: str) -> VerifyKey:
        """The key with id ``kid``.

        Raises:
            UnknownKey: no trusted key has this id.
        """
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKey(f"key {kid!r} is not among the trusted keys") from None

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set document (RFC 7517 section 5) of these keys."""
        return {"keys": [self._keys[kid].to_jwk() for kid in sorted(self._keys)]}

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any]) -> KeySet:
        """Read a JWK Set; every key must be a public Ed25519 key.

        Raises:
            InvalidInput: the document is not a JWK Set or holds a bad key.
        """
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise InvalidInput("JWK Set lacks a 'keys' list")
        out = []
        for index, jwk in enumerate(keys):
            if not isinstance(jwk, Mapping):
                raise InvalidInput(f"JWK Set entry {index} is not an object")
            try:
                out.append(VerifyKey.from_jwk(jwk))
            except InvalidInput as exc:
                raise InvalidInput(f"JWK Set entry {index}: {exc}") from exc
        return cls(out)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_key_pem(key: PrivateKeyTypes, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of any private key, encrypted when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def load_private_key_pem(data: bytes, passphrase: bytes | None = None) -> PrivateKeyTypes:
    """Read a PEM private key of any type.

    Raises:
        InvalidInput: not a PEM private key, or the passphrase is wrong or missing.
    """
    try:
        return serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:
        raise InvalidInput(f"key passphrase: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(f"not a readable PEM private key (or wrong passphrase): {exc}") from exc


def save_signing_key(path: Path, key: SigningKey, passphrase: bytes | None = None) -> None:
    """Save a signing key as PKCS#8 PEM with mode 0600."""
    write_private_file(path, private_key_pem(key.private_key, passphrase))


def load_signing_key(path: Path, passphrase: bytes | None = None) -> SigningKey:
    """Load a signing key saved by :func:`save_signing_key`.

    Raises:
        InvalidInput: the file is not an Ed25519 private key, or the passphrase is wrong.
    """
    key = load_private_key_pem(Path(path).read_bytes(), passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} holds a {type(key).__name__}, not an Ed25519 signing key")
    return SigningKey(key)
