"""Pairwise masks: each answer hides under masks that cancel in the audience's sum (pure).

For a query with audience A, agency i adds ``mask_stream(k_ij, query id)`` for
every j in A sorted after i and subtracts it for every j sorted before i, all
mod 2^64, so the masks cancel when every member's vector is added and no
single vector can be read. ``k_ij`` (:func:`pair_key`) is HKDF-SHA256 over the
X25519 shared secret of i and j, with the federation id and the sorted pair in
the info, so both ends derive the same key and no other pair does.

The keystream is AES-256-CTR under the pair key with the first 16 bytes of
SHA-256(query id) as the initial counter block, read as little-endian uint64
words. A screening message takes one stream per pair for the whole batch
(:func:`mask_batch`): item k uses words ``k*length .. (k+1)*length - 1``.

Key files hold the X25519 private key as PKCS#8 PEM, mode 0600, like the
signing key.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credence.errors import InvalidInput
from credence.keys import load_private_key_pem, private_key_pem, write_private_file

__all__ = [
    "PAIR_INFO_PREFIX",
    "agreement_key",
    "load_agreement_key",
    "mask_batch",
    "mask_stream",
    "mask_vector",
    "pair_key",
    "public_bytes",
    "save_agreement_key",
    "signed_masks",
]

#: Prefix of the HKDF info of a pair key.
PAIR_INFO_PREFIX = b"credence/blind/v1|"
_MOD = 1 << 64
_WORD = _MOD - 1
_KEY_BYTES = 32


def agreement_key() -> X25519PrivateKey:
    """A fresh X25519 key agreement key."""
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public key, as the manifest publishes them."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def save_agreement_key(path: Path, key: X25519PrivateKey, passphrase: bytes | None = None) -> None:
    """Save ``key`` as PKCS#8 PEM with mode 0600."""
    write_private_file(path, private_key_pem(key, passphrase))


def load_agreement_key(path: Path, passphrase: bytes | None = None) -> X25519PrivateKey:
    """Load a key saved by :func:`save_agreement_key`.

    Raises:
        InvalidInput: the file is not an X25519 private key, or the passphrase is wrong.
    """
    key = load_private_key_pem(Path(path).read_bytes(), passphrase)
    if not isinstance(key, X25519PrivateKey):
        raise InvalidInput(f"{path} holds a {type(key).__name__}, not an X25519 agreement key")
    return key


def pair_key(
    own: X25519PrivateKey, peer_public: bytes, *, federation_id: str, own_id: str, peer_id: str
) -> bytes:
    """The 32-byte key agency ``own_id`` shares with ``peer_id`` (the same from both ends).

    HKDF-SHA256 (no salt) over X25519(own, peer) with info
    ``b"credence/blind/v1|" + federation_id + "|" + min(ids) + "|" + max(ids)``.

    Raises:
        InvalidInput: the ids are equal, or ``peer_public`` is not a usable
            X25519 public key (wrong length, or a low-order point).
    """
    if own_id == peer_id:
        raise InvalidInput(f"agency {own_id!r} has no pair key with itself")
    if len(peer_public) != _KEY_BYTES:
        raise InvalidInput(
            f"agreement key of {peer_id!r} is {len(peer_public)} bytes; X25519 keys are 32"
        )
    try:
        secret = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise InvalidInput(f"agreement key of {peer_id!r} is not usable: {exc}") from exc
    low, high = sorted((own_id, peer_id))
    info = PAIR_INFO_PREFIX + f"{federation_id}|{low}|{high}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=info).derive(secret)


def _keystream(key: bytes, label: str, words: int) -> bytes:
    nonce = hashlib.sha256(label.encode()).digest()[:16]
    encryptor = Cipher(algorithms.AES256(key), modes.CTR(nonce)).encryptor()
    return encryptor.update(bytes(8 * words))


def mask_stream(pair_key: bytes, query_id: str, count: int) -> list[int]:
    """``count`` mask words of a pair for one query (or batch) id.

    Raises:
        InvalidInput: ``pair_key`` is not 32 bytes.
    """
    if len(pair_key) != _KEY_BYTES:
        raise InvalidInput(f"a pair key is 32 bytes, got {len(pair_key)}")
    return list(struct.unpack(f"<{count}Q", _keystream(pair_key, query_id, count)))


@functools.lru_cache(maxsize=32)
def _word_masks(words: int) -> tuple[int, int, int, int]:
    """Masks and lifts for ``words`` 64-bit words: (even words, odd words, lifts).

    The lifts put 2^64 above every even (resp. odd) word: added ``n`` times,
    they keep a lane that ``n`` streams were subtracted from non-negative.
    """
    every_other = ((1 << (128 * ((words + 2) // 2))) - 1) // ((1 << 128) - 1)
    even = every_other * _WORD
    odd = even << 64
    top = (1 << (64 * words)) - 1
    return even & top, odd & top, every_other << 64, every_other << 128


def _pack(values: Iterable[int], words: int) -> bytes:
    """``words`` integers as little-endian 64-bit words, each taken mod 2^64."""
    values = list(values)
    if len(values) != words:
        raise InvalidInput(f"expected {words} vector values, got {len(values)}")
    try:
        return struct.pack(f"<{words}q", *values)
    except struct.error:
        return struct.pack(f"<{words}Q", *(value % _MOD for value in values))


def _masked_words(
    base: bytes | None,
    *,
    own_id: str,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    label: str,
    words: int,
    peers: Iterable[str] | None = None,
) -> tuple[int, ...]:
    """``base`` (or zeros) plus ``own_id``'s masks, word by word mod 2^64.

    Each peer's stream is added when the peer sorts after ``own_id`` and
    subtracted when before. The words are added as big integers, a few
    C-speed operations per peer instead of Python operations per word. The
    even-numbered words are summed apart from the whole (masked out of each
    stream), so each word's sum has the next word free to carry into: the
    even words' sum and the whole minus it (the odd words') are read word by
    word, and no carry crosses from one word's sum into another's.

    Raises:
        InvalidInput: ``own_id`` or a peer is not in the audience, or a peer has
            no pair key.
    """
    members = set(audience)
    if own_id not in members:
        raise InvalidInput(f"agency {own_id!r} is not in the query's audience")
    chosen = sorted(members - {own_id} if peers is None else set(peers))
    if own_id in chosen:
        raise InvalidInput(f"agency {own_id!r} shares no mask with itself")
    if not words:
        return ()
    even_words, odd_words, even_lift, odd_lift = _word_masks(words)
    total = even = 0
    if base is not None:
        total = int.from_bytes(base, "little")
        even = total & even_words
    subtracted = 0
    for peer in chosen:
        if peer not in members:
            raise InvalidInput(f"{peer!r} is not in the query's audience")
        key = pair_keys.get(peer)
        if key is None:
            raise InvalidInput(f"no pair key for audience member {peer!r}")
        if len(key) != _KEY_BYTES:
            raise InvalidInput(f"the pair key for {peer!r} is {len(key)} bytes, not 32")
        number = int.from_bytes(_keystream(key, label, words), "little")
        if peer > own_id:
            total += number
            even += number & even_words
        else:
            total -= number
            even -= number & even_words
            subtracted += 1
    # total - even is the exact sum of the odd words in place: each word's sum,
    # lifted to stay non-negative, carries only into the word above it.
    odd = total - even + subtracted * odd_lift
    even += subtracted * even_lift
    result = (even & even_words) | (odd & odd_words)
    return struct.unpack(f"<{words}Q", result.to_bytes(8 * words, "little"))


def signed_masks(
    *,
    own_id: str,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    label: str,
    words: int,
    peers: Sequence[str] | None = None,
) -> list[int]:
    """The sum mod 2^64 of the masks ``own_id`` applies, ``words`` words long.

    Each peer's stream is added when the peer sorts after ``own_id`` and
    subtracted when before. ``peers`` restricts the sum to those members (a
    recovery share); by default every other audience member counts.

    Raises:
        InvalidInput: ``own_id`` or a peer is not in the audience, or a peer has
            no pair key.
    """
    return list(
        _masked_words(
            None,
            own_id=own_id,
            audience=audience,
            pair_keys=pair_keys,
            label=label,
            words=words,
            peers=peers,
        )
    )


def mask_vector(
    vector: Sequence[int],
    *,
    own_id: str,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    query_id: str,
) -> list[int]:
    """``vector`` mod 2^64 plus ``own_id``'s masks for ``query_id``.

    Raises:
        InvalidInput: ``own_id`` is not in the audience or a member has no pair key.
    """
    words = len(vector)
    return list(
        _masked_words(
            _pack(vector, words),
            own_id=own_id,
            audience=audience,
            pair_keys=pair_keys,
            label=query_id,
            words=words,
        )
    )


def mask_batch(
    vectors: Sequence[Sequence[int]],
    *,
    own_id: str,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    batch_id: str,
) -> list[list[int]]:
    """Mask every item of a screening batch with one keystream per pair for ``batch_id``.

    Raises:
        InvalidInput: the vectors differ in length, ``own_id`` is not in the
            audience or a member has no pair key.
    """
    if not vectors:
        return []
    length = len(vectors[0])
    if any(len(vector) != length for vector in vectors):
        raise InvalidInput("every vector of a batch must have the layout's length")
    words = length * len(vectors)
    masked = _masked_words(
        _pack(itertools.chain.from_iterable(vectors), words),
        own_id=own_id,
        audience=audience,
        pair_keys=pair_keys,
        label=batch_id,
        words=words,
    )
    return [list(masked[start : start + length]) for start in range(0, words, length)]
