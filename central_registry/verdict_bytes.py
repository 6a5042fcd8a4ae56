"""Screening's verdicts as wire bytes: one shared template for the rows every agency cleared.

In a screened message most rows are the same verdict but for three fields:
every asked agency answered the one signed batch (so coverage and answer
hashes are the same for every row), none lists the subject, and requester,
purpose, kinds, times, grant and scorecard are the message's. Such a row's
verdict is the template's bytes (fields 4 and up, built once by
:func:`central_registry.aggregation.aggregate` from a real row) after its own
``verdict_id``, ``query_id`` and ``subject`` (fields 1 to 3): fields in
number order, the bytes protobuf itself writes for the same message, at a
fraction of the cost of a message per row. The signed ``VerdictBatch`` is
assembled from the rows' bytes the same way.

Only what the template cannot change is shared: a row whose outcomes differ
in any way aggregation looks at goes through :func:`aggregate` on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from credence.v1 import registry_pb2

__all__ = ["VerdictTemplate", "varint", "verdict_batch_bytes"]

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint."""
    if value < 0x80:  # ids, subjects and most lengths here: one byte
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((value,)) for value in range(0x80)]


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field: tag, length, bytes."""
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(len(data)) + data


class VerdictTemplate:
    """The bytes every row sharing one verdict's outcome has after its own three fields.

    Args:
        verdict: a row's verdict as :func:`central_registry.aggregation.aggregate`
            built it; every field but ``verdict_id``, ``query_id`` and
            ``subject`` is shared.

    Raises:
        ValueError: the verdict has no subject (every verdict names one).
    """

    __slots__ = ("_tail",)

    def __init__(self, verdict: registry_pb2.Verdict) -> None:
        if not verdict.HasField("subject"):
            raise ValueError("a template's verdict names a subject")
        shared = registry_pb2.Verdict()
        shared.CopyFrom(verdict)
        shared.ClearField("verdict_id")
        shared.ClearField("query_id")
        shared.ClearField("subject")
        self._tail = shared.SerializeToString()

    def row(self, verdict_id: str, query_id: str, subject_type: int, subject_ref: bytes) -> bytes:
        """One row's serialized ``Verdict``: its id, query and subject, then the template."""
        # Proto3 leaves zero and empty values out; so does this.
        subject = (b"\x08" + varint(subject_type) if subject_type else b"") + (
            _field(2, subject_ref) if subject_ref else b""
        )
        head = _field(3, subject)
        if query_id:
            head = _field(2, query_id.encode()) + head
        if verdict_id:
            head = _field(1, verdict_id.encode()) + head
        return head + self._tail


def verdict_batch_bytes(verdicts: Sequence[bytes]) -> bytes:
    """The serialized ``VerdictBatch`` holding the serialized ``verdicts`` in order."""
    return b"".join([_field(1, verdict) for verdict in verdicts])
