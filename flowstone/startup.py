"""What a runtime does once when it opens the database: check (or apply) the migrations, read the
published definitions, and ride out a database blip while doing so."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from flowstone import errors
from flowstone.store import backend, migrations
from flowstone.store.pg_definitions import Published
from flowstone.store.postgres import PostgresStore

__all__ = ["migrated", "patience", "published", "through_blips"]

T = TypeVar("T")
logger = logging.getLogger("flowstone")

_PATIENCE_S = 3.0
"""How long start-up rides out a database blip (``flowstone worker`` raises it to its outage
timeout: a worker restarted by its supervisor during an outage waits for the database)."""


def patience(seconds: float) -> None:
    """Ride out blips at start-up for up to ``seconds`` in this process (the worker command)."""
    global _PATIENCE_S  # noqa: PLW0603 - one setting for the process, set once by the CLI
    _PATIENCE_S = max(0.0, seconds)


def migrated(target: backend.DatabaseTarget) -> backend.DatabaseTarget:
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


def published(url: str) -> Published:
    """The definitions last published in the database at ``url``; a clear error when none were."""
    probe = PostgresStore(url, max_connections=1)
    try:
        found = through_blips("read the published definitions", probe.snapshots.read)
    finally:
        probe.close()
    if found is None:
        raise errors.ConfigurationError(
            "the database has no published definitions yet: pass --defs module:attribute (or set "
            "FLOWSTONE_DEFS), or start a worker or run any command with --defs once"
        )
    return found


def through_blips(what: str, call: Callable[[], T], *, patience_s: float | None = None) -> T:
    """``call()``, again after a transient database error (a dropped connection, a restart in
    progress) with backoff (at most 2 s apart) for up to ``patience_s`` (default: 3 s, or what
    :func:`patience` set): a process started in the middle of a blip (a worker restarted by its
    supervisor) starts instead of dying. Other errors, and the last one, raise."""
    deadline = time.monotonic() + (_PATIENCE_S if patience_s is None else patience_s)
    delay = 0.1
    while True:
        try:
            return call()
        except errors.StoreError as exc:
            if not exc.retryable or time.monotonic() + delay > deadline:
                raise
            logger.info("could not %s (%s); trying again in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
