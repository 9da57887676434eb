"""``runtime.approvals``: list, read and decide approval gates (I13).

A decision is a compare-and-set from ``pending``: of two concurrent deciders exactly one wins, the
other gets :class:`~flowstone.errors.ApprovalAlreadyDecidedError`. ``approvers`` restricts who may
decide (:class:`~flowstone.errors.NotAllowedError`). Approve re-queues the step (queued runs: its
job is deferred in the same transaction; in-process runs: ``runtime.resume(run_id)`` continues
them); reject ends it ``rejected`` and skips what depends on it. ``expire_due(now=...)`` applies the
timeouts that are due (workers do it on their own through the timeout job and a periodic sweep).
"""

from __future__ import annotations

import builtins
from datetime import datetime

from flowstone import errors, events, services
from flowstone.status import ApprovalStatus
from flowstone.store import records
from flowstone.store.decisions import SYSTEM_ACTOR

__all__ = ["SYSTEM_ACTOR", "Approvals"]


class Approvals:
    """The approvals of one runtime's database."""

    def __init__(self, svc: services.Services) -> None:
        self._svc = svc

    def list(
        self, status: str | None = ApprovalStatus.PENDING, *, limit: int = 100
    ) -> builtins.list[records.Approval]:
        """Approvals with ``status`` (``None``: all), oldest request first."""
        return self._svc.postgres("approvals").approvals.list(status=status, limit=limit)

    def get(self, approval_id: int) -> records.Approval:
        """One approval; ``ApprovalNotFoundError`` if there is none with this id."""
        approval = self._svc.postgres("approvals").approvals.get(approval_id)
        if approval is None:
            raise errors.ApprovalNotFoundError(f"there is no approval {approval_id}")
        return approval

    def approve(self, approval_id: int, *, by: str, reason: str | None = None) -> records.Approval:
        """Approve: the step runs again and ``require_approval`` returns this decision."""
        return self._decide(approval_id, "approve", by=by, reason=reason)

    def reject(self, approval_id: int, *, by: str, reason: str | None = None) -> records.Approval:
        """Reject: the step ends ``rejected`` and the steps that depend on it are ``skipped``."""
        return self._decide(approval_id, "reject", by=by, reason=reason)

    def _decide(self, approval_id: int, decision: str, *, by: str, reason: str | None) -> records.Approval:
        if not isinstance(by, str) or not by.strip():
            raise errors.ConfigurationError("a decision needs the name of who decides: by='alice'")
        if by == SYSTEM_ACTOR:
            raise errors.NotAllowedError(f"{SYSTEM_ACTOR!r} is reserved for timeouts")
        decided = self._svc.postgres("approvals").approvals.decide(
            approval_id,
            "approve" if decision == "approve" else "reject",
            by=by,
            reason=reason,
            jobs=self._svc.jobs,
        )
        _decided(decided)
        return decided

    def expire_due(self, *, now: datetime | None = None) -> builtins.list[records.Approval]:
        """Apply ``on_timeout`` to the pending approvals due at ``now`` (default: the database
        clock), as the actor ``system``; returns the approvals decided."""
        expired = self._svc.postgres("approvals").approvals.expire_due(jobs=self._svc.jobs, now=now)
        for approval in expired:
            _decided(approval)
        return expired


def _decided(approval: records.Approval) -> None:
    events.emit(
        "approval.decided",
        run_id=approval.run_id,
        asset=approval.asset,
        partition=approval.partition_key,
        approval_id=approval.id,
        status=str(approval.status),
        by=approval.decided_by,
    )
