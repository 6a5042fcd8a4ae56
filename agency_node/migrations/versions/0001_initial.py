"""Initial schema: records, record disputes, query log, replay cache, counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Types are written out here rather than imported from ``agency_node.models``:
a migration must keep meaning what it meant when it was written.
``UTCDateTime`` is ``DateTime(timezone=True)`` in the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create every table of the agency node."""
    op.create_table(
        "records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject_type", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_overdue", sa.Integer(), nullable=True),
        sa.Column("disputed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_minor IS NULL OR currency IS NOT NULL",
            name=op.f("ck_records_amount_needs_currency"),
        ),
        sa.CheckConstraint(
            "currency IS NULL OR amount_minor IS NOT NULL",
            name=op.f("ck_records_currency_needs_amount"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_records")),
        sa.UniqueConstraint("record_id", name=op.f("uq_records_record_id")),
    )
    op.create_index(op.f("ix_records_subject_ref"), "records", ["subject_ref"])

    op.create_table(
        "record_disputes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_pk", sa.Integer(), nullable=False),
        sa.Column("contest_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('open', 'upheld', 'corrected', 'removed')",
            name=op.f("ck_record_disputes_known_state"),
        ),
        sa.ForeignKeyConstraint(
            ["record_pk"],
            ["records.id"],
            name=op.f("fk_record_disputes_record_pk_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_disputes")),
    )
    op.create_index(op.f("ix_record_disputes_record_pk"), "record_disputes", ["record_pk"])
    op.create_index(op.f("ix_record_disputes_contest_id"), "record_disputes", ["contest_id"])

    op.create_table(
        "query_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("kinds", sa.String(length=256), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("entry_commitment", sa.LargeBinary(length=32), nullable=True),
        sa.Column("log_promise", sa.LargeBinary(), nullable=True),
        sa.Column("answer_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("inclusion_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('answered', 'refused')", name=op.f("ck_query_log_known_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_query_log")),
    )
    op.create_index(op.f("ix_query_log_query_id"), "query_log", ["query_id"])

    op.create_table(
        "seen_queries",
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("query_id", name=op.f("pk_seen_queries")),
        sqlite_with_rowid=False,
    )

    counters = op.create_table(
        "node_counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_node_counters")),
    )
    op.bulk_insert(counters, [{"name": "record_generation", "value": 0}])


def downgrade() -> None:
    """Drop every table of the agency node."""
    op.drop_table("node_counters")
    op.drop_table("seen_queries")
    op.drop_table("query_log")
    op.drop_table("record_disputes")
    op.drop_table("records")
