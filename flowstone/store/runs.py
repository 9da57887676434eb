"""``flowstone_runs`` (``sql/queries/runs.sql``): one function per named query, on the caller's
connection (so the caller decides what commits together)."""

from __future__ import annotations

from datetime import datetime

from psycopg.types.json import Jsonb

from flowstone.status import RunStatus
from flowstone.store import pg, records
from flowstone.store.pg import Conn, Q

__all__ = [
    "run_abandoned_claim",
    "run_finish",
    "run_get",
    "run_insert",
    "run_list",
    "run_lock",
    "run_owner_lock",
    "run_priority",
    "run_reopen",
    "run_step_counts",
    "run_unfinished_claim",
]


def run_insert(conn: Conn, run: records.NewRun, now: datetime | None) -> None:
    """Insert a run."""
    conn.execute(
        Q("run_insert"),
        {
            "run_id": pg.run_uuid(run.run_id),
            "kind": run.kind,
            "selection": list(run.selection),
            "config": Jsonb(run.config),
            "tags": Jsonb(run.tags),
            "requested_by": run.requested_by,
            "status": run.status,
            "now": now,
        },
    )


def run_get(conn: Conn, run_id: str) -> records.Run | None:
    """The run, or ``None``."""
    row = conn.execute(Q("run_get"), {"run_id": pg.run_uuid(run_id)}).fetchone()
    return pg.run_from_row(row) if row else None


def run_list(conn: Conn, limit: int) -> list[records.Run]:
    """The newest runs first."""
    return [pg.run_from_row(r) for r in conn.execute(Q("run_list"), {"limit": limit}).fetchall()]


def run_lock(conn: Conn, run_id: str) -> pg.Pending[None]:
    """Lock the run's row until the end of the transaction."""
    return pg.Pending(conn.execute(Q("run_lock"), {"run_id": pg.run_uuid(run_id)}), lambda _: None)


def run_finish(
    conn: Conn, run_id: str, actor: str, now: datetime | None, *, commit_async: bool = False
) -> pg.Pending[records.Run | None]:
    """Lock the run's row and recompute its status (and audit ``run.finished``); the run when it
    changed. ``commit_async``: the transaction commits asynchronously unless the run ended or
    waits in it (a step's success, ADR 0013)."""
    params = {"run_id": pg.run_uuid(run_id), "actor": actor, "now": now, "commit_async": commit_async}
    cursor = conn.execute(Q("run_finish"), params)
    return pg.Pending(cursor, pg.one_or_none(pg.run_from_row))


def run_unfinished_claim(conn: Conn, limit: int) -> list[str]:
    """Claim (SKIP LOCKED) runs left unfinished with no active step; their ids."""
    return [str(r["run_id"]) for r in conn.execute(Q("run_unfinished_claim"), {"limit": limit}).fetchall()]


def run_step_counts(conn: Conn, run_id: str) -> dict[str, int]:
    """Number of steps of a run by status."""
    rows = conn.execute(Q("run_step_counts"), {"run_id": pg.run_uuid(run_id)}).fetchall()
    return {r["status"]: int(r["n"]) for r in rows}


def run_reopen(conn: Conn, run_id: str, status: RunStatus) -> records.Run | None:
    """A retried run becomes active again."""
    row = conn.execute(Q("run_reopen"), {"run_id": pg.run_uuid(run_id), "status": status}).fetchone()
    return pg.run_from_row(row) if row else None


def run_abandoned_claim(conn: Conn, *, grace_s: float, limit: int, now: datetime | None) -> list[str]:
    """Claim (SKIP LOCKED) in-process runs still running whose owner process is gone."""
    params = {"grace_s": grace_s, "limit": limit, "now": now}
    return [str(r["run_id"]) for r in conn.execute(Q("run_abandoned_claim"), params).fetchall()]


def run_owner_lock(conn: Conn, run_id: str) -> bool:
    """Try the owner lock of an in-process run on ``conn`` (held until the connection ends)."""
    row = conn.execute(Q("run_owner_lock"), {"run_id": pg.run_uuid(run_id)}).fetchone()
    return bool(row and row["locked"])


def run_priority(conn: Conn, run_id: str) -> int:
    """The priority a run was submitted with (0 when none, or when the run has no row)."""
    row = conn.execute(Q("run_priority"), {"run_id": pg.run_uuid(run_id)}).fetchone()
    return int(row["priority"]) if row else 0
