"""Initial schema: members, revoked serials, manifests, bindings, grants, log, usage.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Types are written out here rather than imported from ``central_registry.models``:
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
    """Create every table of the central registry."""
    op.create_table(
        "members",
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("signing_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signing_kid", sa.String(length=64), nullable=False),
        sa.Column("record_kinds", sa.Text(), server_default="", nullable=False),
        sa.Column("identity_verifier", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("allowed_purposes", sa.Text(), server_default="", nullable=False),
        sa.Column("allowed_kinds", sa.Text(), server_default="", nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=True),
        sa.Column("certificate_serial", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('agency', 'company', 'authority')", name=op.f("ck_members_known_role")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'active', 'suspended')", name=op.f("ck_members_known_state")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_members")),
    )

    op.create_table(
        "revoked_serials",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_revoked_serials")),
    )

    op.create_table(
        "manifests",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_manifests")),
    )

    op.create_table(
        "bindings",
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("subject_kid", sa.String(length=64), nullable=False),
        sa.Column("identity_member", sa.String(length=64), nullable=False),
        sa.Column("binding_token", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_ref", "subject_kid", name=op.f("pk_bindings")),
    )

    op.create_table(
        "grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("data_life_seconds", sa.Integer(), nullable=True),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=True),
        sa.Column("embargo_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('consent', 'mandate')", name=op.f("ck_grants_known_kind")),
        sa.CheckConstraint(
            "max_uses IS NULL OR max_uses > 0", name=op.f("ck_grants_positive_max_uses")
        ),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_grants")),
    )
    op.create_index(op.f("ix_grants_subject_ref"), "grants", ["subject_ref"])
    op.create_index(op.f("ix_grants_requester"), "grants", ["requester"])

    op.create_table(
        "log_entries",
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("query_id", sa.String(length=64), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.Integer(), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.Column("purpose", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.String(length=256), nullable=False),
        sa.Column("grant_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("basis", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("salt", sa.LargeBinary(length=16), nullable=False),
        sa.Column("commitment", sa.LargeBinary(length=32), nullable=False),
        sa.Column("embargo_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('dispatched', 'refused')", name=op.f("ck_log_entries_known_outcome")
        ),
        sa.CheckConstraint("idx >= 0", name=op.f("ck_log_entries_non_negative_idx")),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_log_entries")),
        sa.UniqueConstraint("commitment", name=op.f("uq_log_entries_commitment")),
        sa.UniqueConstraint("query_id", name=op.f("uq_log_entries_query_id")),
    )
    op.create_index(op.f("ix_log_entries_subject_ref"), "log_entries", ["subject_ref"])

    op.create_table(
        "subject_usage",
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("subject_ref", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("requester", "day", "subject_ref", name=op.f("pk_subject_usage")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    """Drop every table of the central registry."""
    op.drop_table("subject_usage")
    op.drop_table("log_entries")
    op.drop_table("grants")
    op.drop_table("bindings")
    op.drop_table("manifests")
    op.drop_table("revoked_serials")
    op.drop_table("members")
