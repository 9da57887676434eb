"""The worker side of the durable queue: the ``flowstone:run_step`` task that runs one job's steps
through the step pipeline, FlowStone's periodic maintenance tasks, and the Procrastinate App.

Each maintenance duty is a small function of the services (:func:`recover_stalled`,
:func:`finish_runs`, :func:`expire_approvals`, :func:`automation_tick`); the blueprint only
schedules them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NoReturn

import procrastinate
import pydantic
from procrastinate.job_context import JobContext

from flowstone import (
    automation,
    errors,
    events,
    execution,
    partition_keys,
    resources,
    results,
    run_lifecycle,
    services,
)
from flowstone.queue import jobs
from flowstone.queue.job_manager import UNREGISTER_PATIENCE_S, JobManager
from flowstone.status import RUN_TERMINAL
from flowstone.store import base as store_base
from flowstone.store import jobs as job_table
from flowstone.store import records, transitions

__all__ = [
    "UNREGISTER_PATIENCE_S",
    "JobManager",
    "JobRunner",
    "abandon_runs",
    "automation_tick",
    "build_app",
    "build_blueprint",
    "expire_approvals",
    "finish_runs",
    "hand_back_lost_jobs",
    "maintain",
    "recover_stalled",
    "settle_orphans",
]

logger = logging.getLogger("flowstone.queue")

AFTER_JOB: Callable[[int | None, Sequence[execution.StepOutcome]], None] | None = None
"""A test seam: called with the job id and its outcomes after a job's steps are recorded and before
the job returns to Procrastinate (which then finishes it, unless its last success did: ADR 0016). The
fault suite stops the server there."""


class JobRunner:
    """What the ``flowstone:run_step`` task does with one job."""

    def __init__(self, svc: services.Services) -> None:
        self.svc = svc
        self.store = svc.postgres()
        self.runner = execution.StepRunner(svc, queued=True)

    def run(
        self,
        raw: Mapping[str, Any],
        *,
        job_id: int | None = None,
        queue: str | None = None,
        finish: bool = False,
    ) -> bool:
        """Validate args, run the job's step(s), record outcomes; raise to steer Procrastinate.
        ``job_id``: the Procrastinate job, whose own steps it may take over after a dead worker;
        with its ``queue`` it also continues with the steps its successes make ready there, within
        the continuation budget (ADR 0013). ``finish``: the job's last success may finish the job
        too (ADR 0016); returns whether it did (the worker must then not finish it again)."""
        try:
            args = jobs.JobArgs.model_validate(dict(raw))
        except pydantic.ValidationError as exc:
            self._reject(raw, errors.JobArgsError(f"malformed job args: {exc.errors(include_url=False)}"))
        try:
            asset = self.svc.defs.get(args.asset)  # I3: lookup, never import
            partition_keys.decode(args.partition)
        except errors.FlowStoneError as exc:
            self._reject(raw, exc)
        claim = self.runner.claim(args.run_id, asset, args.partition, job_id=job_id)
        if not claim.steps:
            if self.store.get_run(args.run_id) is None:
                self._reject(
                    raw, errors.RunConfigMissingError(f"run {args.run_id} has no row: no config to run with")
                )
            logger.info(
                "job for %s [%s] found nothing to run (finished or cancelled)", asset.name, args.partition
            )
            return False
        try:
            config = results.RunConfig.model_validate(claim.run_config)
            scope = resources.ResourceScope(self.svc.defs.resources, config.resources)
        except (pydantic.ValidationError, errors.FlowStoneError) as exc:
            error = exc if isinstance(exc, errors.FlowStoneError) else errors.RunConfigMissingError(str(exc))
            for step in claim.steps:
                self.store.fail_terminal(step, error=error.to_dict(), actor=self.svc.actor)
            raise jobs.StepFailed(str(error)) from exc
        _log_started(claim.steps)
        budget = _Budget(self.svc.options, job_id, queue, claim_of=self._claim_of)
        finish_job = job_id if finish else None
        with scope:
            ran = self.runner.run_claimed(
                asset, claim, scope=scope, keep=budget.keep(), finish_job=finish_job
            )
            retry_in, failed = jobs.collect(ran.outcomes)
            continued, finished = self._continue(
                args.run_id, ran, scope, budget, job_id, finish_job=finish_job
            )
            outcomes = ran.outcomes + continued
        # A continued step's retry has a job of its own; its terminal failure fails this job.
        failed += jobs.collect(continued)[1]
        if AFTER_JOB is not None:
            AFTER_JOB(job_id, outcomes)
        if finished:
            if retry_in or failed:  # a step lost to another attempt was re-queued since: the sweep
                logger.warning("job %s ended with its success; a step of it is queued again", job_id)
            return True
        if retry_in:
            raise jobs.RetryStep(max(retry_in), failed[0] if failed else None)
        if failed:
            raise jobs.StepFailed(str(failed[0]))
        return False

    def _claim_of(self, unit: store_base.BatchItem) -> store_base.ClaimAhead:
        return self.runner.claim_of(self.svc.defs.get(unit[0]), unit[1])

    def _continue(
        self,
        run_id: str,
        ran: execution.Ran,
        scope: resources.ResourceScope,
        budget: _Budget,
        job_id: int | None,
        *,
        finish_job: int | None,
    ) -> tuple[list[execution.StepOutcome], bool]:
        """Run the steps kept for this job, one after the other; their outcomes, and whether the
        last success finished the job (``finish_job``, while no step of the job has failed). Each
        was claimed by the success that kept it, in its round trip (else it is claimed here). A
        retry of one was deferred as a job of its own when it was recorded."""
        outcomes: list[execution.StepOutcome] = []
        unit, ahead = ran.continued, ran.ahead
        if any(o.error is not None for o in ran.outcomes):
            finish_job = None
        while unit is not None:
            asset = self.svc.defs.get(unit[0])
            if ahead is not None:
                claim = self.runner.claimed(run_id, asset, unit[1], ahead)
            else:
                claim = self.runner.claim(run_id, asset, unit[1], job_id=job_id)
            if not claim.steps:
                break
            budget.spend()
            _log_started(claim.steps)
            ran = self.runner.run_claimed(
                asset, claim, scope=scope, keep=budget.keep(), continued=True, finish_job=finish_job
            )
            outcomes += ran.outcomes
            if any(o.error is not None for o in ran.outcomes):
                finish_job = None
            unit, ahead = ran.continued, ran.ahead
        return outcomes, ran.job_finished

    def _reject(self, raw: Mapping[str, Any], error: errors.FlowStoneError) -> NoReturn:
        """Record a job that cannot run where a row exists, then fail the job without retry."""
        run_id, asset, partition = (raw.get(k) for k in ("run_id", "asset", "partition"))
        logger.error("rejected job %r: %s", dict(raw), error)
        if all(isinstance(v, str) for v in (run_id, asset, partition)):
            error.run_id = error.run_id or run_id
            try:
                self.store.fail_unclaimed(
                    str(run_id), str(asset), str(partition), error=error.to_dict(), actor=self.svc.actor
                )
            except errors.StoreError:  # not a UUID, or no such row: nothing to record there
                logger.warning("no step row to record the rejected job on")
        raise jobs.StepFailed(str(error)) from error


class _Budget:
    """How many more steps, for how long, one job may continue (ADR 0013)."""

    def __init__(
        self,
        options: services.QueueOptions,
        job_id: int | None,
        queue: str | None,
        *,
        claim_of: Callable[[store_base.BatchItem], store_base.ClaimAhead] | None = None,
    ) -> None:
        self.steps_left = options.continuation_steps - 1
        self.deadline = time.monotonic() + options.continuation_s
        self.job_id = job_id
        self.queue = queue
        self.claim_of = claim_of  # the kept unit's claim goes with the success that keeps it

    def keep(self) -> store_base.Keep | None:
        """What the next success may keep for this job, if anything."""
        if (
            self.job_id is None
            or self.queue is None
            or self.steps_left <= 0
            or time.monotonic() >= self.deadline
        ):
            return None
        return store_base.Keep(job_id=self.job_id, queue=self.queue, ahead=self.claim_of)

    def spend(self) -> None:
        """A continued step was claimed."""
        self.steps_left -= 1


# -- maintenance ---------------------------------------------------------------------------------


def recover_stalled(svc: services.Services) -> list[int]:
    """Hand the jobs of dead workers back to the queue, ahead of any backlog (their steps are then
    reclaimed)."""
    ids = svc.postgres().recover_stalled_jobs(
        task_names=[jobs.TASK_NAME],
        stalled_after_s=svc.options.stalled_after_s,
        priority=jobs.MAINTENANCE_PRIORITY,
    )
    if ids:
        logger.warning("re-queued %d stalled job(s): %s", len(ids), ids)
    return ids


def jobs_waiting(svc: services.Services, queues: Sequence[str] | None) -> bool:
    """Whether a job waits to run now in ``queues`` (every queue when ``None``)."""
    with svc.postgres().db.session("look for waiting jobs") as conn:
        return job_table.job_todo_now(conn, queues)


def hand_back_lost_jobs(
    svc: services.Services, worker_id: int, running: Collection[int], suspects: Collection[int]
) -> set[int]:
    """Hand back to the queue the jobs Postgres says worker ``worker_id`` is doing but it is not
    (``running``), that were already so at the previous look (``suspects``: so a fetch whose reply
    is still on its way is never taken); the new suspects. Such a job's fetch committed and its
    reply was lost with the connection (or its finish never arrived): the worker is alive, so
    stalled-job recovery never takes it, and its step would wait for ever."""
    with svc.postgres().db.transaction("hand back lost jobs") as conn:
        doing = set(job_table.job_lost_claim(conn, worker_id, sorted(running)))
        lost = sorted(doing & set(suspects))
        for job_id in lost:
            job_table.job_retry(conn, job_id, priority=jobs.MAINTENANCE_PRIORITY)
    if lost:
        logger.warning("handed back %d job(s) this worker was not running: %s", len(lost), lost)
    return doing - set(lost)


def settle_orphans(svc: services.Services) -> int:
    """Settle the steps whose job ended without them (a worker whose outcome write failed, a claim
    lost in a server crash): a queued step gets a new job; a running one is retried while its
    retry policy (plus the attempts granted for database faults) allows, else it fails with
    :class:`~flowstone.errors.StepLostError`."""

    def decide(
        step: records.Materialization, job_status: str | None
    ) -> tuple[transitions.Settlement, dict[str, Any]]:
        error = errors.StepLostError(
            f"the job of this step ended ({job_status or 'and was deleted'}) without recording the "
            "step's outcome: its worker lost the database, or the server restarted",
            asset=step.asset,
            partition=step.partition_key,
            run_id=step.run_id,
            retryable=True,
        )
        try:
            allowed = svc.defs.get(step.asset).retry.max_attempts + execution.STORE_FAULT_ATTEMPTS
        except errors.UnknownAssetError:
            return "fail", error.to_dict()
        return ("retry" if step.attempt < allowed else "fail"), error.to_dict()

    settled = svc.postgres().settle_orphans(decide=decide, jobs=svc.job_queue(), actor=svc.actor)
    for step, settlement in settled:
        logger.warning("step %s [%s] lost its job: %s", step.asset, step.partition_key, settlement)
    for run_id in {step.run_id for step, settlement in settled if settlement == "fail"}:
        _ended(svc, run_id, before=None)
    return len(settled)


def _ended(svc: services.Services, run_id: str, *, before: records.Run | None) -> None:
    """``run.finished`` for a run that a sweep or a cancel has just ended (it was not before)."""
    run = svc.store.get_run(run_id)
    if (
        run is not None
        and run.status in RUN_TERMINAL
        and (before is None or before.status not in RUN_TERMINAL)
    ):
        run_lifecycle.run_ended(run)


def abandon_runs(svc: services.Services) -> list[str]:
    """Fail the in-process runs whose process is gone (``runtime.resume`` runs them again)."""
    ids = svc.postgres().abandon_runs(actor=svc.actor)
    if ids:
        logger.warning("%d in-process run(s) lost their process: %s", len(ids), ids)
    return ids


def _log_started(steps: Sequence[records.Materialization]) -> None:
    """One line per unit of work at INFO (the lifecycle event ``step.started``, per step, is DEBUG):
    a batch of a backfill is one line, not one per partition. Each step's end is its
    ``step.succeeded`` / ``step.failed`` / ``step.retrying`` event."""
    if len(steps) == 1:
        step = steps[0]
        logger.info(
            "step %s [%s] started (attempt %d, run %s)",
            step.asset,
            step.partition_key,
            step.attempt,
            step.run_id,
        )
    elif steps:
        first, last = steps[0], steps[-1]
        logger.info(
            "%d steps of %s [%s .. %s] started (run %s)",
            len(steps),
            first.asset,
            first.partition_key,
            last.partition_key,
            first.run_id,
        )


def maintain(svc: services.Services) -> None:
    """One round of recovery: stalled jobs, steps whose job ended, abandoned in-process runs,
    runs left unfinished, due approval timeouts, pool waiters with free slots; then upkeep (the
    audit log's coming months, the status counters of sessions that are gone)."""
    recover_stalled(svc)
    settle_orphans(svc)
    abandon_runs(svc)
    finish_runs(svc)
    expire_approvals(svc)
    wake_pool_waiters(svc)
    svc.postgres().pruning.audit_partitions()  # the audit log's months ahead (cheap when present)
    svc.postgres().pruning.fold_status_counts()  # status counters of sessions that are gone


def wake_pool_waiters(svc: services.Services) -> int:
    """Give free pool slots to waiting steps (a safety net: releases wake them as they happen)."""
    woken = svc.postgres().pools.wake_all()
    if woken:
        logger.info("woke %d step(s) waiting for a pool slot", woken)
    return woken


def finish_runs(svc: services.Services) -> list[str]:
    """Finish runs left non-terminal with no active step (a safety net: steps finish their run)."""
    finished = svc.postgres().finish_unfinished_runs(actor=svc.actor)
    if finished:
        logger.info("finished %d run(s) whose last steps ended together", len(finished))
    return finished


def expire_approvals(svc: services.Services, *, materialization_id: int | None = None) -> int:
    """Apply the timeout of the approvals that are due (of one step, when given)."""
    expired = svc.postgres().approvals.expire_due(jobs=svc.jobs, materialization_id=materialization_id)
    for approval in expired:
        events.emit(
            "approval.decided",
            run_id=approval.run_id,
            asset=approval.asset,
            approval_id=approval.id,
            partition=approval.partition_key,
            status=str(approval.status),
            by=approval.decided_by,
        )
    if expired and materialization_id is None:
        logger.info("applied the timeout of %d approval(s)", len(expired))
    return len(expired)


def automation_tick(svc: services.Services) -> dict[str, list[str]]:
    """Evaluate schedules and due sensors (each claims its state row with SKIP LOCKED)."""
    fired = automation.Schedules(svc).tick()
    submitted = automation.Sensors(svc).tick()
    if fired or submitted:
        logger.info("automation: schedules %s, sensors %s", fired, submitted)
    return {**fired, **submitted}


def build_blueprint(svc: services.Services) -> procrastinate.Blueprint:
    """The blueprint holding FlowStone's tasks (add it with ``namespace="flowstone"``)."""
    job_runner = JobRunner(svc)
    options = svc.options
    blueprint = procrastinate.Blueprint()

    @blueprint.task(
        name="run_step", pass_context=True, retry=jobs.FlowStoneRetryStrategy(), queue=jobs.DEFAULT_QUEUE
    )
    def run_step(context: JobContext, /, **kwargs: Any) -> None:
        """Run the step(s) one FlowStone job names; with FlowStone's job manager, the job's last
        success finishes the job too (ADR 0016) and tells the manager so."""
        manager = context.app.job_manager
        if not isinstance(manager, JobManager):  # an app whose job manager is not FlowStone's
            job_runner.run(kwargs, job_id=context.job.id, queue=context.job.queue)
        elif job_runner.run(kwargs, job_id=context.job.id, queue=context.job.queue, finish=True):
            manager.finished_by_success(context.job)

    # `flowstone worker` also runs these on a timer of its own (queue.process); as jobs, with the
    # maintenance priority, they serve workers started with Procrastinate's own CLI.
    @blueprint.periodic(cron=jobs.every(options.recovery_interval_s), priority=jobs.MAINTENANCE_PRIORITY)
    @blueprint.task(name="recover_stalled", queue=jobs.DEFAULT_QUEUE, priority=jobs.MAINTENANCE_PRIORITY)
    def recover_stalled_task(timestamp: int) -> None:
        """Recovery (see :func:`maintain`)."""
        del timestamp
        maintain(svc)

    @blueprint.periodic(cron=jobs.every(options.automation_interval_s), priority=jobs.MAINTENANCE_PRIORITY)
    @blueprint.task(name="automation_tick", queue=jobs.DEFAULT_QUEUE, priority=jobs.MAINTENANCE_PRIORITY)
    def automation_task(timestamp: int) -> None:
        """Evaluate schedules and due sensors."""
        del timestamp
        automation_tick(svc)

    @blueprint.task(name="approval_timeout", queue=jobs.DEFAULT_QUEUE, priority=jobs.MAINTENANCE_PRIORITY)
    def approval_timeout(**kwargs: Any) -> None:
        """Apply the on_timeout policy of one step's approval if it is still pending when due."""
        try:
            args = jobs.JobArgs.model_validate(kwargs)
        except pydantic.ValidationError as exc:
            raise jobs.StepFailed(f"malformed approval-timeout job args: {exc}") from exc
        step = svc.store.get_step(args.run_id, args.asset, args.partition)
        if step is not None:
            expire_approvals(svc, materialization_id=step.id)

    return blueprint


def build_app(svc: services.Services, url: str, blueprint: procrastinate.Blueprint) -> procrastinate.App:
    """A ready ``procrastinate.App`` on FlowStone's database with FlowStone's tasks."""
    options = svc.options
    app = procrastinate.App(
        # timeout: how long a job's fetch or finish waits for a connection; a worker notices an
        # outage within it (flowstone worker then waits for the database, queue.process).
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=1, max_size=options.worker_pool_size, timeout=10
        ),
        worker_defaults={
            "update_heartbeat_interval": options.heartbeat_interval_s,
            "stalled_worker_timeout": options.stalled_after_s,
        },
    )
    app.job_manager = JobManager(connector=app.connector)
    app.add_tasks_from(blueprint, namespace=jobs.NAMESPACE)
    return app
