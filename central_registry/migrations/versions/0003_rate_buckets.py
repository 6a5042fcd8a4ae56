"""Request-rate token buckets in the database, shared by every registry process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the rate buckets table."""
    op.create_table(
        "rate_buckets",
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("requester", name=op.f("pk_rate_buckets")),
    )


def downgrade() -> None:
    """Drop the rate buckets table."""
    op.drop_table("rate_buckets")
