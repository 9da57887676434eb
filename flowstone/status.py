"""The closed sets of FlowStone's state machine, as ``StrEnum`` s.

Each enum mirrors a ``CHECK (... IN (...))`` list of the migrations; ``tests/unit/test_status.py``
reads the migrations and fails when the two drift apart. Being ``str`` subclasses, the members
compare equal to their values (``StepStatus.SUCCEEDED == "succeeded"``), format as their values
and are sent to Postgres as text.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "RUN_TERMINAL",
    "STEP_ACTIVE",
    "STEP_IN_FLIGHT",
    "STEP_TERMINAL",
    "ApprovalStatus",
    "RunKind",
    "RunStatus",
    "StepStatus",
    "run_status_of",
]


class RunStatus(StrEnum):
    """``flowstone_runs.status``."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """``flowstone_materializations.status``: one step (asset, partition) of a run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class ApprovalStatus(StrEnum):
    """``flowstone_approvals.status``."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    """The run was cancelled while the step waited: nobody needs to decide any more."""


class RunKind(StrEnum):
    """``flowstone_runs.kind``: how the run was started."""

    MATERIALIZE = "materialize"
    """In-process (``materialize``, ``backfill_sync``): the calling process runs the steps."""
    SUBMIT = "submit"
    """Queued: workers run the steps."""
    BACKFILL = "backfill"
    """A backfill of one asset: queued (``backfill``), or in-process (``backfill_sync``, tagged
    ``{"backfill": "sync"}``)."""


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
"""A run in one of these statuses never changes again."""

STEP_TERMINAL = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.SKIPPED,
        StepStatus.REJECTED,
        StepStatus.CANCELLED,
    }
)
"""A step in one of these statuses never runs again (a retry is a new run)."""

STEP_ACTIVE = frozenset({StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING})
"""Steps that will still run (or run now) without anybody deciding anything."""

STEP_IN_FLIGHT = frozenset(
    {
        StepStatus.SUCCEEDED,
        StepStatus.PENDING,
        StepStatus.QUEUED,
        StepStatus.RUNNING,
        StepStatus.WAITING_APPROVAL,
    }
)
"""A partition with a row in one of these statuses is covered: succeeded or on its way."""


def run_status_of(steps: set[StepStatus]) -> RunStatus:
    """A run's status from the statuses of its steps, as the SQL ``run_finish`` computes it."""
    if steps & {StepStatus.QUEUED, StepStatus.RUNNING}:
        return RunStatus.RUNNING
    if StepStatus.WAITING_APPROVAL in steps:
        return RunStatus.WAITING_APPROVAL  # nothing queued or running: pending steps wait behind the gate
    if StepStatus.PENDING in steps:
        return RunStatus.RUNNING
    if StepStatus.CANCELLED in steps:
        return RunStatus.CANCELLED
    if steps & {StepStatus.FAILED, StepStatus.REJECTED, StepStatus.SKIPPED}:
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED
