"""I5/I17: hostile identifiers are refused and the database catalog is unchanged afterwards."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from flowstone import errors
from flowstone.identifiers import QualifiedName
from flowstone.io.postgres import PostgresIOManager
from flowstone.store import outputs
from tests.unit.test_identifiers import HOSTILE_TABLES

HOSTILE = [value for value, _ in HOSTILE_TABLES]


def _catalog(conn: psycopg.Connection[Any]) -> tuple[object, ...]:
    relations = conn.execute(
        "SELECT count(*), md5(string_agg(oid::text || ':' || relname || ':' || relnamespace::text, ',' "
        "ORDER BY oid)) FROM pg_class"
    ).fetchone()
    namespaces = conn.execute("SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace").fetchone()
    canary = conn.execute("SELECT count(*) FROM y").fetchone()
    return (relations, namespaces, canary)


def test_i5_hostile_identifiers_leave_the_catalog_unchanged(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE y (n integer)")
        conn.execute("INSERT INTO y VALUES (1)")
        before = _catalog(conn)
        refused = 0
        for value in HOSTILE:
            attempts: list[dict[str, Any]] = [
                {"table": value},
                {"table": value, "mode": "rows"},
                {"table": "analytics.daily_events", "mode": "rows", "allowed_tables": [value]},
            ]
            if value is not None:
                attempts.append({"schema": value, "table": "t", "mode": "rows"})
            if value != "pg_authid":  # a fine column name
                attempts.append({"table": "t", "mode": "rows", "partition_column": value})
            for kwargs in attempts:
                with pytest.raises(errors.InvalidIdentifierError) as info:
                    PostgresIOManager(**kwargs)
                assert repr(value) in info.value.message
                refused += 1
            # Even a name that bypassed validation is only ever one quoted identifier: looking it
            # up finds no table and changes nothing. (Unqualified pg_authid does resolve, to
            # pg_catalog.pg_authid: the reason the validator refuses pg_* table names.)
            if isinstance(value, str) and value and "\x00" not in value and value != "pg_authid":
                with pytest.raises(errors.IOManagerError, match="does not exist"):
                    outputs.table_columns(conn, QualifiedName(None, value))
        assert refused >= 5 * 25
        assert _catalog(conn) == before
