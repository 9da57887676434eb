"""Plain records returned by the stores: strings, numbers, datetimes and JSON, never live objects.

Names read back from the database stay strings (I3): nothing here imports or resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowstone import partition_keys
from flowstone.status import STEP_TERMINAL, ApprovalStatus, RunKind, RunStatus, StepStatus

__all__ = [
    "Approval",
    "AuditEvent",
    "CheckOutcome",
    "CheckResult",
    "GcCandidate",
    "LineageRow",
    "Materialization",
    "NewRun",
    "PlannedStep",
    "Run",
    "StepLog",
    "StepLogLine",
]


@dataclass(frozen=True, slots=True)
class Materialization:
    """One row of ``flowstone_materializations``."""

    id: int
    run_id: str
    asset: str
    partition_key: str
    status: StepStatus
    attempt: int
    pending_upstream: int
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: dict[str, Any] | None
    metadata: dict[str, Any]
    output_ref: dict[str, Any] | None
    code_version: str | None
    job_id: int | None
    output_deleted_at: datetime | None = None
    """When ``flowstone gc`` deleted this version's output (``None``: it is stored)."""
    memoized_from: int | None = None
    """The materialization this ``skipped`` step reused (memoization, ``@fs.asset(memoize=True)``):
    the function did not run and the steps downstream read that row. ``None`` for every other row."""

    @property
    def memoized(self) -> bool:
        """Whether memoization skipped this step: a success for the run, not a failure."""
        return self.memoized_from is not None

    @property
    def ok(self) -> bool:
        """Whether the step ended well: ``succeeded``, or ``skipped`` by memoization."""
        return self.status == StepStatus.SUCCEEDED or self.memoized_from is not None

    @property
    def partition(self) -> partition_keys.PartitionValue | None:
        """The typed partition value (``None`` for unpartitioned assets)."""
        return partition_keys.decode(self.partition_key)

    @property
    def terminal(self) -> bool:
        """Whether the status is final (succeeded, failed, skipped, rejected, cancelled)."""
        return self.status in STEP_TERMINAL


@dataclass(frozen=True, slots=True)
class Run:
    """One row of ``flowstone_runs``."""

    run_id: str
    kind: RunKind
    selection: tuple[str, ...]
    config: dict[str, Any]
    tags: dict[str, Any]
    requested_by: str
    status: RunStatus
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a caller asks the store to record when a run starts."""

    run_id: str
    kind: RunKind
    selection: tuple[str, ...]
    requested_by: str
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step to plan in a run: asset, encoded partition key, unfinished upstream steps of the run."""

    asset: str
    partition_key: str
    pending_upstream: int = 0
    code_version: str | None = None


@dataclass(frozen=True, slots=True)
class LineageRow:
    """One materialization reached by a lineage walk.

    ``via_id`` is the materialization it was reached from (the reader when walking upstream, the
    row read when walking downstream).
    """

    depth: int
    via_id: int
    input_name: str
    id: int
    run_id: str
    asset: str
    partition_key: str
    status: StepStatus
    finished_at: datetime | None
    also_via: tuple[int, ...] = ()
    """The other materializations of the walk it is joined to (the other edges of a diamond)."""

    @property
    def partition(self) -> partition_keys.PartitionValue | None:
        """The typed partition value."""
        return partition_keys.decode(self.partition_key)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of ``flowstone_audit_log``."""

    id: int
    at: datetime
    event: str
    actor: str
    run_id: str | None
    materialization_id: int | None
    asset: str | None
    partition_key: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Approval:
    """One row of ``flowstone_approvals``."""

    id: int
    materialization_id: int
    run_id: str
    asset: str
    partition_key: str
    status: ApprovalStatus
    message: str
    context_data: dict[str, Any]
    approvers: tuple[str, ...] | None
    on_timeout: str
    requested_at: datetime
    timeout_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    timeout_job_id: int | None = None
    """The approval-timeout job, cancelled when a decision comes first."""

    @property
    def partition(self) -> partition_keys.PartitionValue | None:
        """The typed partition value."""
        return partition_keys.decode(self.partition_key)


@dataclass(frozen=True, slots=True)
class GcCandidate:
    """A succeeded materialization whose output retention no longer needs."""

    materialization_id: int
    asset: str
    partition_key: str
    output_ref: dict[str, Any]
    """The stored ``OutputRef`` (JSON): ``output_ref["manager"]`` names the IO manager that wrote it."""


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one asset check of a step found, before it is recorded (``error``: the check raised)."""

    check_name: str
    passed: bool
    severity: str
    blocking: bool
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    @property
    def blocks(self) -> bool:
        """Whether this outcome keeps the steps downstream from running: a failed blocking check of
        severity error."""
        return self.blocking and not self.passed and self.severity == "error"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One row of ``flowstone_check_results``."""

    id: int
    materialization_id: int
    asset: str
    partition_key: str
    run_id: str
    check_name: str
    passed: bool
    severity: str
    blocking: bool
    description: str | None
    metadata: dict[str, Any]
    error: dict[str, Any] | None
    at: datetime


@dataclass(frozen=True, slots=True)
class StepLogLine:
    """One captured line of a materialization attempt, as written to ``flowstone_step_logs``.

    ``stream`` is ``log`` (a logging record), ``stdout``, ``stderr`` or ``flowstone`` (the
    truncation marker); ``seq`` orders the lines of one attempt from 1."""

    materialization_id: int
    attempt: int
    seq: int
    at: datetime
    stream: str
    level: str
    logger: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepLog:
    """A stored line with its step: what ``runtime.logs`` returns (``id``: the write order)."""

    id: int
    run_id: str
    asset: str
    partition_key: str
    line: StepLogLine
