"""Alembic migrations of the central registry's database (see :mod:`central_registry.database`)."""
