"""The one place that decides which database FlowStone uses (invariant I9).

Order: an explicit URL, else ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres in
``$FLOWSTONE_HOME``. The runtime and the ``flowstone db`` commands call :func:`resolve_database`;
nothing else looks at the environment for a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flowstone import settings as settings_mod
from flowstone.store import embedded

__all__ = ["DatabaseTarget", "resolve_database"]


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """The decided database: its URL and where the decision came from."""

    url: str
    source: Literal["argument", "environment", "embedded"]


def resolve_database(
    database_url: str | None = None, *, settings: settings_mod.Settings | None = None
) -> DatabaseTarget:
    """Decide the database once. An empty ``database_url`` counts as absent (I2)."""
    if database_url:
        return DatabaseTarget(url=database_url, source="argument")
    current = settings if settings is not None else settings_mod.Settings.from_env()
    if current.database_url:
        return DatabaseTarget(url=current.database_url, source="environment")
    return DatabaseTarget(url=embedded.embedded_url(current.home), source="embedded")
