"""Members' witness cosigning keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A member that witnesses the log enrols with an Ed25519 cosigning key, which
its manifest entry publishes; no two members share one. Members enrolled
before this revision do not witness until they enrol a key.
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
    """Add the nullable, unique witness key column."""
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("witness_key", sa.LargeBinary(length=32), nullable=True))
        batch.create_unique_constraint(op.f("uq_members_witness_key"), ["witness_key"])


def downgrade() -> None:
    """Drop the witness key column."""
    with op.batch_alter_table("members") as batch:
        batch.drop_constraint(op.f("uq_members_witness_key"), type_="unique")
        batch.drop_column("witness_key")
