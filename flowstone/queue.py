"""Durable execution on Procrastinate: job args, the ``flowstone:run_step`` task, enqueueing inside
FlowStone's own transactions, retries, stalled-job recovery and the :class:`RunHandle`.

A job's args are exactly ``{"run_id", "asset", "partition"}``, all strings (I1). Everything else a
step needs is in ``flowstone_runs.config``, written in the same transaction as the jobs. Jobs are
deferred with ``procrastinate.tasks.configure_task(..., connection=conn)`` on FlowStone's own
connection through a never-opened ``JobManager(SyncPsycopgConnector)``: this works from any thread,
inside or outside a worker (see shared/reference/procrastinate-notes.md §1.1).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

import procrastinate
import psycopg
import pydantic
from procrastinate import manager as procrastinate_manager
from procrastinate import retry as procrastinate_retry
from procrastinate import sql as procrastinate_sql
from procrastinate import tasks as procrastinate_tasks
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job

from flowstone import definitions, errors, execution, partition_keys, planning, resources, results
from flowstone.approval_types import ApprovalRequest
from flowstone.store import base as store_base
from flowstone.store import records
from flowstone.store.approval_ops import PostgresFlowStore
from flowstone.store.queue_ops import BatchItem

if TYPE_CHECKING:
    from flowstone.runtime import FlowStone

__all__ = [
    "DEFAULT_QUEUE",
    "RECOVER_TASK_NAME",
    "TASK_NAME",
    "JobArgs",
    "RunHandle",
    "backfill",
    "build_app",
    "build_blueprint",
    "submit",
]

logger = logging.getLogger("flowstone.queue")

NAMESPACE = "flowstone"
TASK_NAME = f"{NAMESPACE}:run_step"
"""The stable task name of every FlowStone job (``procrastinate_jobs.task_name``)."""
RECOVER_TASK_NAME = f"{NAMESPACE}:recover_stalled"
APPROVAL_TIMEOUT_TASK_NAME = f"{NAMESPACE}:approval_timeout"
DEFAULT_QUEUE = "flowstone"
"""Queue of assets that name none (per-asset ``queue=`` overrides it)."""


class JobArgs(pydantic.BaseModel):
    """The only job args FlowStone writes or accepts (I1): three strings, nothing else."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    run_id: str = pydantic.Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    asset: str = pydantic.Field(max_length=128)
    partition: str = pydantic.Field(max_length=100_000)


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


class Enqueuer:
    """Defers FlowStone jobs on a caller's connection, grouped by queue, returning their ids."""

    def __init__(self, defs: definitions.Definitions, url: str) -> None:
        self.defs = defs
        # Never opened: with connection= the manager runs its query on the caller's connection.
        self.job_manager = procrastinate_manager.JobManager(procrastinate.SyncPsycopgConnector(conninfo=url))

    def queue_of(self, asset: str) -> str:
        """The queue of an asset's jobs."""
        return self.defs.get(asset).queue or DEFAULT_QUEUE

    def __call__(self, conn: psycopg.Connection[Any], run_id: str, items: Sequence[BatchItem]) -> list[int]:
        """One job per (asset, batch_key), in one batch per queue; ids in the order of ``items``."""
        by_queue: dict[str, list[int]] = {}
        for index, (asset, _) in enumerate(items):
            by_queue.setdefault(self.queue_of(asset), []).append(index)
        ids: list[int] = [0] * len(items)
        for queue, indices in by_queue.items():
            deferrer = procrastinate_tasks.configure_task(
                name=TASK_NAME, job_manager=self.job_manager, connection=conn, queue=queue
            )
            args = [
                JobArgs(run_id=run_id, asset=items[i][0], partition=items[i][1]).model_dump() for i in indices
            ]
            for index, job_id in zip(indices, deferrer.batch_defer(*args), strict=True):
                ids[index] = job_id
        return ids

    def defer_timeout(
        self, conn: psycopg.Connection[Any], run_id: str, asset: str, partition_key: str, at: datetime
    ) -> int:
        """Defer the approval-timeout job of a step, scheduled at ``at`` (same three-key args)."""
        deferrer = procrastinate_tasks.configure_task(
            name=APPROVAL_TIMEOUT_TASK_NAME,
            job_manager=self.job_manager,
            connection=conn,
            queue=DEFAULT_QUEUE,
            schedule_at=at,
        )
        return deferrer.defer(**JobArgs(run_id=run_id, asset=asset, partition=partition_key).model_dump())

    def cancel_job(self, conn: psycopg.Connection[Any], job_id: int) -> bool:
        """Cancel a ``todo`` job on the caller's connection."""
        return self.job_manager.cancel_job_by_id(job_id, connection=conn)

    @staticmethod
    def retry_job(conn: psycopg.Connection[Any], job_id: int) -> None:
        """Put a stalled ``doing`` job back to ``todo`` now, with Procrastinate's own query."""
        conn.execute(
            procrastinate_sql.queries["retry_job"],
            {
                "job_id": job_id,
                "retry_at": None,
                "new_priority": None,
                "new_queue_name": None,
                "new_lock": None,
            },
        )


class QueueCompletion:
    """Queued runs: success with fan-in and enqueueing (I11, I14); failure with retries (I12)."""

    def __init__(
        self,
        defs: definitions.Definitions,
        store: PostgresFlowStore,
        enqueuer: Enqueuer,
        *,
        release: bool = True,
    ) -> None:
        self.defs = defs
        self.store = store
        self.enqueuer = enqueuer
        self.release = release

    def succeed_many(
        self, items: Sequence[store_base.Success], *, actor: str
    ) -> list[records.Materialization | None]:
        """See :meth:`flowstone.execution.Completion.succeed_many`: one pipelined transaction."""
        return self.store.complete_steps(items, actor=actor, enqueue=self.enqueuer, release=self.release)

    def wait_for_approval(
        self, step: records.Materialization, request: ApprovalRequest, *, actor: str
    ) -> records.Materialization | None:
        """See :meth:`flowstone.execution.Completion.wait_for_approval`; the job then ends well."""
        return self.store.request_approval(
            step, request, actor=actor, defer_timeout=self.enqueuer.defer_timeout
        )

    def fail(
        self,
        step: records.Materialization,
        error: errors.FlowStoneError,
        *,
        skip: Sequence[store_base.StepKey],
        actor: str,
    ) -> tuple[records.Materialization | None, float | None]:
        """Retry a retryable error while the asset's RetryPolicy allows, else fail terminally."""
        del skip  # the queue skips through flowstone_step_edges, in SQL
        policy = self.defs.get(step.asset).retry
        if error.retryable and step.attempt < policy.max_attempts:
            delay = policy.delay_s(step.attempt)
            row = self.store.retry_later(step, error=error.to_dict(), retry_in_s=delay, actor=actor)
            if row is not None:
                return row, delay
            return None, None
        return self.store.fail_step_terminal(step, error=error.to_dict(), actor=actor), None


def _collect(outcomes: Sequence[execution.StepOutcome]) -> tuple[list[float], list[errors.FlowStoneError]]:
    """From a job's step outcomes: the delays of retries to ask for, and the terminal failures."""
    retry_in: list[float] = []
    failed: list[errors.FlowStoneError] = []
    for outcome in outcomes:
        if outcome.retry_in_s is not None:
            retry_in.append(outcome.retry_in_s)
        elif outcome.error is not None and not outcome.succeeded:
            if isinstance(outcome.error, errors.InvalidTransitionError):
                if outcome.record is not None and outcome.record.status == "queued":
                    # Our claim was lost (it commits asynchronously and the database restarted in
                    # between): the step is still queued, so the job runs again.
                    retry_in.append(1.0)
                continue  # cancelled, skipped or finished elsewhere: nothing to do
            failed.append(outcome.error)
    return retry_in, failed


@dataclass
class JobRunner:
    """What the ``flowstone:run_step`` task does with one job."""

    runtime: FlowStone
    store: PostgresFlowStore
    enqueuer: Enqueuer

    def run(self, raw: Mapping[str, Any]) -> None:
        """Validate args, run the job's step(s), record outcomes; raise to steer Procrastinate."""
        try:
            args = JobArgs.model_validate(dict(raw))
        except pydantic.ValidationError as exc:
            self._reject(raw, errors.JobArgsError(f"malformed job args: {exc.errors(include_url=False)}"))
        try:
            asset = self.runtime.defs.get(args.asset)  # I3: lookup, never import
            partition_keys.decode(args.partition)
        except errors.FlowStoneError as exc:
            self._reject(raw, exc)
        claimed, kind, raw_config = self.store.claim_job(
            args.run_id, asset.name, args.partition, code_version=asset.code_version, reclaim=True
        )
        if not claimed:
            raw_config, _ = self.store.job_context(args.run_id, asset.name, args.partition)
            if raw_config is None:
                self._reject(
                    raw, errors.RunConfigMissingError(f"run {args.run_id} has no row: no config to run with")
                )
            logger.info(
                "job for %s [%s] found nothing to run (finished or cancelled)", asset.name, args.partition
            )
            return
        try:
            config = results.RunConfig.model_validate(raw_config)
            scope = resources.ResourceScope(self.runtime.defs.resources, config.resources)
        except (pydantic.ValidationError, errors.FlowStoneError) as exc:
            error = exc if isinstance(exc, errors.FlowStoneError) else errors.RunConfigMissingError(str(exc))
            for step in claimed:
                self.store.fail_step_terminal(step, error=error.to_dict(), actor=self.runtime.actor)
            raise StepFailed(str(error)) from exc
        runner = execution.StepRunner(
            self.runtime.defs,
            self.store,
            self.runtime.io_managers,
            actor=self.runtime.actor,
            completion=QueueCompletion(
                self.runtime.defs, self.store, self.enqueuer, release=kind != "backfill"
            ),
        )
        with scope:
            retry_in, failed = _collect(runner.run_claimed(asset, claimed, scope=scope))
        if retry_in:
            raise RetryStep(max(retry_in), failed[0] if failed else None)
        if failed:
            raise StepFailed(str(failed[0]))

    def _reject(self, raw: Mapping[str, Any], error: errors.FlowStoneError) -> NoReturn:
        """Record a job that cannot run where a row exists, then fail the job without retry."""
        run_id, asset, partition = (raw.get(k) for k in ("run_id", "asset", "partition"))
        logger.error("rejected job %r: %s", dict(raw), error)
        if all(isinstance(v, str) for v in (run_id, asset, partition)):
            error.run_id = error.run_id or run_id
            try:
                self.store.fail_unclaimed(
                    str(run_id), str(asset), str(partition), error=error.to_dict(), actor=self.runtime.actor
                )
            except errors.StoreError:  # not a UUID, or no such row: nothing to record there
                logger.warning("no step row to record the rejected job on")
        raise StepFailed(str(error)) from error


def build_blueprint(
    runtime: FlowStone, *, recovery_interval_s: int, stalled_after_s: float, automation_interval_s: int = 10
) -> procrastinate.Blueprint:
    """The blueprint holding FlowStone's tasks (add it with ``namespace="flowstone"``)."""
    store = runtime.queue_store()
    enqueuer = runtime.enqueuer()
    job_runner = JobRunner(runtime, store, enqueuer)
    blueprint = procrastinate.Blueprint()

    @blueprint.task(name="run_step", pass_context=True, retry=FlowStoneRetryStrategy(), queue=DEFAULT_QUEUE)
    def run_step(context: JobContext, /, **kwargs: Any) -> None:
        """Run the step(s) one FlowStone job names."""
        del context
        job_runner.run(kwargs)

    @blueprint.periodic(cron=_every(recovery_interval_s))
    @blueprint.task(name="recover_stalled", queue=DEFAULT_QUEUE)
    def recover_stalled(timestamp: int) -> None:
        """Hand jobs of dead workers back to the queue (their steps are then reclaimed)."""
        del timestamp
        ids = store.recover_stalled_jobs(
            task_names=[TASK_NAME], stalled_after_s=stalled_after_s, retry_job=Enqueuer.retry_job
        )
        if ids:
            logger.warning("re-queued %d stalled job(s): %s", len(ids), ids)
        finished = store.finish_unfinished_runs(actor=runtime.actor)
        if finished:
            logger.info("finished %d run(s) whose last steps ended together", len(finished))
        expired = store.expire_due_approvals(enqueue=enqueuer)
        if expired:
            logger.info("applied the timeout of %d approval(s)", len(expired))

    @blueprint.periodic(cron=_every(automation_interval_s))
    @blueprint.task(name="automation_tick", queue=DEFAULT_QUEUE)
    def automation_tick(timestamp: int) -> None:
        """Evaluate schedules and due sensors (each claims its state row with SKIP LOCKED)."""
        del timestamp
        fired = runtime.schedules.tick()
        submitted = runtime.sensors.tick()
        if fired or submitted:
            logger.info("automation: schedules %s, sensors %s", fired, submitted)

    @blueprint.task(name="approval_timeout", queue=DEFAULT_QUEUE)
    def approval_timeout(**kwargs: Any) -> None:
        """Apply the on_timeout policy of one step's approval if it is still pending when due."""
        try:
            args = JobArgs.model_validate(kwargs)
        except pydantic.ValidationError as exc:
            raise StepFailed(f"malformed approval-timeout job args: {exc}") from exc
        step = store.get_step(args.run_id, args.asset, args.partition)
        if step is not None:
            store.expire_due_approvals(enqueue=enqueuer, materialization_id=step.id)

    return blueprint


def _every(seconds: int) -> str:
    """A cron string firing every ``seconds``, which must divide 60 (seconds, as the optional sixth
    field, the seconds field of croniter) or be whole minutes dividing 60."""
    if 0 < seconds < 60 and 60 % seconds == 0:
        return f"* * * * * */{seconds}"
    if seconds % 60 == 0 and 0 < seconds // 60 <= 60 and 60 % (seconds // 60) == 0:
        return f"*/{seconds // 60} * * * *"
    raise errors.ConfigurationError(
        f"interval must divide 60 seconds or be a whole number of minutes dividing 60, got {seconds}"
    )


def build_app(runtime: FlowStone, *, pool_size: int, worker_defaults: Mapping[str, Any]) -> procrastinate.App:
    """A ready ``procrastinate.App`` on FlowStone's database with FlowStone's tasks."""
    url = runtime.require_database_url()
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=pool_size),
        worker_defaults=dict(worker_defaults),  # type: ignore[arg-type]
    )
    app.add_tasks_from(runtime.blueprint, namespace=NAMESPACE)
    return app


class RunHandle:
    """A queued run: its id, progress, waiting and cancelling. ``runtime.run(run_id)`` rebuilds it."""

    def __init__(self, runtime: FlowStone, run_id: str) -> None:
        self.runtime = runtime
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    def run(self) -> records.Run:
        """The run's row."""
        run = self.runtime.store.get_run(self.run_id)
        if run is None:
            raise errors.FlowStoneError(f"run {self.run_id} does not exist", run_id=self.run_id)
        return run

    def steps(self) -> list[records.Materialization]:
        """Every step of the run, in id order."""
        return self.runtime.store.run_steps(self.run_id)

    def status(self) -> dict[str, int]:
        """Number of steps by status, e.g. ``{"succeeded": 3, "queued": 1}``."""
        return self.runtime.queue_store().step_counts(self.run_id)

    def wait(self, timeout: float | None = None, *, poll_interval_s: float = 0.1) -> records.Run:
        """Block until the run is terminal (or waiting for approval); poll with a bounded interval.

        Raises ``TimeoutError`` after ``timeout`` seconds. Waiting needs workers to be running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval_s
        while True:
            run = self.run()
            if run.status in records.RUN_TERMINAL or run.status == "waiting_approval":
                return run
            if not any(s in records.ACTIVE for s in self.status()):
                # Its last steps ended at the same instant: finish it here (idempotent).
                finished = self.runtime.store.finish_run(self.run_id, actor=self.runtime.actor)
                if finished is not None:
                    return finished
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {self.run_id} is still {run.status} after {timeout}s: {self.status()}"
                )
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def cancel(self) -> int:
        """Cancel the steps that have not started (and their jobs); running steps finish. Returns how
        many steps were cancelled."""
        return self.runtime.queue_store().cancel_run(
            self.run_id, actor=self.runtime.actor, cancel_job=self.runtime.enqueuer().cancel_job
        )


def submit(
    runtime: FlowStone,
    selection: str | Sequence[str],
    partitions: Sequence[object] | None,
    *,
    with_upstream: bool,
    config: Any,
    tags: Mapping[str, str] | None,
    conn: psycopg.Connection[Any] | None = None,
) -> RunHandle:
    """Plan the run and write it, its steps, its edges and the jobs of its ready steps in ONE
    transaction (I1, I11). A failure anywhere rolls all of it back."""
    if isinstance(partitions, str | bytes):
        raise errors.InvalidPartitionError(
            f"partitions must be a list of partitions, got the string {partitions!r}: pass [{partitions!r}]"
        )
    store = runtime.queue_store()
    resources.ResourceScope(runtime.defs.resources, config.resources)  # refuses unknown names now
    plan = planning.build_plan(
        runtime.defs,
        selection,
        partitions=list(partitions) if partitions is not None else [None],
        with_upstream=with_upstream,
    )
    run_id = str(uuid.uuid4())
    edges = [(up, down) for down, ups in plan.upstream.items() for up in sorted(ups)]
    ready = [(s.asset, s.partition_key, s.partition_key) for s in plan.steps if not plan.upstream.get(s.key)]
    store.submit_run(
        records.NewRun(
            run_id=run_id,
            kind="submit",
            selection=plan.selection,
            requested_by=runtime.actor,
            config=config.model_dump(mode="json", exclude_defaults=True),
            tags=dict(tags or {}),
            status="queued",
        ),
        plan.planned({name: runtime.defs.get(name).code_version for name in runtime.defs}),
        edges,
        ready,
        runtime.enqueuer(),
        conn=conn,
    )
    return RunHandle(runtime, run_id)


BACKFILL_CHUNK = 5_000
"""Steps written per backfill transaction (COPY), each chunk with its jobs."""


def backfill(
    runtime: FlowStone,
    asset: str,
    values: Sequence[partition_keys.PartitionValue],
    *,
    force: bool,
    partitions_per_job: int,
    config: Any,
    progress: Callable[[int, int], None] | None,
) -> RunHandle:
    """Enqueue the missing partitions of ``asset`` in bulk: one transaction per chunk of steps."""
    if partitions_per_job < 1:
        raise errors.ConfigurationError(f"partitions_per_job must be at least 1, got {partitions_per_job}")
    store = runtime.queue_store()
    definition = runtime.defs.get(asset)
    resources.ResourceScope(runtime.defs.resources, config.resources)
    keys = list(dict.fromkeys(partition_keys.encode(v) for v in values))
    done = set() if force else store.succeeded_keys(asset, keys)
    todo = [k for k in keys if k not in done]
    batches = [todo[i : i + partitions_per_job] for i in range(0, len(todo), partitions_per_job)]
    run_id = str(uuid.uuid4())
    run = records.NewRun(
        run_id=run_id,
        kind="backfill",
        selection=(asset,),
        requested_by=runtime.actor,
        config=config.model_dump(mode="json", exclude_defaults=True),
        tags={
            "partitions": len(todo),
            "skipped": len(keys) - len(todo),
            "partitions_per_job": partitions_per_job,
        },
        status="queued",
    )
    per_chunk = max(1, BACKFILL_CHUNK // partitions_per_job)
    written = 0
    enqueuer = runtime.enqueuer()
    for start in range(0, max(len(batches), 1), per_chunk):
        chunk = batches[start : start + per_chunk]
        written += store.enqueue_batches(
            run_id, asset, definition.code_version, chunk, enqueuer, run=run if start == 0 else None
        )
        if progress is not None:
            progress(written, len(todo))
    if not todo:
        store.finish_run(run_id, actor=runtime.actor)
    return RunHandle(runtime, run_id)
