"""The services value: what the layers below the runtime need, built once by ``FlowStone``.

The queue, the in-process executor, automation and approvals receive this small immutable value
instead of the runtime object, so nothing below :mod:`flowstone.runtime` imports it or calls back
into it (ADR 0012).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flowstone import capture, definitions, errors, retention_policy
from flowstone.io import base as io_base
from flowstone.store import base as store_base
from flowstone.store.postgres import PostgresStore

__all__ = ["QueueOptions", "Services"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """Worker and maintenance settings of one runtime (``FlowStone(...)`` keyword arguments)."""

    recovery_interval_s: int = 10
    stalled_after_s: float = 30.0
    heartbeat_interval_s: float = 10.0
    worker_pool_size: int = 10
    automation_interval_s: int = 10
    record_retry_s: float = 60.0
    """How long a step's outcome is retried on fresh connections while the database is unavailable
    before the attempt gives up (the recovery sweep then settles the step)."""
    outage_timeout_s: float = 600.0
    """How long ``flowstone worker`` waits for the database to come back before it exits non-zero."""
    continuation_steps: int = 100
    """Steps a queued job may run one after the other when each success makes the next ready on
    its queue (continuation, ADR 0013); 1 turns continuation off."""
    retention: retention_policy.Retention | None = None
    """The retention policy the workers' maintenance applies every ``retention_interval_s``."""
    retention_interval_s: float = 3600.0
    continuation_s: float = 10.0
    """Seconds after which a job stops continuing, so that a long chain does not hold a worker."""


@dataclass(frozen=True, slots=True)
class Services:
    """Definitions, the store decided once (I9), the IO managers, the job queue (``None`` without
    Postgres), who acts, the clock, the queue settings and the step-log settings."""

    defs: definitions.Definitions
    store: store_base.Store
    io_managers: Mapping[str, io_base.IOManager]
    actor: str
    jobs: store_base.JobQueue | None = None
    options: QueueOptions = field(default_factory=QueueOptions)
    clock: Callable[[], datetime] = _utc_now
    step_logs: capture.StepLogSettings = field(default_factory=capture.StepLogSettings)
    """How steps' logs and output are captured into ``flowstone_step_logs``."""

    def postgres(self, what: str = "the durable queue") -> PostgresStore:
        """The Postgres store; ``what`` needs it (not the memory store)."""
        if not isinstance(self.store, PostgresStore):
            raise errors.ConfigurationError(
                f"{what} needs the Postgres store: create FlowStone without store='memory'"
            )
        return self.store

    def job_queue(self) -> store_base.JobQueue:
        """The job queue (Postgres only)."""
        if self.jobs is None:
            raise errors.ConfigurationError(
                "the durable queue needs Postgres: create FlowStone without store='memory'"
            )
        return self.jobs
