"""Alembic environment of the central registry (credence.storage.run_alembic_env)."""

from __future__ import annotations

from central_registry.models import Base
from credence.storage import run_alembic_env

run_alembic_env(Base.metadata)
