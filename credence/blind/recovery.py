"""Dropouts: removing the masks of agencies that did not answer (pure).

When agencies in ``missing`` do not answer, the answering agencies' masks
with them do not cancel. Each answering agency returns, signed, the sum of
the masks it applied with the missing ones (:func:`recovery_share`, with
the same signs as it applied them); the registry subtracts every share from
the sum of the answers (:func:`remove_recovery`) and reads the answering
agencies' plain sum. A share reveals nothing about an answer: it is made of
masks only, with agencies whose answers are not in the sum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from credence.blind.masks import signed_masks
from credence.blind.sums import MOD
from credence.errors import InvalidInput

__all__ = ["recovery_batch_share", "recovery_share", "remove_recovery"]


def recovery_share(
    own_id: str,
    missing: Sequence[str],
    *,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    query_id: str,
    length: int,
) -> list[int]:
    """The sum of ``own_id``'s masks with the ``missing`` agencies for ``query_id``.

    Raises:
        InvalidInput: ``own_id`` is itself missing, a missing agency is not in
            the audience, or a missing agency has no pair key.
    """
    if own_id in missing:
        raise InvalidInput(f"agency {own_id!r} answered and cannot be missing")
    return signed_masks(
        own_id=own_id,
        audience=audience,
        pair_keys=pair_keys,
        label=query_id,
        words=length,
        peers=missing,
    )


def recovery_batch_share(
    own_id: str,
    missing: Sequence[str],
    *,
    audience: Sequence[str],
    pair_keys: Mapping[str, bytes],
    batch_id: str,
    length: int,
    items: int,
) -> list[int]:
    """:func:`recovery_share` for a screening batch of ``items`` vectors (one flat list).

    Raises:
        InvalidInput: as :func:`recovery_share`.
    """
    return recovery_share(
        own_id,
        missing,
        audience=audience,
        pair_keys=pair_keys,
        query_id=batch_id,
        length=length * items,
    )


def remove_recovery(summed: Sequence[int], shares: Iterable[Sequence[int]]) -> list[int]:
    """``summed`` minus every share, mod 2^64.

    Raises:
        ValueError: a share's length is not the sum's.
    """
    result = list(summed)
    for share in shares:
        if len(share) != len(result):
            raise ValueError(f"a share of {len(share)} values does not fit a sum of {len(result)}")
        result = [(value - part) % MOD for value, part in zip(result, share, strict=True)]
    return result
