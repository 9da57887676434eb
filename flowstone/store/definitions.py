"""The definitions snapshot tables (``sql/queries/definitions.sql``), Postgres only: one function per
named query, on the caller's connection (composed by :mod:`flowstone.store.pg_definitions`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from flowstone.store.pg import Conn, Q, Row

__all__ = [
    "definitions_list",
    "definitions_lock",
    "definitions_retire",
    "definitions_state_get",
    "definitions_state_set",
    "definitions_upsert",
]


def definitions_state_get(conn: Conn) -> Row | None:
    """The published set's state row, or ``None`` when nothing was published."""
    return conn.execute(Q("definitions_state_get")).fetchone()


def definitions_lock(conn: Conn) -> None:
    """Serialize publishers for the rest of this transaction."""
    conn.execute(Q("definitions_lock"))


def definitions_upsert(
    conn: Conn, rows: Sequence[Mapping[str, Any]], definitions_hash: str, now: datetime | None
) -> None:
    """Write the assets of a published set (present)."""
    params = {"rows": Jsonb(list(rows)), "hash": definitions_hash, "now": now}
    conn.execute(Q("definitions_upsert"), params)


def definitions_retire(conn: Conn, present: Sequence[str], now: datetime | None) -> None:
    """Mark absent the assets not in ``present``."""
    conn.execute(Q("definitions_retire"), {"assets": list(present), "now": now})


def definitions_state_set(
    conn: Conn,
    *,
    definitions_hash: str,
    fmt: int,
    assets: int,
    automation: Mapping[str, Any],
    published_by: str,
    now: datetime | None,
) -> None:
    """Record the published set as a whole."""
    params = {
        "hash": definitions_hash,
        "format": fmt,
        "assets": assets,
        "automation": Jsonb(dict(automation)),
        "published_by": published_by,
        "now": now,
    }
    conn.execute(Q("definitions_state_set"), params)


def definitions_list(conn: Conn) -> list[dict[str, Any]]:
    """The specs of the present assets, in published order."""
    return [dict(row["spec"]) for row in conn.execute(Q("definitions_list")).fetchall()]
