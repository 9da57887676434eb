"""Approval transactions (I13), Postgres only: request, decide (human or timeout), list.

Every decision is a compare-and-set from ``pending`` under a row lock, and commits together with
its continuation: approve re-queues the step (and, for queued runs, defers its job with the same
three-key args); reject ends it ``rejected`` and skips what depends on it; a timeout applies the
request's ``on_timeout`` through the same code path with the actor ``system``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from flowstone import errors
from flowstone.approval_types import ApprovalDecision, ApprovalRequest
from flowstone.store import records, sqlfiles
from flowstone.store.postgres import materialization_from_row
from flowstone.store.queue_ops import Enqueue, PostgresQueueStore

__all__ = ["SYSTEM_ACTOR", "DeferTimeout", "PostgresFlowStore"]

Q = sqlfiles.query
Row = dict[str, Any]
Conn = psycopg.Connection[Row]

SYSTEM_ACTOR = "system"
"""The actor of decisions made by timeouts."""

DeferTimeout = Callable[[Conn, str, str, str, datetime], int]
"""Defers the timeout job of an approval: (conn, run_id, asset, partition_key, at) -> job id."""

Decision = Literal["approve", "reject", "expire"]

# Queued runs continue through a job; in-process runs through resume().
_QUEUED_KINDS = frozenset({"submit", "backfill"})


def approval_from_row(row: Row) -> records.Approval:
    """The record of a ``flowstone_approvals`` row."""
    return records.Approval(
        id=row["id"],
        materialization_id=row["materialization_id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=row["status"],
        message=row["message"],
        context_data=row["context_data"],
        approvers=tuple(row["approvers"]) if row["approvers"] is not None else None,
        on_timeout=row["on_timeout"],
        requested_at=row["requested_at"],
        timeout_at=row["timeout_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        reason=row["reason"],
    )


class PostgresFlowStore(PostgresQueueStore):
    """The complete Postgres store: metadata, queue and approvals."""

    # -- asking ---------------------------------------------------------------------------------

    def request_approval(
        self,
        step: records.Materialization,
        request: ApprovalRequest,
        *,
        actor: str,
        defer_timeout: DeferTimeout | None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """One transaction: the step waits, its approval is recorded once (however often it asks),
        the audit event and the timeout job of a new request, the run's status. ``None`` when the
        attempt no longer holds the step."""
        with self._tx("request approval") as conn:
            row = conn.execute(
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
            if row is None:
                return None
            if row["approval_id"] is not None and row["timeout_at"] is not None and defer_timeout is not None:
                defer_timeout(conn, step.run_id, step.asset, step.partition_key, row["timeout_at"])
            self._finish(conn, step.run_id, actor, now)
        return self.get_step(step.run_id, step.asset, step.partition_key)

    def approval_decision(self, materialization_id: int) -> ApprovalDecision | None:
        """The decision on a materialization's approval: ``None`` while none exists or it is
        pending; raises ``ApprovalRejectedError`` for a rejected or expired one."""
        row = self._one(
            "read approval", "approval_for_materialization", {"materialization_id": materialization_id}
        )
        if row is None or row["status"] == "pending":
            return None
        approval = approval_from_row(row)
        if approval.status != "approved":
            raise errors.ApprovalRejectedError(
                f"approval {approval.id} is {approval.status}",
                asset=approval.asset,
                partition=approval.partition_key,
            )
        assert approval.decided_by is not None  # noqa: S101 - CHECK: decided_at set when not pending
        assert approval.decided_at is not None  # noqa: S101
        return ApprovalDecision(
            approval_id=approval.id,
            approved=True,
            decided_by=approval.decided_by,
            decided_at=approval.decided_at,
            reason=approval.reason,
        )

    # -- reading --------------------------------------------------------------------------------

    def get_approval(self, approval_id: int) -> records.Approval | None:
        """One approval, or ``None``."""
        row = self._one("read approval", "approval_get", {"id": approval_id})
        return approval_from_row(row) if row else None

    def list_approvals(self, *, status: str | None = "pending", limit: int = 100) -> list[records.Approval]:
        """Approvals (of one status, or all), oldest request first."""
        return [
            approval_from_row(r)
            for r in self._all("list approvals", "approval_list", {"status": status, "limit": limit})
        ]

    # -- deciding -------------------------------------------------------------------------------

    def decide_approval(
        self,
        approval_id: int,
        decision: Literal["approve", "reject"],
        *,
        by: str,
        reason: str | None,
        enqueue: Enqueue | None,
        now: datetime | None = None,
    ) -> records.Approval:
        """A human decision: compare-and-set from pending, and its continuation, in one transaction."""
        with self._tx("decide approval") as conn:
            row = conn.execute(Q("approval_lock"), {"id": approval_id}).fetchone()
            if row is None:
                raise errors.ApprovalNotFoundError(f"there is no approval {approval_id}")
            current = approval_from_row(row)
            if current.status != "pending":
                raise errors.ApprovalAlreadyDecidedError(
                    f"approval {approval_id} was already decided: {current.status} by {current.decided_by} "
                    f"at {current.decided_at}",
                    asset=current.asset,
                    partition=current.partition_key,
                    run_id=current.run_id,
                )
            if current.approvers is not None and by not in current.approvers:
                raise errors.NotAllowedError(
                    f"{by!r} may not decide approval {approval_id}; "
                    f"approvers: {', '.join(current.approvers)}",
                    asset=current.asset,
                    partition=current.partition_key,
                    run_id=current.run_id,
                )
            return self._apply(conn, row, decision, by=by, reason=reason, enqueue=enqueue, now=now)

    def expire_due_approvals(
        self,
        *,
        enqueue: Enqueue | None,
        now: datetime | None = None,
        materialization_id: int | None = None,
        limit: int = 100,
    ) -> list[records.Approval]:
        """Apply ``on_timeout`` to pending approvals whose timeout passed (claimed with SKIP LOCKED,
        I18), as the actor ``system``. Returns the approvals decided."""
        decided = []
        with self._tx("expire approvals") as conn:
            rows = conn.execute(
                Q("approval_due_claim"),
                {"now": now, "materialization_id": materialization_id, "limit": limit},
            ).fetchall()
            for row in rows:
                policy = row["on_timeout"]
                decision: Decision = (
                    "approve" if policy == "approve" else "reject" if policy == "reject" else "expire"
                )
                reason = f"timed out at {row['timeout_at'].isoformat()} (on_timeout={policy})"
                decided.append(
                    self._apply(conn, row, decision, by=SYSTEM_ACTOR, reason=reason, enqueue=enqueue, now=now)
                )
        return decided

    def _apply(
        self,
        conn: Conn,
        row: Row,
        decision: Decision,
        *,
        by: str,
        reason: str | None,
        enqueue: Enqueue | None,
        now: datetime | None,
    ) -> records.Approval:
        status = {"approve": "approved", "reject": "rejected", "expire": "expired"}[decision]
        decided = conn.execute(
            Q("approval_decide"), {"id": row["id"], "status": status, "by": by, "reason": reason, "now": now}
        ).fetchone()
        if decided is None:  # pragma: no cover - the row is locked and was pending
            raise errors.ApprovalAlreadyDecidedError(f"approval {row['id']} was already decided")
        approval = approval_from_row(decided)
        if decision == "approve":
            resumed = conn.execute(
                Q("materialization_resume_approved"), {"id": approval.materialization_id, "now": now}
            ).fetchone()
            if resumed is not None and row["run_kind"] in _QUEUED_KINDS:
                if enqueue is None:
                    raise errors.ConfigurationError("approving a queued run needs the queue's enqueuer")
                self._defer(conn, approval.run_id, [(approval.asset, approval.partition_key)], enqueue)
        else:
            error_type: type[errors.FlowStoneError] = (
                errors.ApprovalRejectedError if decision == "reject" else errors.ApprovalTimedOutError
            )
            error = error_type(
                f"approval {approval.id} {status} by {by}" + (f": {reason}" if reason else ""),
                asset=approval.asset,
                partition=approval.partition_key,
                run_id=approval.run_id,
                context={"approval_id": approval.id},
            )
            ended = conn.execute(
                Q("materialization_end_waiting"),
                {
                    "id": approval.materialization_id,
                    "status": "rejected" if decision == "reject" else "failed",
                    "error": Jsonb(error.to_dict()),
                    "now": now,
                },
            ).fetchone()
            if ended is not None:
                self._skip_reachable(conn, materialization_from_row(ended), now)
        conn.execute(
            Q("audit_insert"),
            {
                "event": f"approval.{status}",
                "actor": by,
                "run_id": approval.run_id,
                "materialization_id": approval.materialization_id,
                "asset": approval.asset,
                "partition_key": approval.partition_key,
                "details": Jsonb({"approval_id": approval.id, "reason": reason}),
                "now": now,
            },
        )
        self._finish(conn, approval.run_id, by, now)
        return approval
