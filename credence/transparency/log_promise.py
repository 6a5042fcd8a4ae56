"""Log entries as salted commitments, and the registry's promise to log them.

Each lookup becomes one transparency-log leaf: a SHA-256 commitment to the
entry's fields under a random salt. The salt lets the entry's content be erased
at expiry while every proof stays valid, and keeps a leaf from revealing who
was looked up. The registry hands a node the salt inside a signed
:class:`LogPromise`; the node recomputes the commitment from the query it is
asked to answer and refuses the query if the two differ, so the registry cannot
log one thing and ask another.

Commitment encoding (version 1), every field length-prefixed with an 8-byte
big-endian length so no two entries encode alike::

    SHA-256("credence-log-entry-v1" 0x00 || salt || f(query_id) || f(requester)
            || f(subject_type) || f(subject_ref) || f(purpose) || f(kinds)
            || f(grant_id) || f(issued_at) || f(outcome))

where ``subject_type``, ``purpose`` are the proto enum numbers as decimal
ASCII, ``kinds`` the sorted enum numbers joined by commas, and ``issued_at``
the whole seconds since the epoch as decimal ASCII.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from credence import payloads
from credence.encoding import format_time, require_utc, to_epoch
from credence.envelope import Envelope, open_message, sign
from credence.errors import ClaimMismatch, InvalidInput, NotYetValid
from credence.keys import KeySet, SigningKey
from credence.v1 import common_pb2

_DOMAIN = b"credence-log-entry-v1\x00"
SALT_BYTES = 16
#: Outcome of an entry whose query went out to the nodes.
OUTCOME_DISPATCHED = "dispatched"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """What the log records of one lookup. Holds no raw identifier."""

    query_id: str
    requester: str
    subject_type: int
    subject_ref: bytes
    purpose: int
    kinds: tuple[int, ...]
    grant_id: str
    issued_at: datetime
    outcome: str = OUTCOME_DISPATCHED


# Length prefixes of short fields, precomputed: every entry encodes several.
_SHORT_PREFIXES = tuple(length.to_bytes(8, "big") for length in range(256))


def _field(data: bytes) -> bytes:
    length = len(data)
    prefix = _SHORT_PREFIXES[length] if length < 256 else length.to_bytes(8, "big")
    return prefix + data


_SUBJECT_TYPE_FIELDS = {value: _field(str(value).encode()) for value in range(3)}


@dataclass(frozen=True, slots=True)
class CommitmentEncoder:
    """Computes commitments for many entries that share requester, purpose, kinds and time.

    A batch of lookups differs only in query id, subject and grant, so the
    shared fields are encoded once; :func:`entry_commitment` is the one-entry case.
    """

    requester: bytes
    purpose: bytes
    kinds: bytes
    tail: bytes

    @classmethod
    def for_shared(
        cls,
        *,
        requester: str,
        purpose: int,
        kinds: Iterable[int],
        issued_at: datetime,
        outcome: str = OUTCOME_DISPATCHED,
    ) -> CommitmentEncoder:
        """The encoder for entries with these shared fields."""
        return cls(
            requester=_field(requester.encode()),
            purpose=_field(str(purpose).encode()),
            kinds=_field(",".join(str(kind) for kind in sorted(kinds)).encode()),
            tail=_field(str(to_epoch(issued_at)).encode()) + _field(outcome.encode()),
        )

    def commit(
        self, salt: bytes, query_id: str, subject_type: int, subject_ref: bytes, grant_id: str
    ) -> bytes:
        """The 32-byte leaf for one entry.

        Raises:
            InvalidInput: the salt is not :data:`SALT_BYTES` long.
        """
        if len(salt) != SALT_BYTES:
            raise InvalidInput(f"log entry salt must be {SALT_BYTES} bytes, got {len(salt)}")
        return hashlib.sha256(
            b"".join(
                (
                    _DOMAIN,
                    salt,
                    _field(query_id.encode()),
                    self.requester,
                    _SUBJECT_TYPE_FIELDS.get(subject_type) or _field(str(subject_type).encode()),
                    _field(subject_ref),
                    self.purpose,
                    self.kinds,
                    _field(grant_id.encode()),
                    self.tail,
                )
            )
        ).digest()


def entry_commitment(salt: bytes, entry: LogEntry) -> bytes:
    """The 32-byte leaf committing to ``entry`` under ``salt``.

    Raises:
        InvalidInput: the salt is not :data:`SALT_BYTES` long.
    """
    encoder = CommitmentEncoder.for_shared(
        requester=entry.requester,
        purpose=entry.purpose,
        kinds=entry.kinds,
        issued_at=entry.issued_at,
        outcome=entry.outcome,
    )
    return encoder.commit(
        salt, entry.query_id, entry.subject_type, entry.subject_ref, entry.grant_id
    )


def new_salt() -> bytes:
    """A fresh random salt for one entry."""
    return secrets.token_bytes(SALT_BYTES)


def new_salts(count: int) -> list[bytes]:
    """``count`` fresh salts from one draw of randomness."""
    pool = secrets.token_bytes(SALT_BYTES * count)
    return [pool[index * SALT_BYTES : (index + 1) * SALT_BYTES] for index in range(count)]


def make_promise(
    entry: LogEntry,
    salt: bytes,
    *,
    log_id: str,
    promised_at: datetime,
    max_merge_delay: timedelta,
) -> common_pb2.LogPromise:
    """The unsigned promise for ``entry``; the registry signs it or a batch holding it."""
    promise = common_pb2.LogPromise(
        log_id=log_id,
        query_id=entry.query_id,
        entry_commitment=entry_commitment(salt, entry),
        salt=salt,
    )
    promise.promised_at.FromDatetime(require_utc(promised_at))
    promise.max_merge_delay.FromTimedelta(max_merge_delay)
    return promise


def sign_promise(promise: common_pb2.LogPromise, log_key: SigningKey) -> Envelope:
    """Sign a promise with the log key (its kid must be the promise's ``log_id``).

    Raises:
        ValueError: the key is not the log key the promise names.
    """
    if promise.log_id != log_key.kid:
        raise ValueError(f"promise names log {promise.log_id}, signing key is {log_key.kid}")
    return sign(payloads.LOG_PROMISE, promise.SerializeToString(), [log_key])


def open_promise(envelope: Envelope, log_keys: KeySet) -> common_pb2.LogPromise:
    """Verify a signed promise and parse it.

    Raises:
        VerificationError: the promise is not signed by a log key.
        InvalidInput: it does not parse.
    """
    verified = open_message(envelope, payloads.LOG_PROMISE, log_keys, common_pb2.LogPromise)
    promise = verified.message
    if promise.log_id not in verified.kids:
        raise ClaimMismatch(f"log promise names log {promise.log_id} but is signed by another key")
    return promise


def check_promise(
    promise: common_pb2.LogPromise,
    entry: LogEntry,
    *,
    log_id: str,
    now: datetime,
    skew: timedelta = payloads.CLOCK_SKEW,
) -> None:
    """Check that a (verified) promise commits to exactly ``entry``.

    Raises:
        ClaimMismatch: another log, another query, or a commitment to other content.
        NotYetValid: promised in the future.
        InvalidInput: a merge delay that is negative or longer than allowed.
    """
    expected = entry_commitment(promise.salt, entry) if len(promise.salt) == SALT_BYTES else b""
    PromiseRules.at(log_id, now, skew).check(promise, entry.query_id, expected)


@dataclass(frozen=True, slots=True)
class PromiseRules:
    """What every promise checked at one moment must satisfy; build once per batch."""

    log_id: str
    now: datetime
    latest_seconds: int
    max_delay_seconds: int

    @classmethod
    def at(cls, log_id: str, now: datetime, skew: timedelta = payloads.CLOCK_SKEW) -> PromiseRules:
        """The rules for promises from log ``log_id`` checked at ``now``."""
        return cls(
            log_id=log_id,
            now=now,
            latest_seconds=to_epoch(now + skew),
            max_delay_seconds=int(payloads.MAX_MERGE_DELAY.total_seconds()),
        )

    def check(
        self, promise: common_pb2.LogPromise, query_id: str, expected_commitment: bytes
    ) -> None:
        """Check a (verified) promise against the commitment the caller computed.

        Raises:
            ClaimMismatch: another log, another query, or a commitment to other content.
            NotYetValid: promised in the future.
            InvalidInput: a merge delay that is negative or longer than allowed.
        """
        if promise.log_id != self.log_id:
            raise ClaimMismatch(f"log promise is from log {promise.log_id}, expected {self.log_id}")
        if promise.query_id != query_id:
            raise ClaimMismatch(f"log promise is for query {promise.query_id}, not {query_id}")
        if not expected_commitment or expected_commitment != promise.entry_commitment:
            raise ClaimMismatch(
                f"log promise for query {query_id} commits to other content than the query"
            )
        if promise.promised_at.seconds > self.latest_seconds:
            promised_at = promise.promised_at.ToDatetime(tzinfo=UTC)
            raise NotYetValid(
                f"log promise is dated {format_time(promised_at)}, in the future "
                f"(now {format_time(self.now)})"
            )
        delay = promise.max_merge_delay.seconds
        if not 0 <= delay <= self.max_delay_seconds:
            raise InvalidInput(
                f"log promise merge delay {delay}s is outside 0..{payloads.MAX_MERGE_DELAY}"
            )
