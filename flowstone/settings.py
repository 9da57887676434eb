"""Settings read from the environment: where the database is, where FlowStone keeps local state.

| variable                 | meaning                                                       | default        |
|--------------------------|---------------------------------------------------------------|----------------|
| `FLOWSTONE_DATABASE_URL` | an external Postgres (libpq URL or DSN)                       | embedded       |
| `FLOWSTONE_HOME`         | local state: the embedded Postgres data                       | `./.flowstone` |
| `FLOWSTONE_ACTOR`        | who is recorded as acting in the audit log                    | the OS user    |

An empty variable counts as unset (invariant I2: absent never overrides a default).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path

import pydantic

__all__ = ["Settings"]


class Settings(pydantic.BaseModel):
    """FlowStone's environment settings, validated."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    database_url: str | None = None
    home: Path = Path(".flowstone")
    actor: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the ``FLOWSTONE_*`` variables; empty values are ignored."""
        source = os.environ if env is None else env
        values = {
            field: source.get(var, "").strip()
            for field, var in (
                ("database_url", "FLOWSTONE_DATABASE_URL"),
                ("home", "FLOWSTONE_HOME"),
                ("actor", "FLOWSTONE_ACTOR"),
            )
        }
        return cls.model_validate({k: v for k, v in values.items() if v})

    def resolved_actor(self) -> str:
        """``FLOWSTONE_ACTOR``, else the OS user name, else ``"unknown"``."""
        if self.actor:
            return self.actor
        try:
            return getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            return "unknown"
