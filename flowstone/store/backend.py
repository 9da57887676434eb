"""The one place that decides which database FlowStone uses (invariant I9).

Order: an explicit URL, else ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres in
``$FLOWSTONE_HOME``. The runtime and the ``flowstone db`` commands call :func:`resolve_database`;
nothing else looks at the environment for a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psycopg

from flowstone import errors
from flowstone import settings as settings_mod
from flowstone.store import embedded

__all__ = ["DatabaseTarget", "resolve_database"]


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """The decided database: its URL and where the decision came from."""

    url: str
    source: Literal["argument", "environment", "embedded"]
    created: Path | None = field(default=None, compare=False)
    """The directory of an embedded database this decision had to create (``None``: it existed)."""


def resolve_database(
    database_url: str | None = None, *, settings: settings_mod.Settings | None = None
) -> DatabaseTarget:
    """Decide the database once. An empty ``database_url`` counts as absent (I2)."""
    if database_url:
        return DatabaseTarget(url=_checked(database_url, "the database URL"), source="argument")
    current = settings if settings is not None else settings_mod.Settings.from_env()
    if current.database_url:
        return DatabaseTarget(
            url=_checked(current.database_url, "FLOWSTONE_DATABASE_URL"), source="environment"
        )
    pgdata = current.home.expanduser().resolve() / "pgdata"
    created = None if pgdata.exists() else pgdata.parent
    return DatabaseTarget(url=embedded.embedded_url(current.home), source="embedded", created=created)


def _checked(url: str, where: str) -> str:
    """``url``, refused in one line (not a driver traceback later) when psycopg cannot parse it."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise errors.ConfigurationError(
            f"{where} is not a valid PostgreSQL connection string ({str(exc).strip()}); expected e.g. "
            "postgresql://user@host:5432/dbname"
        ) from None
    return url
