"""What the node kept of its masked answers: cleartext vectors and masks, per query or batch.

Answers leave the node masked (:mod:`credence.blind`). The node keeps, in
its ``answer_vectors`` table beside the query log, each answer's cleartext
vector(s) and the sum of the masks it added, as little-endian uint64 words:
its operator can open an answer when asked (``credence node open-answer``,
the evidence of issue 14's point 5), a recovery share is given only for a
query this node answered, and the audit knows which queries it answered.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agency_node.models import AnswerVectors
from credence.blind.sums import to_signed
from credence.errors import InvalidInput, NotFound

__all__ = ["KeptAnswer", "OpenedAnswer", "find_kept", "open_answer", "pack_words", "unpack_words"]

_WORD_BYTES = 8


def pack_words(values: Sequence[int]) -> bytes:
    """``values`` (each in 0..2^64-1) as little-endian uint64 words."""
    return struct.pack(f"<{len(values)}Q", *values)


def unpack_words(data: bytes) -> list[int]:
    """The little-endian uint64 words of ``data``.

    Raises:
        InvalidInput: ``data`` is not a whole number of words.
    """
    if len(data) % _WORD_BYTES:
        raise InvalidInput(f"{len(data)} bytes are not a whole number of 8-byte words")
    return list(struct.unpack(f"<{len(data) // _WORD_BYTES}Q", data))


@dataclass(frozen=True)
class KeptAnswer:
    """One masked answer as the node kept it."""

    query_id: str
    batch: bool
    layout_id: str
    audience: tuple[str, ...]
    #: A batch's item query ids in batch order; empty for a single query.
    item_ids: tuple[str, ...]
    vectors: bytes
    masks: bytes
    answered_at: datetime

    @property
    def words(self) -> int:
        """How many vector words the answer (every item of a batch) holds."""
        return len(self.vectors) // _WORD_BYTES


def _kept(row: AnswerVectors) -> KeptAnswer:
    return KeptAnswer(
        query_id=row.query_id,
        batch=row.batch,
        layout_id=row.layout_id,
        audience=tuple(name for name in row.audience.split(",") if name),
        item_ids=tuple(name for name in row.item_ids.split(",") if name),
        vectors=row.vectors,
        masks=row.masks,
        answered_at=row.answered_at,
    )


def find_kept(session: Session, query_id: str) -> KeptAnswer | None:
    """The kept answer of a query or batch id, or ``None`` when this node answered none."""
    row = session.get(AnswerVectors, query_id)
    return None if row is None else _kept(row)


@dataclass(frozen=True)
class OpenedAnswer:
    """One answer opened for an operator: the cleartext vector and the masks that hid it."""

    query_id: str
    #: The screening batch the answer was part of, if any.
    batch_id: str | None
    layout_id: str
    audience: tuple[str, ...]
    answered_at: datetime
    #: The cleartext vector, as signed integers.
    vector: tuple[int, ...]
    #: The masks added to it, mod 2^64.
    masks: tuple[int, ...]

    @property
    def masked(self) -> tuple[int, ...]:
        """The words that left the node: vector plus masks, mod 2^64."""
        return tuple((v + m) % (1 << 64) for v, m in zip(self.vector, self.masks, strict=True))


def open_answer(session: Session, query_id: str) -> OpenedAnswer:
    """The cleartext vector and masks of a single query's answer or of one batch item's.

    Raises:
        NotFound: this node kept no answer for ``query_id``.
    """
    kept = find_kept(session, query_id)
    index = 0
    if kept is None:
        # A batch item: the batch's row lists its item ids.
        for row in session.scalars(
            select(AnswerVectors).where(
                AnswerVectors.batch.is_(True), AnswerVectors.item_ids.contains(query_id)
            )
        ):
            candidate = _kept(row)
            if query_id in candidate.item_ids:
                kept, index = candidate, candidate.item_ids.index(query_id)
                break
    if kept is None:
        raise NotFound(
            f"this node kept no answer for {query_id!r}: it did not answer it, or refused it "
            "(see the query log)"
        )
    words = unpack_words(kept.vectors)
    masks = unpack_words(kept.masks)
    length = len(words) // max(len(kept.item_ids), 1) if kept.batch else len(words)
    start = index * length
    return OpenedAnswer(
        query_id=query_id,
        batch_id=kept.query_id if kept.batch else None,
        layout_id=kept.layout_id,
        audience=kept.audience,
        answered_at=kept.answered_at,
        vector=tuple(to_signed(word) for word in words[start : start + length]),
        masks=tuple(masks[start : start + length]),
    )
