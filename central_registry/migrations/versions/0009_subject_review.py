"""The subject's side: served verdicts, human reviews, the contest clock.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``verdict_records`` keeps each served single verdict's id, subject, the
agencies that answered and (for credit) its signed explanation, until the
lookup's data life ends; ``reviews`` holds subjects' requests for human
review and their signed outcomes; ``contests.due_at`` is when the agency must
have resolved a contest.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create verdict_records and reviews; add contests.due_at."""
    op.create_table(
        "verdict_records",
        sa.Column("verdict_id", sa.String(length=64), nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("answered", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("explanation", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("verdict_id", name=op.f("pk_verdict_records")),
    )
    op.create_index(
        op.f("ix_verdict_records_query_id"), "verdict_records", ["query_id"], unique=False
    )
    op.create_index(
        op.f("ix_verdict_records_subject_ref"), "verdict_records", ["subject_ref"], unique=False
    )
    op.create_table(
        "reviews",
        sa.Column("review_id", sa.String(length=64), nullable=False),
        sa.Column("verdict_id", sa.String(length=64), nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("agencies", sa.Text(), nullable=False),
        sa.Column("untold", sa.Text(), server_default="", nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewer", sa.String(length=64), server_default="", nullable=False),
        sa.Column("outcome_statement", sa.Text(), server_default="", nullable=False),
        sa.Column("outcome", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'upheld', 'corrected')", name=op.f("ck_reviews_known_state")
        ),
        sa.PrimaryKeyConstraint("review_id", name=op.f("pk_reviews")),
    )
    op.create_index(op.f("ix_reviews_verdict_id"), "reviews", ["verdict_id"], unique=False)
    op.create_index(op.f("ix_reviews_subject_ref"), "reviews", ["subject_ref"], unique=False)
    with op.batch_alter_table("contests") as batch:
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop what upgrade added."""
    with op.batch_alter_table("contests") as batch:
        batch.drop_column("due_at")
    op.drop_index(op.f("ix_reviews_subject_ref"), table_name="reviews")
    op.drop_index(op.f("ix_reviews_verdict_id"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_index(op.f("ix_verdict_records_subject_ref"), table_name="verdict_records")
    op.drop_index(op.f("ix_verdict_records_query_id"), table_name="verdict_records")
    op.drop_table("verdict_records")
