"""The subject's side: the dispute clock and review notices.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``records.contest_due_at`` is when the oldest open contest of a record must
be resolved by; past it the record stops counting in answers until the
agency resolves it. ``review_notices`` keeps the registry's signed notices
that a subject asked for human review of a verdict this node answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add records.contest_due_at and create review_notices."""
    # A plain ADD COLUMN: batch mode would copy ``records`` on SQLite, and dropping
    # the old table cascades to every record's dispute history.
    op.add_column("records", sa.Column("contest_due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "review_notices",
        sa.Column("review_id", sa.String(length=64), nullable=False),
        sa.Column("verdict_id", sa.String(length=64), nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_query", sa.Boolean(), nullable=False),
        sa.Column("notice", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("review_id", name=op.f("pk_review_notices")),
    )
    op.create_index(
        op.f("ix_review_notices_query_id"), "review_notices", ["query_id"], unique=False
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index(op.f("ix_review_notices_query_id"), table_name="review_notices")
    op.drop_table("review_notices")
    # SQLite (3.35+) drops a column in place; batch mode would copy the table
    # and cascade the drop of the old one to the dispute history.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE records DROP COLUMN contest_due_at")
    else:
        op.drop_column("records", "contest_due_at")
