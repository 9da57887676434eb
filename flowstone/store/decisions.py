"""Approval transactions (I13) on Postgres, composed from the table modules: request, decide (a
person or a timeout), and the step's continuation.

Every decision is a compare-and-set from ``pending`` under a row lock, and commits together with
its continuation: approve re-queues the step (and, for queued runs, defers its job with the same
three-key args); reject ends it ``rejected`` and skips what depends on it; a timeout applies the
request's ``on_timeout`` through the same code path with the actor ``system``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flowstone import approval_types, errors
from flowstone.status import ApprovalStatus, RunKind, StepStatus
from flowstone.store import approvals, audit, base, pg, records, runs, transitions
from flowstone.store import materializations as mat
from flowstone.store.pg import Conn, Row

__all__ = ["SYSTEM_ACTOR", "apply", "decide", "decision_of", "expire_due", "request"]

SYSTEM_ACTOR = "system"
"""The actor of decisions made by timeouts."""

Decision = Literal["approve", "reject", "expire"]
_STATUS = {
    "approve": ApprovalStatus.APPROVED,
    "reject": ApprovalStatus.REJECTED,
    "expire": ApprovalStatus.EXPIRED,
}


def request(
    conn: Conn,
    step: records.Materialization,
    req: approval_types.ApprovalRequest,
    *,
    actor: str,
    jobs: base.JobQueue | None,
    now: datetime | None,
) -> bool:
    """The step waits, its approval is recorded once (however often it asks), the audit event and
    the timeout job of a new request, the run's status. ``False`` when the attempt no longer
    holds the step.

    The run's row is locked first (FOR NO KEY UPDATE, the lock ``flowstone_run_finish`` takes).
    Before migration 0019 finishing the run took FOR UPDATE, which conflicts with the share lock
    that the approval row's foreign key takes on the run: two requests of one run deadlocked, each
    holding the share lock the other's FOR UPDATE waited for. Taking the lock first keeps one
    order for the run's lock however the steps' rows are locked."""
    runs.run_lock(conn, step.run_id)
    row = approvals.approval_request(conn, step, req, actor, now)
    if row is None:
        return False
    if row["approval_id"] is not None and row["timeout_at"] is not None and jobs is not None:
        job_id = jobs.defer_timeout(conn, step.run_id, step.asset, step.partition_key, row["timeout_at"])
        approvals.approval_set_timeout_job(conn, row["approval_id"], job_id)
    transitions.finish(conn, step.run_id, actor, now)
    return True


def decision_of(approval: records.Approval | None) -> approval_types.ApprovalDecision | None:
    """The decision an asset sees: ``None`` while none exists or it is pending; raises
    ``ApprovalRejectedError`` for a rejected or expired one."""
    if approval is None or approval.status == ApprovalStatus.PENDING:
        return None
    if approval.status != ApprovalStatus.APPROVED:
        raise errors.ApprovalRejectedError(
            f"approval {approval.id} is {approval.status}",
            asset=approval.asset,
            partition=approval.partition_key,
        )
    assert approval.decided_by is not None  # noqa: S101 - CHECK: decided_at set when not pending
    assert approval.decided_at is not None  # noqa: S101
    return approval_types.ApprovalDecision(
        approval_id=approval.id,
        approved=True,
        decided_by=approval.decided_by,
        decided_at=approval.decided_at,
        reason=approval.reason,
    )


def _queued(row: Row) -> bool:
    """Whether the approval's run is a queued one (workers continue it after an approval)."""
    if row["run_kind"] == RunKind.SUBMIT:
        return True
    return row["run_kind"] == RunKind.BACKFILL and (row["run_tags"] or {}).get("backfill") != "sync"


def decide(
    conn: Conn,
    approval_id: int,
    decision: Literal["approve", "reject"],
    *,
    by: str,
    reason: str | None,
    jobs: base.JobQueue | None,
    now: datetime | None,
) -> records.Approval:
    """A person's decision: compare-and-set from pending, and its continuation."""
    row = approvals.approval_lock(conn, approval_id)
    if row is None:
        raise errors.ApprovalNotFoundError(f"there is no approval {approval_id}")
    current = pg.approval_from_row(row)
    if current.status != ApprovalStatus.PENDING:
        raise errors.ApprovalAlreadyDecidedError(
            f"approval {approval_id} was already decided: {current.status} by {current.decided_by} "
            f"at {current.decided_at}",
            asset=current.asset,
            partition=current.partition_key,
            run_id=current.run_id,
        )
    if current.approvers is not None and by not in current.approvers:
        raise errors.NotAllowedError(
            f"{by!r} may not decide approval {approval_id}; approvers: {', '.join(current.approvers)}",
            asset=current.asset,
            partition=current.partition_key,
            run_id=current.run_id,
        )
    return apply(conn, row, decision, by=by, reason=reason, jobs=jobs, now=now)


def expire_due(
    conn: Conn,
    *,
    jobs: base.JobQueue | None,
    now: datetime | None,
    materialization_id: int | None = None,
    limit: int = 100,
) -> list[records.Approval]:
    """Apply ``on_timeout`` to pending approvals whose timeout passed (claimed with SKIP LOCKED,
    I18), as the actor ``system``."""
    decided = []
    for row in approvals.approval_due_claim(conn, now, materialization_id, limit):
        policy = row["on_timeout"]
        decision: Decision = (
            "approve" if policy == "approve" else "reject" if policy == "reject" else "expire"
        )
        reason = f"timed out at {row['timeout_at'].isoformat()} (on_timeout={policy})"
        decided.append(apply(conn, row, decision, by=SYSTEM_ACTOR, reason=reason, jobs=jobs, now=now))
    return decided


def apply(
    conn: Conn,
    row: Row,
    decision: Decision,
    *,
    by: str,
    reason: str | None,
    jobs: base.JobQueue | None,
    now: datetime | None,
) -> records.Approval:
    """Record a decision on a locked pending approval and carry it out, audited."""
    approval = approvals.approval_decide(conn, row["id"], _STATUS[decision], by=by, reason=reason, now=now)
    if approval is None:  # pragma: no cover - the row is locked and was pending
        raise errors.ApprovalAlreadyDecidedError(f"approval {row['id']} was already decided")
    if row["timeout_job_id"] is not None and jobs is not None:
        jobs.cancel_job(conn, row["timeout_job_id"])  # a decision came first (a no-op if it is running)
    if decision == "approve":
        resumed = mat.materialization_resume_approved(conn, approval.materialization_id, now)
        if resumed is not None and _queued(row):
            if jobs is None:
                raise errors.ConfigurationError("approving a queued run needs the queue's enqueuer")
            # The step alone gets the new job: batch-mates of a batched backfill keep theirs.
            (job_id,) = jobs.defer_steps(conn, approval.run_id, [(approval.asset, approval.partition_key)])
            mat.materialization_set_job(conn, approval.materialization_id, job_id)
    else:
        error_type: type[errors.FlowStoneError] = (
            errors.ApprovalRejectedError if decision == "reject" else errors.ApprovalTimedOutError
        )
        error = error_type(
            f"approval {approval.id} {approval.status} by {by}" + (f": {reason}" if reason else ""),
            asset=approval.asset,
            partition=approval.partition_key,
            run_id=approval.run_id,
            context={"approval_id": approval.id},
        )
        status = StepStatus.REJECTED if decision == "reject" else StepStatus.FAILED
        ended = mat.materialization_end_waiting(
            conn, approval.materialization_id, status, error.to_dict(), now
        )
        if ended is not None:
            mat.materialization_skip_reachable(conn, ended, now)
    audit.audit_insert(
        conn,
        audit.audit_params(
            f"approval.{approval.status}",
            actor=by,
            run_id=approval.run_id,
            materialization_id=approval.materialization_id,
            asset=approval.asset,
            partition_key=approval.partition_key,
            details={"approval_id": approval.id, "reason": reason},
            now=now,
        ),
    )
    transitions.finish(conn, approval.run_id, by, now)
    return approval
