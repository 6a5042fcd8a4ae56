"""The shape of a member's request, checked before the registry writes anything for it.

A hostile member controls every byte of its requests. These pure checks bound
what a lookup request may hold (each repeated field deduplicated and bounded,
each string bounded by the size the protocol gives it), so that nothing the
registry derives from a request, a log row above all, can grow with input the
request was not entitled to send. A request of the wrong shape is refused as a
whole, naming the field and the limit.

What the registry writes for a refusal is bounded here too: the kinds become
the validated kinds or none at all (readers parse the column as kind numbers,
so a marker word would break them; the reason says what was wrong), the reason at most
:data:`MAX_REASON_CHARS` characters, and a message logs at most
:func:`refusal_row_budget` refusal rows, so that the database grows by at most
:data:`AMPLIFICATION_LIMIT` times the bytes the request carried.
"""

from __future__ import annotations

from collections.abc import Sequence

from credence import names
from credence.errors import InvalidInput
from credence.grants.tokens import CONSENT_MAX_SIZE, MANDATE_MAX_SIZE
from credence.v1 import agency_pb2, common_pb2, registry_pb2

__all__ = [
    "AMPLIFICATION_LIMIT",
    "MAX_KINDS",
    "MAX_REASON_CHARS",
    "MAX_ROW_KEY_CHARS",
    "REFUSAL_ROW_BYTES",
    "bounded_reason",
    "check_kinds",
    "check_screen_message",
    "check_verdict_request",
    "refusal_kinds",
    "refusal_row_budget",
]

#: Each known verdict kind at most once.
MAX_KINDS = len(names.KIND_NAMES)
#: A row key is the caller's own label, echoed in the row's result.
MAX_ROW_KEY_CHARS = 256
#: A subject reference is an HMAC-SHA256: 32 bytes.
SUBJECT_REF_BYTES = 32
#: The longest reason a refusal row keeps.
MAX_REASON_CHARS = 200
#: Bytes the registry database may grow by per byte a request carried.
AMPLIFICATION_LIMIT = 2
#: What one refusal row costs the database at most, indexes and Merkle nodes
#: included (measured with a 140-character reason: ~570 bytes on SQLite, ~860
#: on PostgreSQL; ``python -m bench.bench_amplification --postgres-url URL``),
#: rounded up.
REFUSAL_ROW_BYTES = 1024

_KNOWN_PURPOSES = frozenset(common_pb2.Purpose.values()) - {common_pb2.PURPOSE_UNSPECIFIED}


def check_kinds(kinds: Sequence[int]) -> tuple[int, ...]:
    """The asked verdict kinds: 1 to :data:`MAX_KINDS` known kinds, each once.

    A repeated kind is refused rather than deduplicated: the caller's request
    is wrong, and saying so beats guessing what it meant.

    Raises:
        InvalidInput: none, too many, an unknown kind or one asked twice.
    """
    if not kinds:
        raise InvalidInput("ask for at least one verdict kind (blacklist, credit)")
    if len(kinds) > MAX_KINDS:
        raise InvalidInput(
            f"{len(kinds)} verdict kinds asked; ask for each of the {MAX_KINDS} known kinds "
            f"at most once"
        )
    if len(set(kinds)) != len(kinds):
        raise InvalidInput("each verdict kind may be asked once")
    for kind in kinds:
        names.kind_name(kind)  # raises InvalidInput naming the unknown value
    return tuple(kinds)


def _check_purpose(purpose: int) -> None:
    if purpose not in _KNOWN_PURPOSES:
        names.purpose_name(purpose)  # raises InvalidInput naming the value
        raise InvalidInput(f"purpose {purpose} is not a purpose a lookup may name")


def _check_subject(subject: common_pb2.SubjectRef, where: str) -> None:
    if len(subject.ref) > SUBJECT_REF_BYTES:
        raise InvalidInput(
            f"{where}subject reference is {len(subject.ref)} bytes; it must be "
            f"{SUBJECT_REF_BYTES} (HMAC-SHA256)"
        )


def _check_grant(grant: agency_pb2.Grant, where: str) -> None:
    for name, value, limit in (
        ("consent token", grant.consent_token, CONSENT_MAX_SIZE),
        ("mandate token", grant.mandate_token, MANDATE_MAX_SIZE),
    ):
        if len(value) > limit:
            raise InvalidInput(
                f"{where}{name} is {len(value)} characters, over the limit of {limit}"
            )


def check_verdict_request(request: registry_pb2.RequestVerdictRequest) -> None:
    """The shape of a ``RequestVerdict``: kinds, purpose, subject and grant bounded.

    Raises:
        InvalidInput: a field is out of its bounds; the message names it.
    """
    check_kinds(request.kinds)
    _check_purpose(request.purpose)
    _check_subject(request.subject, "")
    _check_grant(request.grant, "")


def check_screen_message(message: registry_pb2.ScreenBatchRequest, max_rows: int) -> None:
    """The shape of one ``ScreenBatch`` message, every row included.

    Raises:
        InvalidInput: too many rows, or a field of the message or of a row is
            out of its bounds; the message names the row.
    """
    if len(message.items) > max_rows:
        raise InvalidInput(
            f"a screening message holds {len(message.items)} rows, over the limit of "
            f"{max_rows}: send smaller messages"
        )
    check_kinds(message.kinds)
    _check_purpose(message.purpose)
    for index, item in enumerate(message.items):
        where = f"row {index}: "
        if len(item.row_key) > MAX_ROW_KEY_CHARS:
            raise InvalidInput(
                f"{where}row key is {len(item.row_key)} characters, over the limit of "
                f"{MAX_ROW_KEY_CHARS}"
            )
        _check_subject(item.subject, where)
        _check_grant(item.grant, where)


def refusal_kinds(kinds: Sequence[int]) -> tuple[int, ...]:
    """What a refusal row records as the kinds: the validated kinds, or none."""
    try:
        return check_kinds(kinds)
    except InvalidInput:
        return ()


def bounded_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_CHARS` characters, marked when cut."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "\u2026"


def refusal_row_budget(request_bytes: int) -> int:
    """How many refusal rows a request of ``request_bytes`` may add to the log.

    The rows may cost the database at most :data:`AMPLIFICATION_LIMIT` times
    what the request carried, and one refused lookup is always logged, so
    that a subject sees a single attempt.
    """
    return max(1, AMPLIFICATION_LIMIT * request_bytes // REFUSAL_ROW_BYTES)
