"""The one place that decides which database FlowStone uses (invariant I9).

Order: an explicit URL, else ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres in
``$FLOWSTONE_HOME``. The runtime and the ``flowstone db`` commands call :func:`resolve_database`;
nothing else looks at the environment for a database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from flowstone import errors
from flowstone import settings as settings_mod
from flowstone.store import embedded, migrations

__all__ = ["DatabaseTarget", "migrated", "resolve_database", "through_blips"]

T = TypeVar("T")
logger = logging.getLogger("flowstone")


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


def migrated(target: DatabaseTarget) -> DatabaseTarget:
    """The database, migrated when it is the embedded one; an external one with migrations to
    apply is refused with what to run."""
    todo = through_blips("check the migrations", lambda: migrations.pending(target.url))
    if todo:
        if target.source == "embedded":
            migrations.upgrade(target.url)
        else:
            raise errors.ConfigurationError(
                f"the database has {len(todo)} FlowStone migration(s) to apply "
                f"({', '.join(todo)}): run `flowstone db upgrade`"
            )
    return target


def through_blips(what: str, call: Callable[[], T], *, attempts: int = 6) -> T:
    """``call()``, again after a transient database error (a dropped connection, a restart in
    progress) with backoff, ~3 s in all: a process started in the middle of a blip (a worker
    restarted by its supervisor) starts instead of dying. Other errors, and the last one, raise."""
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except errors.StoreError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            logger.info("could not %s (%s); trying again in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
