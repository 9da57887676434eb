"""What runs return: a run's configuration (``RunConfig``) and the results of in-process runs,
backfills and garbage collection.

These are plain values below ``queue`` and ``runtime``: ``flowstone.runtime`` re-exports them, and
the queue reads ``RunConfig`` without importing the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from flowstone import errors, partition_keys, pools
from flowstone.errors import FlowStoneError
from flowstone.status import RunStatus
from flowstone.store import records

__all__ = ["BackfillResult", "GcReport", "RunConfig", "RunResult"]


class RunConfig(pydantic.BaseModel):
    """A run's configuration, stored in ``flowstone_runs.config``.

    ``resources`` overrides resource configuration by name for this run; ``None`` values and
    absent keys never replace a default (I2). ``priority`` (-999..999) is added to each asset's
    own priority for the run's jobs: higher runs first. Unknown top-level keys are refused.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    resources: dict[str, dict[str, Any] | None] = pydantic.Field(default_factory=dict)
    priority: int = pydantic.Field(default=0, ge=-999, le=999, strict=True)
    trace: dict[str, str] = pydantic.Field(default_factory=dict)
    """The W3C trace context of the run's span (``traceparent``), set by FlowStone when
    OpenTelemetry is installed, so that the spans of its steps join the run's trace."""

    @classmethod
    def coerce(cls, value: Mapping[str, Any] | RunConfig | None) -> RunConfig:
        """Validate a run config given as a mapping, a ``RunConfig`` or ``None``."""
        if isinstance(value, RunConfig):
            return value
        return cls.model_validate(value or {})

    def with_priority(self, priority: int | None) -> RunConfig:
        """This config with the run's ``priority`` when one is given (checked: -999..999)."""
        if priority is None:
            return self
        return self.model_copy(update={"priority": pools.check_priority(priority, "submit")})


@dataclass
class RunResult:
    """The outcome of an in-process run: every step's row, values and errors."""

    run_id: str
    status: RunStatus
    steps: list[records.Materialization]
    errors: dict[tuple[str, str], FlowStoneError] = field(default_factory=dict)
    values: dict[tuple[str, str], object] = field(default_factory=dict, repr=False)
    waiting: list[tuple[str, str]] = field(default_factory=list)
    """Steps that wait for approval (approve them, then ``runtime.resume(run_id)``)."""
    key_of: Callable[[str, object], str] | None = field(default=None, repr=False, compare=False)
    """Encodes (asset, partition) the way the runtime does (validating ``"2025-01-01"`` to a date)."""

    def _key(self, asset: str, partition: object) -> tuple[str, str]:
        if self.key_of is not None:
            return (asset, self.key_of(asset, partition))
        return (asset, partition_keys.encode(partition))  # type: ignore[arg-type]

    @property
    def success(self) -> bool:
        """Whether every step succeeded."""
        return self.status == RunStatus.SUCCEEDED

    @property
    def error(self) -> FlowStoneError | None:
        """The first error of the run (plan order), if any."""
        return next(iter(self.errors.values()), None)

    def step(self, asset: str, partition: object = None) -> records.Materialization:
        """The row of one step of this run."""
        key = self._key(asset, partition)
        for row in self.steps:
            if (row.asset, row.partition_key) == key:
                return row
        raise errors.UnknownAssetError(
            f"step {asset} [{key[1]}] is not part of run {self.run_id}", asset=asset, run_id=self.run_id
        )

    def value(self, asset: str, partition: object = None) -> object:
        """The value a step of this run returned (only for steps that succeeded in this process)."""
        key = self._key(asset, partition)
        if key not in self.values:
            row = self.step(asset, partition)
            raise errors.FlowStoneError(
                f"no value for {asset} [{key[1]}]: the step is {row.status}",
                asset=asset,
                partition=key[1],
                run_id=self.run_id,
            )
        return self.values[key]

    def unwrap(self) -> RunResult:
        """Return self when the run succeeded, else raise its first error."""
        if self.error is not None:
            raise self.error
        if self.waiting:
            steps = ", ".join(f"{a} [{k}]" for a, k in self.waiting)
            raise errors.ApprovalPendingError(
                f"run {self.run_id} waits for approval of {steps}; approve, then resume the run",
                run_id=self.run_id,
                context={"steps": [list(k) for k in self.waiting]},
            )
        if not self.success:
            blocked = next(
                (s for s in self.steps if (s.error or {}).get("type") == "CheckBlockedError"), None
            )
            if blocked is not None and blocked.error is not None:  # a failed blocking check, named
                raise errors.CheckBlockedError(
                    str(blocked.error.get("message")),
                    asset=blocked.asset,
                    partition=blocked.partition_key,
                    run_id=self.run_id,
                    context=blocked.error.get("context") or {},
                )
            raise errors.FlowStoneError(f"run {self.run_id} is {self.status}", run_id=self.run_id)
        return self


@dataclass(frozen=True)
class GcReport:
    """What ``runtime.gc`` removed: output versions by IO manager key, and what it left."""

    planned: int
    deleted: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    """Why some versions stayed (e.g. written by an IO manager that is not configured)."""
    orphans: dict[str, int] = field(default_factory=dict)
    """Versions of attempts that stored an output but never recorded a success, deleted (or, with
    ``dry_run``, found), by IO manager key."""


@dataclass(frozen=True)
class BackfillResult:
    """Counts of a backfill: partitions that succeeded, failed, waited for approval, or were skipped
    (already done)."""

    run_id: str | None
    succeeded: int
    failed: int
    skipped: int
    errors: dict[str, FlowStoneError] = field(default_factory=dict)
    waiting: int = 0
    """Partitions waiting for approval (approve them, then ``runtime.resume(run_id)``): neither
    succeeded nor failed."""
