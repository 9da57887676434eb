"""The client side of the durable queue: submitting runs and backfills, the :class:`RunHandle`, and
the :class:`Enqueuer` that defers FlowStone jobs inside FlowStone's own transactions.

Jobs are deferred with ``procrastinate.tasks.configure_task(..., connection=conn)`` on FlowStone's
connection through a never-opened ``JobManager(SyncPsycopgConnector)``: this works from any thread,
inside or outside a worker (see shared/reference/procrastinate-notes.md §1.1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import procrastinate
import psycopg
from procrastinate import manager as procrastinate_manager
from procrastinate import tasks as procrastinate_tasks

from flowstone import (
    data_api,
    definitions,
    errors,
    partition_keys,
    planning,
    pools,
    resources,
    results,
    run_lifecycle,
    services,
    telemetry,
)
from flowstone.queue import jobs
from flowstone.status import RUN_TERMINAL, STEP_TERMINAL, RunKind, RunStatus, StepStatus
from flowstone.store import base as store_base
from flowstone.store import records
from flowstone.store import runs as store_runs

__all__ = [
    "BACKFILL_CHUNK",
    "RETRIED",
    "Enqueuer",
    "Progress",
    "RunHandle",
    "backfill",
    "finished_steps",
    "retry",
    "submit",
]

Progress = Callable[[records.Run, Mapping[str, int]], None]
"""Called by :meth:`RunHandle.wait` with the run and its step counts at every poll."""


class Enqueuer:
    """Defers FlowStone jobs on a caller's connection (the store's :class:`JobQueue`)."""

    def __init__(self, defs: definitions.Definitions, url: str) -> None:
        self.defs = defs
        # Never opened: with connection= the manager runs its query on the caller's connection.
        self.job_manager = procrastinate_manager.JobManager(procrastinate.SyncPsycopgConnector(conninfo=url))
        self._run_priority: dict[str, int] = {}  # a run's priority never changes

    def priority_of(self, asset: str, run_priority: int = 0) -> int:
        """The job priority of an asset's step in a run of ``run_priority`` (within -999..999)."""
        own = self.defs.get(asset).priority if asset in self.defs else 0
        return max(-pools.MAX_PRIORITY, min(pools.MAX_PRIORITY, own + run_priority))

    def run_priority(self, conn: psycopg.Connection[Any], run_id: str) -> int:
        """The run's priority (its config), read once per run and process."""
        found = self._run_priority.get(run_id)
        if found is None:
            found = store_runs.run_priority(conn, run_id)
            if len(self._run_priority) > 10_000:
                self._run_priority.clear()
            self._run_priority[run_id] = found
        return found

    def queue_of(self, asset: str) -> str:
        """The queue of an asset's jobs (unknown assets: the default queue)."""
        if asset not in self.defs:
            return jobs.DEFAULT_QUEUE
        return self.defs.get(asset).queue or jobs.DEFAULT_QUEUE

    def defer_steps(
        self,
        conn: psycopg.Connection[Any],
        run_id: str,
        items: Sequence[store_base.BatchItem],
        *,
        schedule_in_s: float | None = None,
    ) -> list[int]:
        """One job per (asset, batch_key), in one batch per queue; ids in the order of ``items``
        (``schedule_in_s``: the jobs start no sooner than that)."""
        run_priority = self.run_priority(conn, run_id)
        by_queue: dict[tuple[str, int], list[int]] = {}
        for index, (asset, _) in enumerate(items):
            by_queue.setdefault((self.queue_of(asset), self.priority_of(asset, run_priority)), []).append(
                index
            )
        ids: list[int] = [0] * len(items)
        for (queue, priority), indices in by_queue.items():
            deferrer = procrastinate_tasks.configure_task(
                name=jobs.TASK_NAME,
                job_manager=self.job_manager,
                connection=conn,
                queue=queue,
                priority=priority,
                schedule_at=None
                if schedule_in_s is None
                else datetime.now(UTC) + timedelta(seconds=schedule_in_s),
            )
            args = [
                jobs.JobArgs(run_id=run_id, asset=items[i][0], partition=items[i][1]).model_dump()
                for i in indices
            ]
            for index, job_id in zip(indices, deferrer.batch_defer(*args), strict=True):
                ids[index] = job_id
        return ids

    def defer_timeout(
        self, conn: psycopg.Connection[Any], run_id: str, asset: str, partition_key: str, at: datetime
    ) -> int:
        """Defer the approval-timeout job of a step, scheduled at ``at`` (same three-key args)."""
        deferrer = procrastinate_tasks.configure_task(
            name=jobs.APPROVAL_TIMEOUT_TASK_NAME,
            job_manager=self.job_manager,
            connection=conn,
            queue=jobs.DEFAULT_QUEUE,
            schedule_at=at,
            priority=jobs.MAINTENANCE_PRIORITY,
        )
        return deferrer.defer(
            **jobs.JobArgs(run_id=run_id, asset=asset, partition=partition_key).model_dump()
        )

    def cancel_job(self, conn: psycopg.Connection[Any], job_id: int) -> bool:
        """Cancel a ``todo`` job on the caller's connection."""
        return self.job_manager.cancel_job_by_id(job_id, connection=conn)


class RunHandle:
    """A queued run: its id, progress, waiting and cancelling. ``runtime.run(run_id)`` rebuilds it."""

    def __init__(self, svc: services.Services, run_id: str) -> None:
        self._svc = svc
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    def run(self) -> records.Run:
        """The run's row."""
        run = self._svc.store.get_run(self.run_id)
        if run is None:
            raise errors.FlowStoneError(f"run {self.run_id} does not exist", run_id=self.run_id)
        return run

    def steps(self) -> list[records.Materialization]:
        """Every step of the run, in id order."""
        return self._svc.store.run_steps(self.run_id)

    def status(self) -> dict[str, int]:
        """Number of steps by status, e.g. ``{"succeeded": 3, "queued": 1}``."""
        return self._svc.store.step_counts(self.run_id)

    def wait(
        self, timeout: float | None = None, *, poll_interval_s: float = 0.1, progress: Progress | None = None
    ) -> records.Run:
        """Block until the run is terminal (or waiting for approval); poll with a bounded interval,
        calling ``progress(run, counts)`` at every poll. Only reads: workers finish runs.

        Raises ``TimeoutError`` after ``timeout`` seconds. Waiting needs workers to be running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval_s
        while True:
            run = self.run()
            if progress is not None:
                progress(run, self.status())
            if run.status in RUN_TERMINAL or run.status == RunStatus.WAITING_APPROVAL:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {self.run_id} is still {run.status} after {timeout}s: {self.status()}"
                )
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def cancel(self) -> int:
        """Cancel the steps that have not started (and their jobs); running steps finish. Returns how
        many steps were cancelled."""
        store = self._svc.postgres("cancelling a run")
        before = self.run()
        cancelled = store.cancel_run(self.run_id, actor=self._svc.actor, jobs=self._svc.jobs)
        after = self.run()
        if before.status not in RUN_TERMINAL and after.status in RUN_TERMINAL:
            run_lifecycle.run_ended(after)  # ended by this cancel (running steps would end it later)
        return cancelled


def submit(
    svc: services.Services,
    selection: str | Sequence[str],
    partitions: Sequence[object] | None,
    *,
    with_upstream: bool,
    config: results.RunConfig,
    tags: Mapping[str, str] | None,
    conn: psycopg.Connection[Any] | None = None,
    only_stale: bool = False,
) -> RunHandle:
    """Plan the run and write it, its steps, its edges and the jobs of its ready steps in ONE
    transaction (I1, I11). A failure anywhere rolls all of it back. ``only_stale``: without the
    fresh steps (:func:`flowstone.data_api.stale_plan`)."""
    if isinstance(partitions, str | bytes):
        raise errors.InvalidPartitionError(
            f"partitions must be a list of partitions, got the string {partitions!r}: pass [{partitions!r}]"
        )
    plan = planning.build_plan(
        svc.defs,
        selection,
        partitions=list(partitions) if partitions is not None else [None],
        with_upstream=with_upstream,
    )
    plan = data_api.stale_plan(svc.defs, svc.store, plan) if only_stale else plan
    run_id = run_lifecycle.create_run(svc, plan, kind=RunKind.SUBMIT, config=config, tags=tags, conn=conn)
    return RunHandle(svc, run_id)


BACKFILL_CHUNK = 5_000
"""Steps written per COPY (with their jobs) inside the one transaction of a backfill."""


def backfill(
    svc: services.Services,
    asset: str,
    values: Sequence[partition_keys.PartitionValue],
    *,
    force: bool,
    partitions_per_job: int,
    config: results.RunConfig,
    progress: Callable[[int, int], None] | None,
) -> RunHandle:
    """Enqueue the missing partitions of ``asset`` in bulk: the run, its steps and their jobs in ONE
    transaction, so a failure part-way leaves nothing (and a run never reports ``succeeded``
    while a planned partition is missing)."""
    if partitions_per_job < 1:
        raise errors.ConfigurationError(f"partitions_per_job must be at least 1, got {partitions_per_job}")
    store = svc.postgres()
    definition = svc.defs.get(asset)
    if definition.pools and partitions_per_job > 1:
        raise errors.ConfigurationError(
            f"asset {asset!r} uses pools: each step holds its own slot, so partitions_per_job must be 1"
        )
    resources.ResourceScope(svc.defs.resources, config.resources)
    keys = list(dict.fromkeys(partition_keys.encode(v) for v in values))
    done = set() if force else store.succeeded_keys(asset, keys)
    todo = [k for k in keys if k not in done]
    batches = [todo[i : i + partitions_per_job] for i in range(0, len(todo), partitions_per_job)]
    run_id = str(uuid.uuid4())
    trace = telemetry.run_created(run_id, kind=RunKind.BACKFILL, selection=[asset])
    run = records.NewRun(
        run_id=run_id,
        kind=RunKind.BACKFILL,
        selection=(asset,),
        requested_by=svc.actor,
        config=config.model_copy(update={"trace": trace}).model_dump(mode="json", exclude_defaults=True),
        tags={
            "partitions": len(todo),
            "skipped": len(keys) - len(todo),
            "partitions_per_job": partitions_per_job,
        },
        status=RunStatus.QUEUED,
    )
    store.enqueue_backfill(
        run,
        asset,
        definition.code_version,
        batches,
        svc.job_queue(),
        chunk=BACKFILL_CHUNK,
        progress=(lambda written: progress(written, len(todo))) if progress is not None else None,
    )
    return RunHandle(svc, run_id)


def finished_steps(counts: Mapping[str, int]) -> int:
    """How many of a run's steps are finished, from :meth:`RunHandle.status` counts."""
    return sum(n for status, n in counts.items() if status in STEP_TERMINAL)


RETRIED = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED, StepStatus.REJECTED)
"""The step statuses ``retry`` runs again."""


def retry(svc: services.Services, run_id: str, *, from_asset: str | None = None) -> RunHandle:
    """Run a queued run's failed, skipped, cancelled and rejected steps again (and what is
    downstream of them), in the same run as a new attempt, keeping the succeeded steps; or, with
    ``from_asset``, that asset's steps of the run and every step downstream of them, succeeded or
    not, as a new run tagged ``retry_of`` (a succeeded materialization is history, never reset)."""
    store = svc.postgres("retrying a run")
    run = RunHandle(svc, run_id).run()
    if run.kind == RunKind.MATERIALIZE or run.tags.get("backfill") == "sync":
        raise errors.ConfigurationError(
            f"run {run_id} ran in-process ({run.kind}): run it again with `flowstone materialize` "
            "or `runtime.resume(run_id)`",
            run_id=run_id,
        )
    if from_asset is None:
        if run.status not in RUN_TERMINAL:
            raise errors.ConfigurationError(
                f"run {run_id} is still {run.status}: wait for it to end (or cancel it) before retrying",
                run_id=run_id,
            )
        store.reopen_run(run_id, statuses=RETRIED, jobs=svc.jobs, actor=svc.actor)
        return RunHandle(svc, run_id)
    svc.defs.get(from_asset)  # an unknown name: a clear error
    steps = store.run_steps(run_id)
    edges = store.step_edges(run_id)
    below: dict[planning.StepKey, list[planning.StepKey]] = {}
    for up, down in edges:
        below.setdefault(up, []).append(down)
    todo = [(s.asset, s.partition_key) for s in steps if s.asset == from_asset]
    if not todo:
        raise errors.ConfigurationError(f"run {run_id} has no step of asset {from_asset!r}", run_id=run_id)
    reach = set(todo)
    while todo:
        for nxt in below.get(todo.pop(), []):
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    position = {name: i for i, name in enumerate(svc.defs.graph.topological_order())}
    ordered = sorted(reach, key=lambda k: (position.get(k[0], len(position)), k[1]))
    selection = list(dict.fromkeys(asset for asset, _ in ordered))
    plan = planning.plan_of_steps(selection, ordered, edges)
    config = results.RunConfig.model_validate(run.config)
    tags = {"retry_of": run_id, "from": from_asset}
    return RunHandle(svc, run_lifecycle.create_run(svc, plan, kind=RunKind.SUBMIT, config=config, tags=tags))
