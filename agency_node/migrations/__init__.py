"""Alembic migrations of the agency node's database (see :mod:`agency_node.database`)."""
