"""Approvals as the Postgres store offers them beyond the contract: reading, a person's decision,
and timeouts (the transactions are in :mod:`flowstone.store.decisions`). Composed into
:class:`flowstone.store.postgres.PostgresStore` as ``store.approvals``.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Literal

from flowstone.status import ApprovalStatus
from flowstone.store import approvals, base, decisions, pg, records

__all__ = ["PostgresApprovals"]


class PostgresApprovals:
    """``flowstone_approvals`` on a :class:`~flowstone.store.pg.Database`."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def get(self, approval_id: int) -> records.Approval | None:
        """One approval, or ``None``."""
        with self.db.session("read approval") as conn:
            return approvals.approval_get(conn, approval_id)

    def list(
        self, *, status: str | None = ApprovalStatus.PENDING, limit: int = 100
    ) -> builtins.list[records.Approval]:
        """Approvals (of one status, or all), oldest request first."""
        with self.db.session("list approvals") as conn:
            return approvals.approval_list(conn, status, limit)

    def decide(
        self,
        approval_id: int,
        decision: Literal["approve", "reject"],
        *,
        by: str,
        reason: str | None,
        jobs: base.JobQueue | None,
        now: datetime | None = None,
    ) -> records.Approval:
        """A person's decision and its continuation, in one transaction."""
        with self.db.transaction("decide approval") as conn:
            return decisions.decide(conn, approval_id, decision, by=by, reason=reason, jobs=jobs, now=now)

    def expire_due(
        self,
        *,
        jobs: base.JobQueue | None,
        now: datetime | None = None,
        materialization_id: int | None = None,
    ) -> builtins.list[records.Approval]:
        """Apply ``on_timeout`` to the pending approvals that are due, as the actor ``system``."""
        with self.db.transaction("expire approvals") as conn:
            return decisions.expire_due(conn, jobs=jobs, now=now, materialization_id=materialization_id)
