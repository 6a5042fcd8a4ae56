"""The shared builders as pytest fixtures, registered by ``tests/conftest.py``.

Factory fixtures (sigstore's ``asset()`` returning ``_asset(name)``): each
returns a builder, and the fixture stops or disposes of whatever its builder
made when its scope ends, so a test never cleans up by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from credence.storage import session_factory
from support.inprocess import InProcessFederation, start


class Schema(Protocol):
    """A component's database module: ``agency_node.database`` or ``central_registry.database``."""

    def create_engine_for(self, url: str) -> Engine: ...
    def upgrade_schema(self, engine: Engine) -> None: ...


#: ``start_federation(name, **deadlines)``: see :func:`support.inprocess.start`.
StartFederation = Callable[..., InProcessFederation]
#: ``make_engine(upgraded)``: an engine on ``database_url``, migrated if ``upgraded``.
MakeEngine = Callable[[bool], Engine]


@pytest.fixture(scope="module")
def start_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartFederation]:
    """Start in-process federations (registry, no members yet); stop them after the module."""
    started: list[InProcessFederation] = []

    def _start(name: str, **deadlines: float) -> InProcessFederation:
        federation = start(tmp_path_factory.mktemp(name), **deadlines)
        started.append(federation)
        return federation

    try:
        yield _start
    finally:
        for federation in reversed(started):
            federation.stop()


# database_url (conftest.py) runs every test using these once on SQLite, once on PostgreSQL.
@pytest.fixture
def make_engine(database_url: str, schema: Schema) -> Iterator[MakeEngine]:
    """Engines on ``database_url`` for the module's ``schema`` fixture, disposed after the test."""
    engines: list[Engine] = []

    def _make(migrate: bool = True) -> Engine:
        engine = schema.create_engine_for(database_url)
        engines.append(engine)
        if migrate:
            schema.upgrade_schema(engine)
        return engine

    yield _make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(make_engine: MakeEngine) -> Engine:
    """The module's ``schema`` on ``database_url``, migrated to the newest revision."""
    return make_engine(True)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on :func:`engine`: the module's ``schema``, migrated to the newest revision."""
    return session_factory(engine)
