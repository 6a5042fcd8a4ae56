"""Alembic environment of the agency node (credence.storage.run_alembic_env)."""

from __future__ import annotations

from agency_node.models import Base
from credence.storage import run_alembic_env

run_alembic_env(Base.metadata)
