"""Alembic environment for the central registry's database.

Run programmatically by :func:`central_registry.database.upgrade_schema`, which
hands over an open connection in ``config.attributes["connection"]``; there
is no ``alembic.ini``. With a ``sqlalchemy.url`` option instead (for
``alembic revision --autogenerate`` during development) it opens its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from central_registry.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place: later migrations copy the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    engine = create_engine(url)
    try:
        with engine.begin() as own:
            _run(own)
    finally:
        engine.dispose()


_main()
