"""One consent request, one grant: the database decides a race, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from central_registry import database
from central_registry.models import Grant
from central_registry.store import grant_rows
from credence.errors import AlreadyExists

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REF = "ab" * 32


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine_for(database_url)
    database.upgrade_schema(engine)
    yield engine
    engine.dispose()


def _issue(engine: Engine, grant_id: str, request_jti: str, gate: threading.Barrier) -> None:
    sessions = database.session_factory(engine)
    with sessions.begin() as session:
        gate.wait(timeout=30)
        grant_rows.add_grant(
            session, grant_id=grant_id, kind="consent", subject_ref_hex=REF, requester="acme",
            purpose="credit_assessment", scope=("credit",), issued_at=NOW, not_before=NOW,
            expires_at=NOW + timedelta(days=1), max_uses=3, data_life_seconds=60,
            token=f"token-{grant_id}", request_jti=request_jti,
        )  # fmt: skip


def test_two_concurrent_grants_for_one_request_keep_one(engine: Engine) -> None:
    gate = threading.Barrier(2)
    outcomes: dict[str, BaseException | None] = {}

    def attempt(grant_id: str) -> None:
        try:
            _issue(engine, grant_id, "request-1", gate)
            outcomes[grant_id] = None
        except BaseException as exc:  # reported below
            outcomes[grant_id] = exc

    threads = [threading.Thread(target=attempt, args=(name,)) for name in ("g-a", "g-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    refused = [exc for exc in outcomes.values() if exc is not None]
    assert len(outcomes) == 2
    assert len(refused) == 1
    assert isinstance(refused[0], AlreadyExists), refused
    with database.session_factory(engine)() as session:
        count = session.scalar(
            select(func.count()).select_from(Grant).where(Grant.request_jti == "request-1")
        )
    assert count == 1
