"""Auditing the log from outside: the latest checkpoint, its witnesses, its tiles, its past.

``credence audit log`` runs :func:`audit_checkpoint` over what the registry's
HTTP side serves: the latest checkpoint must carry the log's signature and the
manifest's quorum of witness cosignatures, its right-edge tiles must hash to
its root, and it must extend the checkpoint the auditor saved last time (an
RFC 9162 consistency proof computed from the new tree's tiles, checked
against the old root), so a log that was rewritten, or shows this auditor
another view than the one it showed before, is caught.

The tiles come through a function the caller passes (a
:class:`credence.transparency.tile_reader.TileReader`'s ``tree``); the
checks are this module's, ``now`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from credence.errors import ClaimMismatch, RolledBack
from credence.transparency import merkle
from credence.transparency.checkpoint import Checkpoint, open_checkpoint
from credence.transparency.tile_tree import TileTree
from credence.transparency.witness_policy import Cosigned, WitnessPolicy, verify_cosigned

__all__ = ["LogAudit", "audit_checkpoint"]

OpenTree = Callable[[int, bytes], TileTree]


@dataclass(frozen=True)
class LogAudit:
    """What an audit found: the new cosigned checkpoint and the saved one it extends."""

    cosigned: Cosigned
    #: The checkpoint saved before, or ``None`` on the first run.
    previous: Checkpoint | None
    #: How many hashes the consistency proof had.
    proof_length: int


def audit_checkpoint(
    note: bytes,
    policy: WitnessPolicy,
    open_tree: OpenTree,
    *,
    saved: bytes | None,
    now: datetime,
) -> LogAudit:
    """Check the latest checkpoint note against the policy, its tiles and the saved one.

    Raises:
        InvalidInput: a checkpoint is malformed or another log's.
        BadSignature: the log's signature does not verify.
        QuorumNotMet: fewer witnesses than the policy's quorum cosigned it.
        RolledBack: the log is smaller than the saved checkpoint.
        ClaimMismatch: the tiles do not hash to the root, or the log does not
            extend the saved checkpoint (a fork or split view).
    """
    cosigned = verify_cosigned(note, policy, now=now)
    new = cosigned.checkpoint
    tree = open_tree(new.size, new.root_hash)
    tree.check_root()
    if saved is None:
        return LogAudit(cosigned, None, 0)
    old, _ = open_checkpoint(saved, policy.origin, policy.log_public_key)
    if new.size < old.size:
        raise RolledBack(
            f"the log's checkpoint is of {new.size} entries, smaller than the {old.size} "
            "saved before: the log was rewritten"
        )
    proof = tree.consistency_proof(old.size)
    try:
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except ClaimMismatch as exc:
        raise ClaimMismatch(
            f"the log of {new.size} entries does not extend the checkpoint of {old.size} "
            f"saved before (a fork, or another view than the one shown before): {exc}"
        ) from exc
    return LogAudit(cosigned, old, len(proof))
