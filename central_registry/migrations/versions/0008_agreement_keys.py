"""Agencies' X25519 key agreement keys (blind aggregation).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

An agency enrols with an X25519 public key, which its manifest entry
publishes; every pair of agencies derives the pairwise masks of blind
aggregation from them. No two members share one. Agencies enrolled before
this revision publish none until they enrol again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable, unique agreement key column."""
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("agreement_key", sa.LargeBinary(length=32), nullable=True))
        batch.create_unique_constraint(op.f("uq_members_agreement_key"), ["agreement_key"])


def downgrade() -> None:
    """Drop the agreement key column."""
    with op.batch_alter_table("members") as batch:
        batch.drop_constraint(op.f("uq_members_agreement_key"), type_="unique")
        batch.drop_column("agreement_key")
