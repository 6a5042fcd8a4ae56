"""Shared fixtures: a real PostgreSQL server for the storage tests.

``postgres_url`` is the server: ``$CREDENCE_TEST_POSTGRES_URL`` when set (CI
starts a cluster with ``scripts/postgres.sh`` and exports it), else a private
cluster this session starts on a free loopback port and stops at the end.
When neither works the PostgreSQL tests skip with the reason, except under CI
(``$CI`` set), where they fail: CI must never pass without PostgreSQL.

Each test that asks for ``postgres_database`` gets a database of its own,
created empty and dropped afterwards, so tests stay independent. Storage test
modules ask for ``database_url``, which runs them once per :data:`BACKENDS`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

# The shared builders' fixtures (tests/support/): federations, engines.
pytest_plugins = ("support.fixtures",)

BACKENDS = ("sqlite", "postgresql")
URL_VARIABLE = "CREDENCE_TEST_POSTGRES_URL"
_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
# Starting a cluster takes about a second; installing the server is not done here.
_START_TIMEOUT_S = 120


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"PostgreSQL is required under CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _check_server(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _stop_cluster(directory: Path) -> None:
    subprocess.run(
        ["bash", str(_SCRIPT), "stop", str(directory)],
        check=False,
        capture_output=True,
        timeout=_START_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL whose database may create and drop databases."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        try:
            _check_server(given)
        except SQLAlchemyError as exc:
            # An explicit URL that does not work is a setup error: never skip it.
            pytest.fail(f"${URL_VARIABLE}={given} does not answer: {exc}", pytrace=False)
        yield given
        return
    if shutil.which("bash") is None:
        _unavailable("bash is needed to run scripts/postgres.sh")
    # Not under pytest's tmp_path: its 0700 parents would lock out the postgres user.
    directory = Path(tempfile.gettempdir()) / f"credence-pg-{uuid.uuid4().hex[:12]}"
    try:
        started = subprocess.run(
            ["bash", str(_SCRIPT), "start", str(directory), str(_free_port())],
            check=False,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
            env={**os.environ, "CREDENCE_POSTGRES_NO_INSTALL": "1"},
        )
    except subprocess.TimeoutExpired:
        _stop_cluster(directory)
        _unavailable(f"scripts/postgres.sh start took over {_START_TIMEOUT_S} s")
    if started.returncode != 0:
        _stop_cluster(directory)
        lines = started.stderr.strip().splitlines()
        _unavailable(lines[-1] if lines else f"scripts/postgres.sh exit {started.returncode}")
    try:
        yield started.stdout.strip()
    finally:
        _stop_cluster(directory)


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = f"credence_t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            # FILE_COPY (PostgreSQL 15+) copies the small template several times
            # faster than the default WAL_LOG, and a test cluster has no WAL to spare.
            version = connection.dialect.server_version_info or (0,)
            strategy = " STRATEGY FILE_COPY" if version >= (15,) else ""
            connection.execute(text(f'CREATE DATABASE "{name}"{strategy}'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            # FORCE: a test that failed may have left a connection open.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend a storage test runs on."""
    return str(request.param)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """The SQLite database of a storage test; modules override it with their file name."""
    return f"sqlite:///{tmp_path.resolve() / 'test.db'}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, backend: str, sqlite_url: str) -> str:
    """``sqlite_url`` on SQLite; on PostgreSQL a fresh database for this test."""
    if backend == "sqlite":
        return sqlite_url
    # Asked for lazily: SQLite runs never need (or skip for want of) a server.
    return str(request.getfixturevalue("postgres_database"))
