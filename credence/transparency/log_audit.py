"""Checking the registry's transparency log from outside: heads, inclusion, consistency.

Nodes (in the background) and auditors (``credence audit``) use the same
checks. A tree head is a C2SP checkpoint (a signed note) and is only trusted
once its signature by the log key, under the log's origin, both from the
manifest (:class:`LogIdentity`), verifies; a proof's tree size always comes
from such a head, never from the prover (an inclusion proof for a small tree
can verify against a larger size). Every check raises; none returns a bool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from credence.errors import ClaimMismatch, CredenceError, RolledBack, UnknownKey
from credence.manifest import TrustedManifest
from credence.transparency import merkle, merkle_batch
from credence.transparency.checkpoint import open_checkpoint
from credence.transparency.note import ED25519_TYPE, vkey
from credence.v1 import registry_pb2, registry_pb2_grpc


@dataclass(frozen=True)
class LogIdentity:
    """Which log a checkpoint must come from: its origin and its Ed25519 public key."""

    origin: str
    public_key: bytes

    @property
    def vkey(self) -> str:
        """The log key as a C2SP note verifier key (Go's ``note.NewVerifier``)."""
        return vkey(self.origin, ED25519_TYPE, self.public_key)

    @classmethod
    def from_manifest(cls, manifest: TrustedManifest) -> LogIdentity:
        """The federation's log: the manifest's log origin and the key ``log_id`` names.

        Raises:
            UnknownKey: the manifest's log key id is not an unrevoked registry key.
        """
        key = manifest.registry_keys.get(manifest.registry.log_id)
        if key is None:
            raise UnknownKey(
                f"the manifest's log key {manifest.registry.log_id!r} is not among the "
                "registry's unrevoked signing keys"
            )
        return cls(origin=manifest.registry.log_origin, public_key=key.raw())


@dataclass(frozen=True)
class TrustedHead:
    """A checkpoint whose log signature verified."""

    tree_size: int
    root_hash: bytes
    origin: str
    #: The checkpoint note as received, every signature line kept.
    note: bytes

    def to_bytes(self) -> bytes:
        """The signed checkpoint, to save (``--since-head FILE``)."""
        return self.note


def open_tree_head(data: bytes, log: LogIdentity) -> TrustedHead:
    """Verify a checkpoint note against the log's origin and key.

    Raises:
        VerificationError: no valid signature by the log key under its origin.
        InvalidInput: malformed, or the checkpoint of another log.
        MessageTooLarge: over the note's bounds.
    """
    checkpoint, _ = open_checkpoint(data, log.origin, log.public_key)
    return TrustedHead(checkpoint.size, checkpoint.root_hash, checkpoint.origin, data)


def check_inclusion(
    head: TrustedHead, commitment: bytes, proof: registry_pb2.GetInclusionProofResponse
) -> int:
    """Check that ``commitment`` is a leaf of the tree ``head`` signs; returns its index.

    Raises:
        ClaimMismatch: the proof is for another tree size or does not verify.
    """
    if proof.tree_size != head.tree_size:
        raise ClaimMismatch(
            f"inclusion proof is for tree size {proof.tree_size}, the head signs {head.tree_size}"
        )
    merkle.verify_inclusion(
        merkle.leaf_hash(commitment), proof.leaf_index, head.tree_size, list(proof.path),
        head.root_hash,
    )  # fmt: skip
    return int(proof.leaf_index)


#: The most commitments one bulk proof request may carry (the registry refuses more).
MAX_PROOFS_PER_CALL = 1_000

MISSING_ENTRY = "missing_entry"
BAD_INCLUSION_PROOF = "bad_inclusion_proof"


@dataclass(frozen=True)
class BatchCheck:
    """What a bulk inclusion check found, by position in the commitments asked about."""

    #: Positions whose entry is proved to be in the tree the head signs.
    included: list[int]
    #: ``(position, kind, detail)`` for each entry that is not: its kind is
    #: :data:`MISSING_ENTRY` or :data:`BAD_INCLUSION_PROOF`.
    failed: list[tuple[int, str, str]]


def check_inclusions(
    head: TrustedHead,
    commitments: Sequence[bytes],
    response: registry_pb2.GetInclusionProofsResponse,
) -> BatchCheck:
    """Check the registry's proofs for many commitments against one signed head.

    Each proof is checked on its own, from the caller's own commitment (never an
    echo from the prover) and the head's size and root, so one missing or wrong
    entry is caught however many correct ones surround it.

    Raises:
        ClaimMismatch: the response is for another tree size or does not hold one
            proof per commitment (the whole batch is unusable).
    """
    if response.tree_size != head.tree_size:
        raise ClaimMismatch(
            f"inclusion proofs are for tree size {response.tree_size}, the head signs "
            f"{head.tree_size}"
        )
    if len(response.proofs) != len(commitments):
        raise ClaimMismatch(
            f"asked for {len(commitments)} inclusion proofs, the registry returned "
            f"{len(response.proofs)}"
        )
    verifier = merkle_batch.BatchVerifier(head.tree_size, head.root_hash)
    included: list[int] = []
    failed: list[tuple[int, str, str]] = []
    for position, (commitment, proof) in enumerate(zip(commitments, response.proofs, strict=True)):
        if not proof.included:
            failed.append(
                (position, MISSING_ENTRY,
                 f"promised entry {commitment.hex()[:16]}... is not in the log of "
                 f"{head.tree_size} entries")
            )  # fmt: skip
            continue
        try:
            verifier.verify(merkle.leaf_hash(commitment), proof.leaf_index, proof.path)
        except CredenceError as exc:
            failed.append((position, BAD_INCLUSION_PROOF, str(exc)))
        else:
            included.append(position)
    return BatchCheck(included, failed)


def check_consistency(old: TrustedHead, new: TrustedHead, path: list[bytes]) -> None:
    """Check that ``new`` extends ``old`` (append-only, nothing rewritten).

    Raises:
        RolledBack: the new head is smaller than the old one.
        ClaimMismatch: the proof does not verify.
    """
    if new.tree_size < old.tree_size:
        raise RolledBack(
            f"the log shrank from {old.tree_size} to {new.tree_size} entries: it was rewritten"
        )
    merkle.verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, path)


class LogClient:
    """The registry's TransparencyLogService over TLS (the public port)."""

    def __init__(
        self, address: str, credentials: grpc.ChannelCredentials, timeout: float = 10
    ) -> None:
        self._channel = grpc.secure_channel(address, credentials)
        self._stub = registry_pb2_grpc.TransparencyLogServiceStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def tree_head(self, log: LogIdentity) -> TrustedHead:
        """The current checkpoint, verified.

        Raises:
            VerificationError: not signed by the log key under its origin.
            InvalidInput: malformed, or another log's checkpoint.
        """
        response = self._stub.GetTreeHead(registry_pb2.GetTreeHeadRequest(), timeout=self._timeout)
        return open_tree_head(response.checkpoint, log)

    def cosigned_checkpoint(self) -> bytes:
        """The latest checkpoint a quorum of witnesses cosigned, unverified; empty if none yet.

        Verify it with :func:`credence.transparency.witness_policy.verify_cosigned`.
        """
        response = self._stub.GetTreeHead(registry_pb2.GetTreeHeadRequest(), timeout=self._timeout)
        return bytes(response.cosigned_checkpoint)

    def inclusion(
        self, commitment: bytes, tree_size: int
    ) -> registry_pb2.GetInclusionProofResponse:
        """The registry's inclusion proof (check it with :func:`check_inclusion`)."""
        return self._stub.GetInclusionProof(
            registry_pb2.GetInclusionProofRequest(entry_commitment=commitment, tree_size=tree_size),
            timeout=self._timeout,
        )

    def inclusion_proofs(
        self, commitments: Sequence[bytes], tree_size: int
    ) -> registry_pb2.GetInclusionProofsResponse:
        """The registry's proofs for up to :data:`MAX_PROOFS_PER_CALL` commitments.

        Check them with :func:`check_inclusions`.
        """
        return self._stub.GetInclusionProofs(
            registry_pb2.GetInclusionProofsRequest(
                entry_commitments=commitments, tree_size=tree_size
            ),
            timeout=self._timeout,
        )

    def inclusion_proofs_later(
        self, commitments: Sequence[bytes], tree_size: int
    ) -> Callable[[], registry_pb2.GetInclusionProofsResponse]:
        """Send :meth:`inclusion_proofs` now; the returned call waits for the answer.

        Lets a caller check one batch while the registry proves the next.
        """
        future = self._stub.GetInclusionProofs.future(
            registry_pb2.GetInclusionProofsRequest(
                entry_commitments=commitments, tree_size=tree_size
            ),
            timeout=self._timeout,
        )
        return future.result

    def consistency(self, first: int, second: int) -> list[bytes]:
        """The registry's consistency proof (check it with :func:`check_consistency`)."""
        response = self._stub.GetConsistencyProof(
            registry_pb2.GetConsistencyProofRequest(first=first, second=second),
            timeout=self._timeout,
        )
        return list(response.path)


@contextmanager
def log_client(
    address: str, credentials: grpc.ChannelCredentials, timeout: float = 10
) -> Iterator[LogClient]:
    """A :class:`LogClient` closed on exit."""
    client = LogClient(address, credentials, timeout)
    try:
        yield client
    finally:
        client.close()
