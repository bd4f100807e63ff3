"""Fixtures: a real Postgres database per test session (migrated with Alembic), and run builders.

`TRACER_TEST_ADMIN_URL` points at a server where the tests may create and drop
a database (default: the local server, user postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from tests.pipelines import RunBuilder
from tracer import db

ADMIN_URL = os.environ.get(
    "TRACER_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """A database of its own on the admin server, dropped afterwards whatever happened."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with throwaway_database(f"tracer_test_{os.getpid()}") as url:
        yield url


@pytest.fixture
def scratch() -> Iterator[Engine]:
    """An empty database of the test's own, not migrated: to migrate down and up."""
    with throwaway_database("tracer_scratch") as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def build(tmp_path: Path, engine: Engine) -> RunBuilder:
    return RunBuilder(tmp_path, engine)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: a heavier case (still part of the suite)")
    config.addinivalue_line(
        "markers", "serial: restarts or pauses the machine's Redis/PostgreSQL; run alone"
    )


REDIS_URL = os.environ.get("TRACER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def api_config(database_url: str, data_root: Path, engine: Engine) -> Any:
    """A service configuration on the test database, real Redis, and queues of its own."""
    from tracer.config import Config

    return Config(
        database_url=database_url,
        redis_url=REDIS_URL,
        data_roots=(data_root,),
        queue_prefix=f"tracer-test-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def app(api_config: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from api import create_app
    from workers import jobs

    # Jobs run by SimpleWorker in this process read their configuration from the environment.
    monkeypatch.setenv("DATABASE_URL", api_config.database_url)
    jobs.engine.cache_clear()
    yield create_app(api_config)
    jobs.engine.cache_clear()


@pytest.fixture
def run_jobs(api_config: Any) -> Any:
    """Work the test's queues to empty with rq's SimpleWorker (no fork), as the docs advise."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    from workers.queues import queue_names

    connection = Redis.from_url(api_config.redis_url)
    queues = [Queue(name, connection=connection) for name in queue_names(api_config)]

    def work() -> None:
        SimpleWorker(queues, connection=connection).work(burst=True)

    yield work
    for queue in queues:
        queue.empty()
