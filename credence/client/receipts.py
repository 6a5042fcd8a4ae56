"""Receipts for subjects: a tlog-proof per lookup, from the registry's tiles.

``credence me lookups --proofs DIR`` writes, for each lookup the registry
lists for the subject, ``DIR/<query id>.tlog-proof``: the log entry (its
salted commitment), its inclusion proof and the cosigned checkpoint
(:mod:`credence.transparency.tlog_proof`). Each receipt is built from tiles
checked against the checkpoint's root and verified before it is written, so
a receipt on disk verifies offline under the manifest's log key and witness
quorum; ``credence verdict check --log-proof`` checks one beside a verdict.

A lookup logged after the latest cosigned checkpoint has no receipt yet: it
is listed as pending (ask again after the merge delay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from credence.envelope import Envelope
from credence.errors import InvalidInput, Unavailable
from credence.keys import KeySet
from credence.manifest import TrustedManifest
from credence.transparency.log_promise import open_promise
from credence.transparency.tile_reader import TileReader
from credence.transparency.tlog_proof import (
    format_tlog_proof,
    parse_tlog_proof,
    prove_from_tiles,
    verify_tlog_proof,
)
from credence.transparency.witness_policy import (
    Cosigned,
    WitnessPolicy,
    policy_from_manifest,
    verify_cosigned,
)
from credence.v1 import registry_pb2

__all__ = ["RECEIPT_SUFFIX", "Receipts", "check_verdict_receipt", "save_receipts"]

#: The file extension C2SP recommends for tlog-proofs.
RECEIPT_SUFFIX = ".tlog-proof"


@dataclass
class Receipts:
    """What :func:`save_receipts` wrote, and what it could not yet."""

    cosigned: Cosigned | None = None
    saved: list[Path] = field(default_factory=list)
    #: Query ids logged after the cosigned checkpoint.
    pending: list[str] = field(default_factory=list)


def save_receipts(
    lookups: Sequence[registry_pb2.LookupRecord],
    *,
    note: bytes,
    tiles: TileReader,
    policy: WitnessPolicy,
    directory: Path,
    now: datetime,
) -> Receipts:
    """Write a verified tlog-proof for each lookup into ``directory``.

    ``note`` is the log's latest cosigned checkpoint (``GetTreeHead``'s
    ``cosigned_checkpoint``); the receipts prove inclusion in it.

    Raises:
        Unavailable: the registry's HTTP side could not be reached, or it has
            published no cosigned checkpoint yet.
        VerificationError: the checkpoint is not the log's or lacks its witness
            quorum, or a tile does not hash to its root.
        InvalidInput: the checkpoint or a tile is malformed.
    """
    if not note:
        raise Unavailable(
            "the registry has published no cosigned checkpoint yet: no receipt can be made; "
            "try again once its witnesses have cosigned one"
        )
    cosigned = verify_cosigned(note, policy, now=now)
    checkpoint = cosigned.checkpoint
    tree = tiles.tree(checkpoint.size, checkpoint.root_hash)
    result = Receipts(cosigned=cosigned)
    directory.mkdir(parents=True, exist_ok=True)
    for lookup in lookups:
        if lookup.log_index >= checkpoint.size:
            result.pending.append(lookup.query_id)
            continue
        receipt = prove_from_tiles(tree, lookup.log_index, note)
        # Checked as a reader will check it: nothing unverifiable is handed over.
        verify_tlog_proof(receipt, policy, now=now)
        path = directory / f"{_file_name(lookup.query_id)}{RECEIPT_SUFFIX}"
        path.write_bytes(format_tlog_proof(receipt))
        result.saved.append(path)
    return result


def _file_name(query_id: str) -> str:
    # Query ids are the registry's; keep a file name out of other directories.
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in query_id)


def check_verdict_receipt(
    verdict: registry_pb2.Verdict, receipt: bytes, manifest: TrustedManifest, *, now: datetime
) -> tuple[Cosigned, int]:
    """Check offline that a (verified) verdict's lookup is in the witnessed log.

    The verdict's log promise, signed by the log key, names the entry; the
    receipt must prove exactly that entry included in a checkpoint signed by
    the log and cosigned by the manifest's witness quorum.

    Returns:
        The cosigned checkpoint and the entry's leaf index.

    Raises:
        InvalidInput: the verdict carries no log promise, or the receipt is malformed.
        VerificationError: the promise or checkpoint is not the log's, the quorum
            is not met, or the receipt proves another entry or does not verify.
    """
    if not verdict.HasField("log_promise"):
        raise InvalidInput(f"verdict {verdict.verdict_id} carries no log promise to check")
    log_keys = KeySet(
        key for kid, key in manifest.registry_keys.items() if kid == manifest.registry.log_id
    )
    promise = open_promise(Envelope.from_proto(verdict.log_promise), log_keys)
    proof = parse_tlog_proof(receipt)
    cosigned = verify_tlog_proof(
        proof, policy_from_manifest(manifest), now=now, expected_entry=promise.entry_commitment
    )
    return cosigned, proof.index
