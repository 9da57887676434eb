"""The SQL files: named queries load, names are unique, everything parses with sqlglot (postgres)."""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from flowstone import errors
from flowstone.store import migrations, sqlfiles

# Statements sqlglot does not model (PL/pgSQL bodies, DO blocks) parse as a generic Command; they
# are allowed only in migrations and only for these statement kinds.
_COMMAND_OK = re.compile(r"^\s*(CREATE\s+(OR\s+REPLACE\s+)?FUNCTION|DO\s)", re.IGNORECASE)


def _statements(sql: str) -> list[exp.Expression]:
    # psycopg placeholders %(name)s (text) and %(name)b (binary) are not SQL; sqlglot reads :name
    # as a parameter.
    return [
        s for s in sqlglot.parse(re.sub(r"%\((\w+)\)[sb]", r":\1", sql), read="postgres") if s is not None
    ]


def test_every_named_query_parses_as_one_real_statement():
    queries = sqlfiles.load_queries()
    assert queries, "no named queries found"
    for q in queries.values():
        statements = _statements(q.sql)
        assert len(statements) == 1, q.name
        assert not isinstance(statements[0], exp.Command), f"{q.name} fell back to a Command"
        assert q.doc, f"{q.name} has no comment saying what it returns"


def test_every_migration_parses():
    for migration in migrations.discover():
        for statement in _statements(migration.sql):
            if isinstance(statement, exp.Command):
                text = statement.sql(comments=False)
                assert _COMMAND_OK.match(text), (migration.filename, text[:80])


def test_query_names_are_entity_first_and_unique():
    text = "\n".join(p.read_text() for p in sorted((sqlfiles.sql_dir() / "queries").glob("*.sql")))
    names = re.findall(r"^--\s*name:\s*(\S+)", text, flags=re.MULTILINE)
    assert len(names) == len(set(names))
    assert names == [n for n in names if re.match(r"^[a-z]+_[a-z0-9_]+$", n)]


def test_duplicate_and_orphan_sql_are_rejected():
    with pytest.raises(errors.ConfigurationError, match="before the first"):
        sqlfiles.parse_queries("SELECT 1;\n-- name: a_b\nSELECT 2;", "x.sql")
    with pytest.raises(errors.ConfigurationError, match="has no SQL"):
        sqlfiles.parse_queries("-- name: a_b\n-- nothing\n", "x.sql")
    parsed = sqlfiles.parse_queries("-- name: a_b\n-- Returns one.\nSELECT 1;\n", "x.sql")
    assert parsed[0].doc == "Returns one."
    assert parsed[0].sql == "SELECT 1"
    with pytest.raises(errors.ConfigurationError, match="no named query"):
        sqlfiles.query("no_such_query")


def test_migration_discovery_rejects_gaps_duplicates_and_bad_names(tmp_path):
    def files(*names: str):
        paths = []
        for name in names:
            path = tmp_path / name
            path.write_text("SELECT 1;")
            paths.append(path)
        return paths

    with pytest.raises(errors.MigrationError, match="0002 is missing"):
        migrations.discover(files("0001_a.sql", "0003_c.sql"))
    with pytest.raises(errors.MigrationError, match="two migrations have version 0001"):
        migrations.discover(files("0001_a.sql", "0001_b.sql"))
    with pytest.raises(errors.MigrationError, match="is not named"):
        migrations.discover(files("1_a.sql"))
    assert [m.version for m in migrations.discover(files("0002_b.sql", "0001_a.sql"))] == [1, 2]


def test_procrastinate_migrations_are_selected_by_version(tmp_path):
    for name in (
        "03.00.00_01_pre_a.sql",
        "03.00.00_50_post_b.sql",
        "03.02.00_01_pre_c.sql",
        "03.10.00_01_pre_d.sql",
        "03.11.00_01_pre_e.sql",
        "notes.txt",
    ):
        (tmp_path / name).write_text("SELECT 1;")
    chosen = migrations.procrastinate_migrations_between("3.0.0", "3.10.0", tmp_path)
    assert [p.name for p in chosen] == ["03.02.00_01_pre_c.sql", "03.10.00_01_pre_d.sql"]
