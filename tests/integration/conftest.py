"""Fixtures for tests that use real Postgres."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowstone.store import migrations
from flowstone.store.base import Store
from flowstone.store.memory import MemoryStore
from flowstone.store.postgres import PostgresStore
from tests import pg


@pytest.fixture(scope="session")
def pg_server() -> pg.Server:
    # Not under pytest's basetemp: that tree is private to root (0700) and pruned by other pytest
    # sessions, while the embedded server runs as its own system user and needs to reach it.
    base = Path(tempfile.mkdtemp(prefix="flowstone-test-pg-"))
    base.chmod(0o755)
    # The embedded server (cleanup_mode="delete") stops and deletes its data when this process
    # exits; removing the directory here would pull it from under the running server. The empty
    # directory goes after that: registered first, this exit handler runs last (atexit is LIFO).
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    return pg.start_server(base)


@pytest.fixture(scope="session")
def template_db(pg_server: pg.Server) -> Iterator[str]:
    """A template database with Procrastinate's schema and every FlowStone migration applied."""
    name = pg.unique_name("flowstone_tmpl")
    janitor = pg_server.janitor(name)
    janitor.init()
    try:
        migrations.upgrade(pg_server.url_for(name))
        with janitor.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" WITH is_template true')
        yield name
    finally:
        with janitor.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" WITH is_template false')
        janitor.drop()


@pytest.fixture
def database_url(pg_server: pg.Server, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test."""
    with pg.fresh_database(pg_server, template=template_db) as url:
        yield url


@pytest.fixture
def empty_database_url(pg_server: pg.Server) -> Iterator[str]:
    """A fresh database with nothing installed."""
    with pg.fresh_database(pg_server, template=None) as url:
        yield url


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each store implementation in turn: the contract suite runs against both (I8)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("database_url")
    pg_store = PostgresStore(url)
    try:
        yield pg_store
    finally:
        pg_store.close()
