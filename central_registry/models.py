"""The central registry's tables: members, manifests, bindings, grants, the log.

Times are timezone-aware UTC in Python everywhere (:class:`UTCDateTime`).
Lists (record kinds, purposes, scopes) are stored comma-joined, which keeps
the schema portable; the ``*_names`` properties split them back. Schema
changes go through the Alembic migrations in :mod:`central_registry.migrations`,
never ``metadata.create_all``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from credence.storage import NAMING_CONVENTION, UTCDateTime

__all__ = [
    "GRANT_KINDS",
    "LOG_OUTCOMES",
    "MEMBER_ROLES",
    "MEMBER_STATES",
    "Base",
    "Binding",
    "Grant",
    "LogEntry",
    "Manifest",
    "Member",
    "RateBucket",
    "RevokedSerial",
    "SubjectDayCount",
    "SubjectUsage",
    "join_names",
    "split_names",
]

#: Roles a member can enrol with.
MEMBER_ROLES = ("agency", "company", "authority")
#: States a member moves through: pending -> active <-> suspended.
MEMBER_STATES = ("pending", "active", "suspended")
#: How a grant came about: the subject's consent or an authority's mandate.
GRANT_KINDS = ("consent", "mandate")
#: What the registry did with a query.
LOG_OUTCOMES = ("dispatched", "refused")


def join_names(names: Iterable[str]) -> str:
    """Store a list of names comma-joined.

    Raises:
        TypeError: ``names`` is one string rather than a list of them.
        ValueError: a name is empty or contains a comma (a programming error:
            names are enum names such as ``credit_assessment``).
    """
    if isinstance(names, str):
        raise TypeError(f"expected a list of names, got the string {names!r}")
    names = tuple(names)
    for name in names:
        if not name or "," in name:
            raise ValueError(f"cannot store {name!r} in a comma-joined list")
    return ",".join(names)


def split_names(text: str) -> tuple[str, ...]:
    """The names of a comma-joined list; ``""`` is the empty list."""
    return tuple(text.split(",")) if text else ()


# Deterministic constraint names, so that later migrations can name what they
# drop or alter on every backend (SQLite gives unnamed constraints no handle).
class Base(DeclarativeBase):
    """Declarative base of the central registry's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Member(Base):
    """One federation member, from enrolment on."""

    __tablename__ = "members"

    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(256))
    #: Raw 32-byte Ed25519 public key.
    signing_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    signing_kid: Mapped[str] = mapped_column(String(64))
    #: Raw 32-byte Ed25519 witness cosigning key; ``None`` for a member that does not witness.
    witness_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    #: Raw 32-byte X25519 key agreement key (blind aggregation); ``None`` for non-agencies.
    agreement_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    #: Record kinds an agency holds, comma-joined; empty for other roles.
    record_kinds: Mapped[str] = mapped_column(Text, default="", server_default="")
    identity_verifier: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Purposes the member may request under, comma-joined; set at approval.
    allowed_purposes: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: Verdict kinds the member may request, comma-joined; set at approval.
    allowed_kinds: Mapped[str] = mapped_column(Text, default="", server_default="")
    csr_pem: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    #: Lower-case hex, no prefix, as in the manifest's revoked serials.
    certificate_serial: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("role IN ('agency', 'company', 'authority')", name="known_role"),
        CheckConstraint("state IN ('pending', 'active', 'suspended')", name="known_state"),
    )

    @property
    def record_kind_names(self) -> tuple[str, ...]:
        """The record kinds held, split."""
        return split_names(self.record_kinds)

    @property
    def allowed_purpose_names(self) -> tuple[str, ...]:
        """The purposes allowed, split."""
        return split_names(self.allowed_purposes)

    @property
    def allowed_kind_names(self) -> tuple[str, ...]:
        """The verdict kinds allowed, split."""
        return split_names(self.allowed_kinds)

    def __repr__(self) -> str:
        return f"Member(member_id={self.member_id!r}, role={self.role!r}, state={self.state!r})"


class RevokedSerial(Base):
    """A certificate serial that every party must refuse."""

    __tablename__ = "revoked_serials"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Manifest(Base):
    """One published version of the signed manifest."""

    __tablename__ = "manifests"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The signed envelope bytes, served as they are.
    envelope: Mapped[bytes] = mapped_column(LargeBinary)


class Binding(Base):
    """A subject's personal public key bound to its reference by an identity verifier."""

    __tablename__ = "bindings"

    subject_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity_member: Mapped[str] = mapped_column(String(64))
    binding_token: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Grant(Base):
    """A consent or mandate the registry issued; ``grant_id`` is the token's ``jti``."""

    __tablename__ = "grants"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    #: Verdict kinds covered, comma-joined.
    scope: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: None: unlimited within the validity (mandates).
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    data_life_seconds: Mapped[int | None] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(Text)
    #: A mandate's "statute / case".
    legal_basis: Mapped[str | None] = mapped_column(Text)
    embargo_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The subject's consent request ``jti``: one request is countersigned once.
    request_jti: Mapped[str | None] = mapped_column(String(256))
    #: This grant's bit in the signed revocation list (draft-ietf-oauth-status-list).
    status_index: Mapped[int] = mapped_column(Integer, unique=True)

    __table_args__ = (
        CheckConstraint("kind IN ('consent', 'mandate')", name="known_kind"),
        CheckConstraint("max_uses IS NULL OR max_uses > 0", name="positive_max_uses"),
        CheckConstraint("status_index >= 0", name="status_index_not_negative"),
        UniqueConstraint("subject_ref", "request_jti", name="uq_grants_request"),
    )

    @property
    def scope_names(self) -> tuple[str, ...]:
        """The verdict kinds covered, split."""
        return split_names(self.scope)

    def __repr__(self) -> str:
        # Leaves the subject reference and token out.
        return f"Grant(grant_id={self.grant_id!r}, kind={self.kind!r}, uses={self.uses!r})"


class LogEntry(Base):
    """One entry of the transparency log: every query, dispatched or refused.

    ``idx`` is the 0-based leaf index, assigned in order inside the appending
    transaction; the primary key makes sure no two appends share one.
    """

    __tablename__ = "log_entries"

    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    query_id: Mapped[str] = mapped_column(String(64), unique=True)
    requester: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[int] = mapped_column(Integer)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    purpose: Mapped[int] = mapped_column(Integer)
    #: Verdict kind numbers, comma-joined.
    kinds: Mapped[str] = mapped_column(String(256))
    grant_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: ``consent <id>``, ``mandate <statute / case>`` or ``public register``.
    basis: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    salt: Mapped[bytes] = mapped_column(LargeBinary(16))
    commitment: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    embargo_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("outcome IN ('dispatched', 'refused')", name="known_outcome"),
        CheckConstraint("idx >= 0", name="non_negative_idx"),
    )

    @property
    def kind_values(self) -> tuple[int, ...]:
        """The verdict kind numbers, split."""
        return tuple(int(kind) for kind in split_names(self.kinds))

    def __repr__(self) -> str:
        return f"LogEntry(idx={self.idx!r}, query_id={self.query_id!r}, outcome={self.outcome!r})"


class SubjectUsage(Base):
    """That ``requester`` looked ``subject_ref`` up on ``day``: the distinct-subjects limit.

    The primary key makes noting a subject twice a no-op, so the rows of a
    requester's day are its distinct subjects; :class:`SubjectDayCount` counts them.
    """

    __tablename__ = "subject_usage"

    requester: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``YYYY-MM-DD`` (UTC).
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)

    # On SQLite, one B-tree keyed by the primary key instead of a rowid table plus an index.
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own dict


class SubjectDayCount(Base):
    """How many distinct subjects ``requester`` looked up on ``day``: what ``subject_usage`` holds.

    Grown in the transaction that notes a subject for the first time, so the
    daily limit is checked without counting the day's rows.
    """

    __tablename__ = "subject_day_counts"

    requester: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``YYYY-MM-DD`` (UTC).
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    subjects: Mapped[int] = mapped_column(Integer)

    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own dict


class MerkleNode(Base):
    """The hash of one complete subtree of the log: 2**level leaves from leaf idx * 2**level.

    Level 0 holds the leaf hashes. Storing every complete subtree makes an
    append and each proof cost O(log n) reads; the tree is never rehashed.
    """

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))

    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own dict


class TreeHead(Base):
    """A signed tree head the registry published (kept for consistency checks)."""

    __tablename__ = "tree_heads"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The signed TreeHead envelope, bytes as served.
    envelope: Mapped[bytes] = mapped_column(LargeBinary)


#: States of a contest, from filing to the agency's resolution.
CONTEST_STATES = ("open", "upheld", "corrected", "removed")


class Contest(Base):
    """A subject's contest of records held by one agency."""

    __tablename__ = "contests"

    contest_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    agency: Mapped[str] = mapped_column(String(64))
    record_kind: Mapped[str] = mapped_column(String(32), default="", server_default="")
    statement: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    records_flagged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution_note: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: filed_at + the manifest's contest_deadline_days; None for contests filed
    #: before the dispute clock existed.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("state IN ('open', 'upheld', 'corrected', 'removed')", name="known_state"),
    )


class UsedSubjectProof(Base):
    """A subject proof's id, kept until it expires: each proof is accepted once."""

    __tablename__ = "used_subject_proofs"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own dict


class RateBucket(Base):
    """A requester's request-rate token bucket, shared by every registry process.

    ``tokens`` is the count as of ``updated_at``; the refill since is computed
    by :class:`central_registry.limits.buckets.TokenBucket` when the row is next read.
    """

    __tablename__ = "rate_buckets"

    requester: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdminToken(Base):
    """An operator's console credential: only the SHA-256 of the token file's secret is kept."""

    __tablename__ = "admin_tokens"

    #: Hex SHA-256 of the token, the only copy the registry holds.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Who holds it, as the operator named it (shown in the console and its log).
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AdminAction(Base):
    """One thing an operator did in the console: who, what, to which member, when."""

    __tablename__ = "admin_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The admin token's name (never the token).
    admin: Mapped[str] = mapped_column(String(64))
    #: approve, refuse, suspend, reinstate, login, ...
    action: Mapped[str] = mapped_column(String(32))
    #: The member acted on; empty for a login.
    member_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: "ok", or why it was refused.
    outcome: Mapped[str] = mapped_column(String(256))


class Alarm(Base):
    """A problem a node's log audit found, as the node reported it (ReportAlarm)."""

    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(String(64), index=True)
    #: The audit's kind of problem (``missing_entry``, ``inconsistent_log``, ...).
    kind: Mapped[str] = mapped_column(String(48))
    #: How many problems of that kind the node's pass found.
    count: Mapped[int] = mapped_column(Integer)
    #: The log size the node checked against.
    tree_size: Mapped[int] = mapped_column(BigInteger)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VerdictRecord(Base):
    """A single verdict the registry served: what a subject's review names.

    Written once the verdict is signed. Holds no answer and no per-agency
    figure: which agencies answered (so a review reaches them) and, for a
    credit verdict, the registry-signed explanation computed from the sum.
    Erased with the lookup's log entry content at expiry.
    """

    __tablename__ = "verdict_records"

    verdict_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    query_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[int] = mapped_column(Integer)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    requester: Mapped[str] = mapped_column(String(64))
    #: Member ids of the agencies whose answers the verdict was built from, comma-separated.
    answered: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: When the row is erased (the lookup's data life).
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The signed Explanation envelope of a credit verdict, bytes as served.
    explanation: Mapped[bytes | None] = mapped_column(LargeBinary)


#: States of a human review, from the subject's request to the operator's decision.
REVIEW_STATES = ("open", "upheld", "corrected")


class Review(Base):
    """A subject's request for a person to review a verdict, and the signed outcome."""

    __tablename__ = "reviews"

    review_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    verdict_id: Mapped[str] = mapped_column(String(64), index=True)
    query_id: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[int] = mapped_column(Integer)
    subject_ref: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    statement: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    #: The agencies told (those that answered the query), comma-separated.
    agencies: Mapped[str] = mapped_column(Text)
    #: The agencies the verdict was built from not told yet, comma-separated:
    #: what the retry pass looks for, so reviews told in full cost it nothing.
    untold: Mapped[str] = mapped_column(Text, default="", server_default="")
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Index of the review's transparency log entry.
    log_index: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The admin name of the operator who decided.
    reviewer: Mapped[str] = mapped_column(String(64), default="", server_default="")
    outcome_statement: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The signed ReviewOutcome envelope, bytes as served.
    outcome: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (
        CheckConstraint("state IN ('open', 'upheld', 'corrected')", name="known_state"),
    )
