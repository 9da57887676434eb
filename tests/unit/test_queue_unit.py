"""Queue pieces that need no database: job args, periodic intervals, the retry strategy."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pydantic
import pytest
from croniter import croniter

from flowstone import errors, execution
from flowstone.queue import jobs as queue
from flowstone.queue import process
from flowstone.store import records


@pytest.mark.parametrize("seconds", [1, 2, 5, 10, 15, 30, 60, 120, 600, 3600])
def test_periodic_interval_fires_every_n_seconds(seconds: int):
    cron = queue.every(seconds)
    itr = croniter(cron, datetime(2025, 1, 1, 0, 0, 7, tzinfo=UTC))
    fires = [itr.get_next(datetime) for _ in range(6)]
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(fires)}
    assert gaps == {float(seconds)}, cron


@pytest.mark.parametrize("seconds", [0, 7, 45, 90, 7200])
def test_periodic_interval_must_divide_a_minute_or_an_hour(seconds: int):
    with pytest.raises(errors.ConfigurationError, match="must divide"):
        queue.every(seconds)


def test_i1_job_args_are_a_strict_three_string_model():
    args = {"run_id": "12345678-1234-5678-1234-567812345678", "asset": "a", "partition": "i:1"}
    assert queue.JobArgs.model_validate(args).model_dump() == args
    for bad in (
        {**args, "extra": 1},
        {k: v for k, v in args.items() if k != "asset"},
        {**args, "partition": 1},
        {**args, "run_id": "not-a-uuid"},
    ):
        with pytest.raises(pydantic.ValidationError):
            queue.JobArgs.model_validate(bad)


def test_retry_strategy_only_retries_recorded_retryable_failures():
    strategy = queue.FlowStoneRetryStrategy()
    decision = strategy.get_retry_decision(exception=queue.RetryStep(2.0, None), job=None)  # type: ignore[arg-type]
    assert decision is not None
    assert decision.retry_at is not None
    assert strategy.get_retry_decision(exception=queue.StepFailed("x"), job=None) is None  # type: ignore[arg-type]
    assert strategy.get_retry_decision(exception=RuntimeError("x"), job=None) is None  # type: ignore[arg-type]


def _row(status: str) -> records.Materialization:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    return records.Materialization(
        id=1, run_id="r", asset="a", partition_key="i:1", status=status, attempt=1, pending_upstream=0,
        created_at=now, queued_at=None, started_at=None, finished_at=None, duration_ms=None, error=None,
        metadata={}, output_ref=None, code_version=None, job_id=None,
    )  # fmt: skip


def test_a_lost_claim_retries_the_job_instead_of_stranding_the_step():
    lost = errors.InvalidTransitionError("attempt 1 lost the step")
    retry, failed = queue.collect([execution.StepOutcome(record=_row("queued"), error=lost)])
    assert (retry, failed) == ([1.0], [])
    retry, failed = queue.collect([execution.StepOutcome(record=_row("cancelled"), error=lost)])
    assert (retry, failed) == ([], [])
    boom = errors.ExecutionError("boom")
    retry, failed = queue.collect([execution.StepOutcome(record=_row("failed"), error=boom)])
    assert (retry, failed) == ([], [boom])


def test_fetch_loops_share_the_concurrency_and_default_to_two_from_four() -> None:
    assert process.split_concurrency(8, 2) == [4, 4]
    assert process.split_concurrency(5, 2) == [3, 2]
    assert process.split_concurrency(3, 3) == [1, 1, 1]
    assert [process.default_fetch_loops(c) for c in (1, 3, 4, 16)] == [1, 1, 2, 2]
    for bad in (0, 4):
        with pytest.raises(errors.ConfigurationError, match="fetch loops"):
            process.split_concurrency(3, bad)
