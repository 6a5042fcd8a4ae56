"""The verifiable log's Merkle tree and signed tree heads; contests; used subject proofs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the Merkle nodes, tree heads and contests tables."""
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_merkle_nodes")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tree_heads",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_tree_heads")),
    )
    op.create_table(
        "contests",
        sa.Column("contest_id", sa.String(length=64), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("record_kind", sa.String(length=32), server_default="", nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("records_flagged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution_note", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "state IN ('open', 'upheld', 'corrected', 'removed')",
            name=op.f("ck_contests_known_state"),
        ),
        sa.PrimaryKeyConstraint("contest_id", name=op.f("pk_contests")),
    )
    op.create_index(op.f("ix_contests_subject_ref"), "contests", ["subject_ref"])
    op.create_table(
        "used_subject_proofs",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_used_subject_proofs")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop the tables this revision added."""
    op.drop_table("used_subject_proofs")
    op.drop_index(op.f("ix_contests_subject_ref"), table_name="contests")
    op.drop_table("contests")
    op.drop_table("tree_heads")
    op.drop_table("merkle_nodes")
