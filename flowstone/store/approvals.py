"""``flowstone_approvals`` (``sql/queries/approvals.sql``): one function per named query."""

from __future__ import annotations

from datetime import datetime

from psycopg.types.json import Jsonb

from flowstone import approval_types
from flowstone.status import ApprovalStatus
from flowstone.store import pg, records
from flowstone.store.pg import Conn, Q, Row

__all__ = [
    "approval_decide",
    "approval_due_claim",
    "approval_for_materialization",
    "approval_get",
    "approval_list",
    "approval_lock",
    "approval_request",
    "approval_set_timeout_job",
    "approval_withdraw_run",
]


def approval_request(
    conn: Conn,
    step: records.Materialization,
    request: approval_types.ApprovalRequest,
    actor: str,
    now: datetime | None,
) -> Row | None:
    """The running attempt → ``waiting_approval`` and its approval row (once per materialization),
    audited. One row when the step now waits (``approval_id`` is ``None`` when the approval
    already existed), else ``None``."""
    return conn.execute(
        Q("approval_request"),
        {
            "id": step.id,
            "attempt": step.attempt,
            "message": request.message,
            "context_data": Jsonb(dict(request.context_data)),
            "approvers": list(request.approvers) if request.approvers is not None else None,
            "on_timeout": request.on_timeout,
            "timeout_s": request.timeout.total_seconds() if request.timeout is not None else None,
            "actor": actor,
            "now": now,
        },
    ).fetchone()


def approval_get(conn: Conn, approval_id: int) -> records.Approval | None:
    """One approval, or ``None``."""
    row = conn.execute(Q("approval_get"), {"id": approval_id}).fetchone()
    return pg.approval_from_row(row) if row else None


def approval_for_materialization(conn: Conn, materialization_id: int) -> records.Approval | None:
    """The approval of a materialization, or ``None``."""
    row = conn.execute(
        Q("approval_for_materialization"), {"materialization_id": materialization_id}
    ).fetchone()
    return pg.approval_from_row(row) if row else None


def approval_list(conn: Conn, status: str | None, limit: int) -> list[records.Approval]:
    """Approvals (of one status, or all), oldest request first."""
    rows = conn.execute(Q("approval_list"), {"status": status, "limit": limit}).fetchall()
    return [pg.approval_from_row(r) for r in rows]


def approval_lock(conn: Conn, approval_id: int) -> Row | None:
    """One approval locked for a decision, with its run's kind and tags, or ``None``."""
    return conn.execute(Q("approval_lock"), {"id": approval_id}).fetchone()


def approval_due_claim(
    conn: Conn, now: datetime | None, materialization_id: int | None, limit: int
) -> list[Row]:
    """Claim (SKIP LOCKED, I18) pending approvals whose timeout passed, with their run's kind."""
    return conn.execute(
        Q("approval_due_claim"), {"now": now, "materialization_id": materialization_id, "limit": limit}
    ).fetchall()


def approval_decide(
    conn: Conn, approval_id: int, status: ApprovalStatus, *, by: str, reason: str | None, now: datetime | None
) -> records.Approval | None:
    """Compare-and-set from pending; the decided approval, or ``None`` when already decided."""
    row = conn.execute(
        Q("approval_decide"), {"id": approval_id, "status": status, "by": by, "reason": reason, "now": now}
    ).fetchone()
    return pg.approval_from_row(row) if row else None


def approval_set_timeout_job(conn: Conn, approval_id: int, job_id: int) -> None:
    """Record the approval-timeout job of a request."""
    conn.execute(Q("approval_set_timeout_job"), {"id": approval_id, "job_id": job_id})


def approval_withdraw_run(
    conn: Conn, run_id: str, *, by: str, reason: str, now: datetime | None
) -> list[records.Approval]:
    """Withdraw the pending approvals of a cancelled run."""
    rows = conn.execute(
        Q("approval_withdraw_run"), {"run_id": pg.run_uuid(run_id), "by": by, "reason": reason, "now": now}
    ).fetchall()
    return [pg.approval_from_row(r) for r in rows]
