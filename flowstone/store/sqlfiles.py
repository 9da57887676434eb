"""Find FlowStone's SQL files and parse the named queries in ``sql/queries/*.sql``.

A query file holds named queries (STYLE.md §1)::

    -- name: materialization_claim
    -- Returns the claimed row, or nothing when another worker holds it.
    SELECT ...;

The loader parses every file once, at first use, and rejects duplicate or empty names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flowstone import errors

__all__ = ["Query", "load_queries", "migration_files", "query", "sql_dir"]

_NAME_RE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Query:
    """One named query: its name, the comment that says what it returns, and its SQL."""

    name: str
    doc: str
    sql: str
    source: str


def sql_dir() -> Path:
    """The ``sql/`` directory: inside the installed wheel, or at the top of a source checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "sql", package_dir.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise errors.ConfigurationError(
        f"FlowStone's sql/ directory was not found next to {package_dir}: the installation is "
        "incomplete; reinstall the package"
    )


def migration_files() -> list[Path]:
    """Every ``sql/migrations/*.sql`` file, sorted by name (validated by the migration runner)."""
    return sorted((sql_dir() / "migrations").glob("*.sql"))


def parse_queries(text: str, source: str) -> list[Query]:
    """Split one query file into its named queries."""
    found: list[Query] = []
    name: str | None = None
    doc: list[str] = []
    body: list[str] = []

    def flush() -> None:
        if name is None:
            if "".join(body).strip():
                raise errors.ConfigurationError(f"{source}: SQL before the first '-- name:' line")
            return
        sql = "\n".join(body).strip().rstrip(";").strip()
        if not sql:
            raise errors.ConfigurationError(f"{source}: query {name!r} has no SQL")
        found.append(Query(name=name, doc=" ".join(doc).strip(), sql=sql, source=source))

    for line in text.splitlines():
        match = _NAME_RE.match(line.strip())
        if match:
            flush()
            name = match.group("name")
            if not _VALID_NAME_RE.match(name):
                raise errors.ConfigurationError(f"{source}: invalid query name {name!r}")
            doc, body = [], []
        elif name is not None and not body and line.strip().startswith("--"):
            doc.append(line.strip()[2:].strip())
        else:
            body.append(line)
    flush()
    return found


@cache
def load_queries() -> dict[str, Query]:
    """Every named query of ``sql/queries/*.sql``, by name. Parsed once per process."""
    queries: dict[str, Query] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for q in parse_queries(path.read_text(encoding="utf-8"), path.name):
            if q.name in queries:
                raise errors.ConfigurationError(
                    f"query name {q.name!r} is defined twice: {queries[q.name].source} and {q.source}"
                )
            queries[q.name] = q
    return queries


def query(name: str) -> str:
    """The SQL of the named query; an unknown name is a programming error.

    The files ship inside the package and are as trusted as code. Values are always bound
    parameters; identifiers from configuration are composed with ``psycopg.sql.Identifier``.
    """
    try:
        return load_queries()[name].sql
    except KeyError:
        raise errors.ConfigurationError(f"no named query {name!r} in sql/queries/") from None
