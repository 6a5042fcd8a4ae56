"""Grants remember the consent request they countersign and own a revocation-list bit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

``request_jti`` is unique per subject, so a consent request is countersigned
at most once; ``status_index`` is the grant's bit in the signed revocation
list. Grants issued before this revision get indexes in issue order.
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
    """Add the request id and the status index, numbering existing grants."""
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("request_jti", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("status_index", sa.Integer(), nullable=True))
    grants = sa.table(
        "grants",
        sa.column("grant_id", sa.String()),
        sa.column("issued_at", sa.DateTime(timezone=True)),
        sa.column("status_index", sa.Integer()),
    )
    connection = op.get_bind()
    ids = connection.execute(
        sa.select(grants.c.grant_id).order_by(grants.c.issued_at, grants.c.grant_id)
    ).scalars()
    for index, grant_id in enumerate(list(ids)):
        connection.execute(
            grants.update().where(grants.c.grant_id == grant_id).values(status_index=index)
        )
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("status_index", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint(op.f("uq_grants_status_index"), ["status_index"])
        batch.create_unique_constraint("uq_grants_request", ["subject_ref", "request_jti"])
        batch.create_check_constraint(
            op.f("ck_grants_status_index_not_negative"), "status_index >= 0"
        )


def downgrade() -> None:
    """Drop the request id and the status index."""
    with op.batch_alter_table("grants") as batch:
        batch.drop_constraint(op.f("ck_grants_status_index_not_negative"), type_="check")
        batch.drop_constraint("uq_grants_request", type_="unique")
        batch.drop_constraint(op.f("uq_grants_status_index"), type_="unique")
        batch.drop_column("status_index")
        batch.drop_column("request_jti")
