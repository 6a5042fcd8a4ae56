"""The rows of the log, built in one place: one constructor per kind of row.

A row holds no raw identifier. Every value is held to its column's size here,
on both backends (SQLite does not enforce ``VARCHAR`` lengths): identifiers
that do not fit are refused, a refusal's reason is cut to
:data:`central_registry.limits.request_shape.MAX_REASON_CHARS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from central_registry.limits.request_shape import bounded_reason, refusal_kinds
from central_registry.models import LogEntry
from credence import queries
from credence.blind.recovery_leaf import recovery_leaf
from credence.errors import CredenceError, InvalidInput
from credence.rpc.status import reason_for, status_for
from credence.transparency import log_promise
from credence.v1 import common_pb2

__all__ = [
    "MAX_BASIS_CHARS",
    "OUTCOME_DISPATCHED",
    "OUTCOME_REFUSED",
    "LogRow",
    "dispatched_row",
    "entry_row",
    "kinds_column",
    "recovery_row",
    "refused_row",
    "review_row",
]

OUTCOME_DISPATCHED = "dispatched"
OUTCOME_REFUSED = "refused"
#: ``basis`` is ``consent <id>``, ``mandate <statute / case>`` (each at most 256
#: characters in the token) or ``public register``.
MAX_BASIS_CHARS = 600


def _column_length(name: str) -> int:
    length = getattr(LogEntry.__table__.c[name].type, "length", None)
    assert isinstance(length, int), f"log_entries.{name} has no length"
    return length


#: The bounded text columns and their sizes, read from the model: one source of truth.
_TEXT_LIMITS = {
    name: _column_length(name) for name in ("query_id", "requester", "kinds", "grant_id", "outcome")
}


@dataclass(frozen=True, slots=True)
class LogRow:
    """One entry to append. Holds no raw identifier."""

    query_id: str
    requester: str
    subject_type: int
    subject_ref: bytes
    purpose: int
    kinds: str
    grant_id: str
    basis: str
    outcome: str
    reason: str
    issued_at: datetime
    salt: bytes
    commitment: bytes
    embargo_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.outcome not in (OUTCOME_DISPATCHED, OUTCOME_REFUSED):
            raise InvalidInput(f"log outcome must be dispatched or refused, got {self.outcome!r}")
        for name, limit in (*_TEXT_LIMITS.items(), ("basis", MAX_BASIS_CHARS)):
            value = getattr(self, name)
            if len(value) > limit:
                raise InvalidInput(
                    f"log entry {name} is {len(value)} characters, over its column's "
                    f"{limit}: refuse the request before logging it"
                )
        # A reason describes; cutting it loses nothing a subject or auditor relies on.
        object.__setattr__(self, "reason", bounded_reason(self.reason))
        for name, value, size in (
            ("subject reference", self.subject_ref, 32),
            ("salt", self.salt, 16),
            ("commitment", self.commitment, 32),
        ):
            if len(value) != size:
                raise InvalidInput(f"log entry {name} must be {size} bytes, got {len(value)}")


def kinds_column(kinds: Sequence[int]) -> str:
    """The ``kinds`` column of a row: the verdict kind numbers, comma-separated."""
    return ",".join(str(kind) for kind in kinds)


def dispatched_row(
    *,
    query_id: str,
    requester: str,
    subject_type: int,
    subject_ref: bytes,
    purpose: int,
    kinds: Sequence[int],
    grant_id: str,
    issued_at: datetime,
    salt: bytes,
    commitment: bytes,
    basis: str,
    embargo_until: datetime | None,
) -> LogRow:
    """The row of a lookup sent to the nodes, under the commitment its promise carries.

    Args:
        query_id: the query's id.
        requester: the member that asked.
        subject_type: the subject's type (proto ``SubjectType`` value).
        subject_ref: the 32-byte subject reference.
        purpose: the purpose (proto value).
        kinds: the verdict kinds asked.
        grant_id: the grant's id; empty on the public-register basis.
        issued_at: the lookup time.
        salt: the 16-byte salt of the commitment.
        commitment: the salted commitment to the entry, the tree's leaf.
        basis: what allowed the lookup (``consent <id>``, ``mandate ...``, ``public register``).
        embargo_until: until when the subject does not see it (mandates), else None.

    Raises:
        InvalidInput: a value does not fit its column.
    """
    return LogRow(
        query_id=query_id,
        requester=requester,
        subject_type=subject_type,
        subject_ref=subject_ref,
        purpose=purpose,
        kinds=kinds_column(kinds),
        grant_id=grant_id,
        basis=basis,
        outcome=OUTCOME_DISPATCHED,
        reason="",
        issued_at=issued_at,
        salt=salt,
        commitment=commitment,
        embargo_until=embargo_until,
    )


def entry_row(
    entry: log_promise.LogEntry, salt: bytes, *, basis: str, embargo_until: datetime | None
) -> LogRow:
    """The dispatched row of one log ``entry`` under ``salt``: its commitment computed here.

    Screening builds its rows with a commitment encoder shared across a
    message instead (:func:`dispatched_row`); a single lookup has its entry.

    Raises:
        InvalidInput: a value does not fit its column.
    """
    return dispatched_row(
        query_id=entry.query_id,
        requester=entry.requester,
        subject_type=entry.subject_type,
        subject_ref=entry.subject_ref,
        purpose=entry.purpose,
        kinds=entry.kinds,
        grant_id=entry.grant_id,
        issued_at=entry.issued_at,
        salt=salt,
        commitment=log_promise.entry_commitment(salt, entry),
        basis=basis,
        embargo_until=embargo_until,
    )


def refused_row(
    requester: str,
    subject: common_pb2.SubjectRef,
    *,
    purpose: int,
    kinds: Sequence[int],
    error: CredenceError,
    now: datetime,
) -> LogRow | None:
    """The row of a refused lookup, or None when nothing identifiable was asked about.

    What was refused and why, never a copy of what the request carried: the
    kinds only when they are valid kinds, the reason bounded.

    Raises:
        InvalidInput: the requester does not fit its column.
    """
    if len(subject.ref) != 32 or subject.type not in (1, 2):
        return None  # nothing identifiable to log
    kinds = refusal_kinds(kinds)
    salt = log_promise.new_salt()
    entry = log_promise.LogEntry(
        query_id=queries.new_query_id(),
        requester=requester,
        subject_type=subject.type,
        subject_ref=bytes(subject.ref),
        purpose=purpose,
        kinds=tuple(kinds),
        grant_id="",
        issued_at=now,
        outcome=OUTCOME_REFUSED,
    )
    return LogRow(
        query_id=entry.query_id,
        requester=requester,
        subject_type=subject.type,
        subject_ref=bytes(subject.ref),
        purpose=purpose,
        kinds=kinds_column(kinds),
        grant_id="",
        basis="",
        outcome=OUTCOME_REFUSED,
        reason=bounded_reason(f"{status_for(error).name}: {reason_for(error)}"),
        issued_at=now,
        salt=salt,
        commitment=log_promise.entry_commitment(salt, entry),
    )


#: A recovery row's ``basis``: what the entry is, for the registry's operator.
RECOVERY_BASIS = "mask recovery"


def recovery_row(*, query_id: str, missing_agency: str, registry: str, now: datetime) -> LogRow:
    """The row of a recovery leaf: the registry claims ``missing_agency`` did not answer.

    The leaf is :func:`credence.blind.recovery_leaf.recovery_leaf` of the
    query (or batch) id and the agency, which every agency can recompute: no
    salt. The row names no subject (a zero reference, type and purpose 0),
    so no subject's list of lookups shows it; its ``query_id`` column holds
    the leaf in hex, unique as the log needs, and ``reason`` the agency and
    the query or batch id, for the registry's operator.

    Raises:
        InvalidInput: a value does not fit its column.
    """
    leaf = recovery_leaf(query_id, missing_agency)
    return LogRow(
        query_id=leaf.hex(),
        requester=registry,
        subject_type=0,
        subject_ref=bytes(32),
        purpose=0,
        kinds="",
        grant_id="",
        basis=RECOVERY_BASIS,
        outcome=OUTCOME_DISPATCHED,
        reason=f"{missing_agency} named missing for {query_id}",
        issued_at=now,
        salt=bytes(16),
        commitment=leaf,
    )


#: A review row's ``basis``: what the entry is, for the subject and the operator.
REVIEW_BASIS = "human review"


def review_row(
    *,
    review_id: str,
    verdict_id: str,
    registry: str,
    subject_type: int,
    subject_ref: bytes,
    now: datetime,
) -> LogRow:
    """The row of a subject's request for human review of ``verdict_id``.

    Ids only, never the subject's statement: the ``query_id`` column holds the
    review id (unique, as the log needs), ``requester`` the registry and
    ``reason`` the verdict reviewed. Under the subject's reference, so the
    subject sees it among their lookups; its leaf is a salted commitment like
    a lookup's (no purpose, kinds or grant).

    Raises:
        InvalidInput: a value does not fit its column.
    """
    salt = log_promise.new_salt()
    entry = log_promise.LogEntry(
        query_id=review_id,
        requester=registry,
        subject_type=subject_type,
        subject_ref=subject_ref,
        purpose=0,
        kinds=(),
        grant_id="",
        issued_at=now,
    )
    return LogRow(
        query_id=review_id,
        requester=registry,
        subject_type=subject_type,
        subject_ref=subject_ref,
        purpose=0,
        kinds="",
        grant_id="",
        basis=REVIEW_BASIS,
        outcome=OUTCOME_DISPATCHED,
        reason=f"review of verdict {verdict_id}",
        issued_at=now,
        salt=salt,
        commitment=log_promise.entry_commitment(salt, entry),
    )
