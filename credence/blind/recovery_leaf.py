"""The log leaf of a recovery: the registry's witnessed claim that an agency did not answer.

Before the registry asks the answering agencies for their masks with a
missing set (:mod:`credence.blind.recovery`), it appends to its transparency
log one leaf per missing agency (docs/protocol.md section 10)::

    SHA-256("credence/recovery/v1" || 0x00 || query_or_batch_id || 0x00 || missing_agency_id)

Every answering node recomputes these leaves from the request and refuses a
request that does not promise exactly them; every agency looks, in the
log's entry bundles, for its own leaf of each query it answered: a hit means
the registry claimed it missing for a query it answered, the one way the
registry could read its answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["RECOVERY_LEAF_DOMAIN", "recovery_leaf", "recovery_leaves"]

RECOVERY_LEAF_DOMAIN = b"credence/recovery/v1"


def recovery_leaf(query_id: str, missing_agency: str) -> bytes:
    """The 32-byte log leaf that says ``missing_agency`` did not answer ``query_id``.

    ``query_id`` is a single query's id or a screening batch's id.
    """
    return hashlib.sha256(
        b"\x00".join(
            (RECOVERY_LEAF_DOMAIN, query_id.encode("utf-8"), missing_agency.encode("utf-8"))
        )
    ).digest()


def recovery_leaves(query_id: str, missing: Iterable[str]) -> list[bytes]:
    """The leaves of a recovery request, one per missing agency in sorted order."""
    return [recovery_leaf(query_id, agency) for agency in sorted(missing)]
