"""What a FlowStone job is: its task names, its args, and the signals that steer Procrastinate.

A job's args are exactly ``{"run_id", "asset", "partition"}``, all strings (I1); ``partition`` is
the batch key of the unit of work (the encoded partition key of its first step). Everything else a
step needs is in ``flowstone_runs.config``, written in the same transaction as the jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pydantic
from procrastinate import retry as procrastinate_retry
from procrastinate.jobs import Job

from flowstone import errors, execution, partition_keys
from flowstone.status import StepStatus

__all__ = [
    "APPROVAL_TIMEOUT_TASK_NAME",
    "AUTOMATION_TASK_NAME",
    "DEFAULT_QUEUE",
    "MAINTENANCE_PRIORITY",
    "NAMESPACE",
    "RECOVER_TASK_NAME",
    "TASK_NAME",
    "FlowStoneRetryStrategy",
    "JobArgs",
    "RetryStep",
    "StepFailed",
    "collect",
    "every",
]

NAMESPACE = "flowstone"
TASK_NAME = f"{NAMESPACE}:run_step"
"""The stable task name of every FlowStone step job (``procrastinate_jobs.task_name``)."""
RECOVER_TASK_NAME = f"{NAMESPACE}:recover_stalled"
AUTOMATION_TASK_NAME = f"{NAMESPACE}:automation_tick"
APPROVAL_TIMEOUT_TASK_NAME = f"{NAMESPACE}:approval_timeout"
DEFAULT_QUEUE = "flowstone"
"""Queue of assets that name none (per-asset ``queue=`` overrides it)."""
MAINTENANCE_PRIORITY = 1000
"""Procrastinate priority of FlowStone's maintenance jobs, approval timeouts and recovered step jobs:
above any user priority, so that they never wait behind a backlog of user work."""


class JobArgs(pydantic.BaseModel):
    """The only job args FlowStone writes or accepts (I1): three strings, nothing else."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    run_id: str = pydantic.Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    asset: str = pydantic.Field(max_length=128)
    partition: str = pydantic.Field(max_length=partition_keys.MAX_KEY_BYTES)
    """The batch key: an encoded partition key, so at most :data:`partition_keys.MAX_KEY_BYTES`."""


class RetryStep(Exception):  # noqa: N818 - a signal to the retry strategy, not an error
    """Raised by the task after recording a retryable failure: retry the job after ``delay_s``."""

    def __init__(self, delay_s: float, error: errors.FlowStoneError | None) -> None:
        super().__init__(f"retry in {delay_s:.3f}s: {error}")
        self.delay_s = delay_s


class StepFailed(Exception):  # noqa: N818 - the job's terminal outcome, already recorded
    """Raised by the task after recording a terminal failure: the job ends ``failed``, no retry."""


class FlowStoneRetryStrategy(procrastinate_retry.BaseRetryStrategy):
    """Retries exactly the jobs whose step recorded a retryable failure with attempts left.

    The decision was made (and written) by the step runner; this only translates it. No I/O here:
    Procrastinate calls it on the worker's event loop.
    """

    def get_retry_decision(
        self, *, exception: BaseException, job: Job
    ) -> procrastinate_retry.RetryDecision | None:
        """A retry in ``delay_s`` for :class:`RetryStep`, nothing for anything else."""
        if isinstance(exception, RetryStep):
            retry_at = datetime.now(UTC) + timedelta(seconds=max(0.0, exception.delay_s))
            return procrastinate_retry.RetryDecision(retry_at=retry_at)
        return None


def collect(outcomes: Sequence[execution.StepOutcome]) -> tuple[list[float], list[errors.FlowStoneError]]:
    """From a job's step outcomes: the delays of retries to ask for, and the terminal failures."""
    retry_in: list[float] = []
    failed: list[errors.FlowStoneError] = []
    for outcome in outcomes:
        if outcome.retry_in_s is not None:
            retry_in.append(outcome.retry_in_s)
        elif outcome.error is not None and not outcome.succeeded:
            if isinstance(outcome.error, errors.InvalidTransitionError):
                if outcome.record is not None and outcome.record.status == StepStatus.QUEUED:
                    # Our claim was lost (it commits asynchronously and the database restarted in
                    # between): the step is still queued, so the job runs again.
                    retry_in.append(1.0)
                continue  # cancelled, skipped or finished elsewhere: nothing to do
            failed.append(outcome.error)
    return retry_in, failed


def every(seconds: int) -> str:
    """A cron string firing every ``seconds``, which must divide 60 (seconds, as the optional sixth
    field, the seconds field of croniter) or be whole minutes dividing 60."""
    if 0 < seconds < 60 and 60 % seconds == 0:
        return f"* * * * * */{seconds}"
    if seconds % 60 == 0 and 0 < seconds // 60 <= 60 and 60 % (seconds // 60) == 0:
        return f"*/{seconds // 60} * * * *"
    raise errors.ConfigurationError(
        f"interval must divide 60 seconds or be a whole number of minutes dividing 60, got {seconds}"
    )
