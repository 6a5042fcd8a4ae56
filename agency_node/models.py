"""The agency node's tables: records, their disputes, the query log, the replay cache.

Times are timezone-aware UTC in Python everywhere. :class:`UTCDateTime` stores
them as ``timestamp with time zone`` where the database has one (PostgreSQL)
and as naive UTC where it does not (SQLite), and always hands back an aware
UTC ``datetime``. Schema changes go through the Alembic migrations in
:mod:`agency_node.migrations`, never ``metadata.create_all``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from credence.storage import NAMING_CONVENTION, UTCDateTime

__all__ = [
    "DISPUTE_STATES",
    "QUERY_OUTCOMES",
    "RECORD_GENERATION",
    "AnswerVectors",
    "Base",
    "NodeCounter",
    "QueryLogEntry",
    "Record",
    "RecordDispute",
    "SeenQuery",
    "UTCDateTime",
    "WitnessedCheckpoint",
]

#: States a dispute (a subject's contest of a record) moves through.
DISPUTE_STATES = ("open", "upheld", "corrected", "removed")
#: The :class:`NodeCounter` bumped by every change to the set of records.
RECORD_GENERATION = "record_generation"
#: What the node did with a query.
QUERY_OUTCOMES = ("answered", "refused")


# Deterministic constraint names, so that later migrations can name what they
# drop or alter on every backend (SQLite gives unnamed constraints no handle).
class Base(DeclarativeBase):
    """Declarative base of the agency node's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Record(Base):
    """One record about one subject, keyed by the source system's ``record_id``."""

    __tablename__ = "records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    subject_type: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The rehabilitation end, computed at import: the purge and every
    # evaluation compare against this one column. Not indexed: the index cost
    # a quarter of import time, and the daily purge can afford a scan.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    days_overdue: Mapped[int | None] = mapped_column(Integer)
    disputed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: When the oldest open contest of this record must be resolved by (the
    #: dispute clock); None when no contest is open. Past it, the record stops
    #: counting in answers until the agency resolves the contest.
    contest_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # SHA-256 of the normalised row: a re-import rewrites only rows whose hash changed.
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    disputes: Mapped[list[RecordDispute]] = relationship(
        back_populates="record",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="RecordDispute.id",
    )

    __table_args__ = (
        CheckConstraint(
            "currency IS NULL OR amount_minor IS NOT NULL", name="currency_needs_amount"
        ),
        CheckConstraint(
            "amount_minor IS NULL OR currency IS NOT NULL", name="amount_needs_currency"
        ),
    )

    def __repr__(self) -> str:
        # Leaves the subject reference out: it is still a stable pseudonym.
        return f"Record(id={self.id!r}, record_id={self.record_id!r}, kind={self.kind!r})"


class RecordDispute(Base):
    """One step in a subject's contest of a record."""

    __tablename__ = "record_disputes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_pk: Mapped[int] = mapped_column(ForeignKey("records.id", ondelete="CASCADE"), index=True)
    contest_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    record: Mapped[Record] = relationship(back_populates="disputes")

    __table_args__ = (
        CheckConstraint("state IN ('open', 'upheld', 'corrected', 'removed')", name="known_state"),
    )


class QueryLogEntry(Base):
    """Every query the node received, answered or refused, and why."""

    __tablename__ = "query_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Not unique: a replayed id is logged again, as refused.
    query_id: Mapped[str] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    requester: Mapped[str] = mapped_column(String(128))
    purpose: Mapped[str] = mapped_column(String(32))
    #: Record kinds asked about, comma-joined.
    kinds: Mapped[str] = mapped_column(String(256))
    # None when the query was refused before its subject could be read.
    # Not indexed: references are random, so an index would dirty a page per logged
    # query; the node never searches its log by subject.
    subject_ref: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    outcome: Mapped[str] = mapped_column(String(16))
    #: gRPC status code name, e.g. ``OK`` or ``ALREADY_EXISTS``.
    status_code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    entry_commitment: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    #: The registry's log promise envelope, bytes as received (re-verifiable).
    log_promise: Mapped[bytes | None] = mapped_column(LargeBinary)
    answer_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    #: When the background audit confirmed this entry is in the registry's log.
    inclusion_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("outcome IN ('answered', 'refused')", name="known_outcome"),)


class SeenQuery(Base):
    """The replay cache: a query id is accepted once.

    The primary key is the replay check: a second insert of the same id fails
    in the database, atomically, for every process sharing it.
    """

    __tablename__ = "seen_queries"

    query_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Prunable once past expiry plus the allowed clock skew: an older query is
    # refused as expired before the replay check is reached. Not indexed: the
    # hourly prune scans a table that pruning keeps small, while every batch
    # writes a thousand rows.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # On SQLite, one B-tree keyed by query id instead of a rowid table plus an index.
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own dict


class NodeCounter(Base):
    """A named counter, e.g. :data:`RECORD_GENERATION`.

    Every import that writes a record bumps the record generation in its own
    transaction, so a server process sees that its in-memory membership
    filter is stale, whichever process imported.
    """

    __tablename__ = "node_counters"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class AuditAlarm(Base):
    """Evidence that the registry's log failed a check: a missing entry or a bad proof."""

    __tablename__ = "audit_alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: "missing_entry", "bad_inclusion_proof", "inconsistent_log", "bad_tree_head".
    kind: Mapped[str] = mapped_column(String(32))
    query_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    detail: Mapped[str] = mapped_column(Text)


class SeenTreeHead(Base):
    """The newest signed tree head the node verified, kept to check the next one against."""

    __tablename__ = "seen_tree_heads"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WitnessedCheckpoint(Base):
    """The last checkpoint this node's witness cosigned for a log (C2SP tlog-witness)."""

    __tablename__ = "witnessed_checkpoints"

    origin: Mapped[str] = mapped_column(String(256), primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: The checkpoint note as the log signed it.
    note: Mapped[bytes] = mapped_column(LargeBinary)
    cosigned_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnswerVectors(Base):
    """The cleartext vector(s) and the masks of one masked answer (blind aggregation).

    Part of the node's query log, keyed by the query id (a screening batch's
    id for a batch: its items' vectors concatenated in batch order, one
    mask stream over them). Both are little-endian uint64 words; the masked
    answer that left the node is their sum mod 2^64. Kept so the operator
    can open an answer (``credence node open-answer``) and so a recovery
    share is computed for a query this node really answered.
    """

    __tablename__ = "answer_vectors"

    query_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: ``<scorecard version>/<layout hash>``.
    layout_id: Mapped[str] = mapped_column(String(128))
    #: The query's audience, comma-joined in the query's order.
    audience: Mapped[str] = mapped_column(Text)
    #: A batch's answered item query ids, comma-joined, in vector order; empty for a single.
    item_ids: Mapped[str] = mapped_column(Text, default="", server_default="")
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    masks: Mapped[bytes] = mapped_column(LargeBinary)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewNotice(Base):
    """The registry's notice that a subject asked for review of a verdict this node answered."""

    __tablename__ = "review_notices"

    review_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict_id: Mapped[str] = mapped_column(String(64))
    query_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32))
    statement: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Whether this node's query log holds an answer to the query.
    answered_query: Mapped[bool] = mapped_column(Boolean)
    #: The registry-signed ReviewNotice envelope, bytes as received.
    notice: Mapped[bytes] = mapped_column(LargeBinary)
