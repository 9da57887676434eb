"""``flowstone_audit_log`` (``sql/queries/audit.sql``): the append-only event log.

:func:`audit_params` is the one builder of an event's parameters; the statements that write an
event as part of a larger one (the success and failure CTEs) take the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from flowstone.store import pg, records
from flowstone.store.pg import Conn, Q

__all__ = ["audit_insert", "audit_list", "audit_params"]


def audit_params(
    event: str,
    *,
    actor: str,
    run_id: str | None = None,
    materialization_id: int | None = None,
    asset: str | None = None,
    partition_key: str | None = None,
    details: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The parameters of ``audit_insert``."""
    return {
        "event": event,
        "actor": actor,
        "run_id": pg.run_uuid(run_id) if run_id else None,
        "materialization_id": materialization_id,
        "asset": asset,
        "partition_key": partition_key,
        "details": Jsonb(dict(details or {})),
        "now": now,
    }


def audit_insert(conn: Conn, params: Mapping[str, Any]) -> int:
    """Append one event (parameters from :func:`audit_params`); returns its id."""
    row = conn.execute(Q("audit_insert"), params).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns a row
    return int(row["id"])


def audit_list(conn: Conn, run_id: str | None, limit: int) -> list[records.AuditEvent]:
    """Events in id order, optionally of one run."""
    rows = conn.execute(
        Q("audit_list"), {"run_id": pg.run_uuid(run_id) if run_id else None, "limit": limit}
    ).fetchall()
    return [
        records.AuditEvent(
            id=r["id"],
            at=r["at"],
            event=r["event"],
            actor=r["actor"],
            run_id=str(r["run_id"]) if r["run_id"] else None,
            materialization_id=r["materialization_id"],
            asset=r["asset"],
            partition_key=r["partition_key"],
            details=r["details"],
        )
        for r in rows
    ]
