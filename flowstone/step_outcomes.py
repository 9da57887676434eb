"""What running steps produces: :class:`StepOutcome` per step, :class:`Ran` per unit of work, and
:class:`Executed` (a step whose function ran and whose output is stored), as
:mod:`flowstone.execution` returns them (and re-exports them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from flowstone import errors
from flowstone.io import base as io_base
from flowstone.status import StepStatus
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["Executed", "Ran", "StepOutcome"]


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What happened to one step: its row as recorded, the value (in-process runs), the error, and
    (queued runs) the delay before a retry when the failure will be retried."""

    record: records.Materialization | None
    value: object = None
    error: errors.FlowStoneError | None = None
    retry_in_s: float | None = None

    @property
    def waiting(self) -> bool:
        """Whether the step waits for approval."""
        return self.record is not None and self.record.status == StepStatus.WAITING_APPROVAL

    @property
    def succeeded(self) -> bool:
        """Whether the step's row is ``succeeded``, or ``skipped`` by memoization (a success)."""
        return self.record is not None and self.record.ok


@dataclass(frozen=True, slots=True)
class Ran:
    """The outcomes of one unit of work's steps, and the units of work its successes made ready."""

    outcomes: list[StepOutcome]
    released: list[store_base.BatchItem]
    continued: store_base.BatchItem | None = None
    """The unit of work a success kept for this job (continuation): claim and run it next."""
    ahead: store_base.Claim | None = None
    """The claim asked for with the success (``claim_ahead``), as the success's round trip made it."""
    job_finished: bool = False
    """Whether the success also finished the running job (``finish_job``, ADR 0016)."""


@dataclass(frozen=True, slots=True)
class Executed:
    """A step whose function ran and whose output is stored (or prepared for the success), or
    that memoization skipped (``memoized_from``: no output, no lineage of its own)."""

    value: object
    ref: io_base.OutputRef | None
    metadata: dict[str, Any]
    lineage: list[tuple[int, str]]
    output: io_base.PreparedOutput | None
    logs: list[records.StepLogLine] = dataclasses.field(default_factory=list)
    """The lines captured last, written with the success."""
    checks: tuple[records.CheckOutcome, ...] = ()
    """The asset checks' outcomes (:mod:`flowstone.checking`), recorded with the success."""
    memoized_from: int | None = None
    """The materialization memoization reused instead of running the function."""
