"""Blind aggregation: the cleartext vectors and masks of the node's masked answers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Answers leave the node masked; the node keeps, per query (or per screening
batch), the cleartext vector(s) and the masks it added, so its operator can
open an answer on request (``credence node open-answer``) and answer the
registry's recovery requests from what it actually applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table of answer vectors."""
    op.create_table(
        "answer_vectors",
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("batch", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("layout_id", sa.String(length=128), nullable=False),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("item_ids", sa.Text(), server_default="", nullable=False),
        sa.Column("vectors", sa.LargeBinary(), nullable=False),
        sa.Column("masks", sa.LargeBinary(), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("query_id", name=op.f("pk_answer_vectors")),
    )


def downgrade() -> None:
    """Drop the table of answer vectors."""
    op.drop_table("answer_vectors")
