"""FlowStone's Procrastinate job manager (the app's ``job_manager``, set by
:func:`flowstone.queue.worker.build_app`): Procrastinate's own, with a bounded unregistering and
without the finish of a job that its last success already finished (ADR 0016)."""

from __future__ import annotations

import asyncio
import logging

import procrastinate
from procrastinate import manager as procrastinate_manager
from procrastinate.jobs import Job, Status

from flowstone.store import jobs as job_table

__all__ = ["UNREGISTER_PATIENCE_S", "JobManager"]

logger = logging.getLogger("flowstone.queue")

UNREGISTER_PATIENCE_S = 2.0
"""How long a stopping worker waits to delete its row from ``procrastinate_workers``."""


class JobManager(procrastinate_manager.JobManager):
    """Procrastinate's job manager, with two changes.

    - A job whose last success finished it (ADR 0016) is not finished again: the worker's finish
      is one round trip and one durable commit per job saved.
    - A stopping worker waits at most :data:`UNREGISTER_PATIENCE_S` to unregister. A worker stops
      when its database goes away (its listener fails), and unregistering then waits for a
      connection for the connector pool's whole timeout (10 s) before the supervisor can notice
      the outage and wait for the database (``queue.process``). A row left behind has no running
      job (a worker unregisters after its jobs end) and Procrastinate prunes it once its heartbeat
      is stale."""

    def __init__(self, connector: procrastinate.BaseConnector) -> None:
        super().__init__(connector)
        self._finished: set[int] = set()

    def finished_by_success(self, job: Job) -> None:
        """The job's last success finished it (ADR 0016): its worker skips its own finish."""
        if job.id is not None:
            self._finished.add(job.id)

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        """Procrastinate's finish, except for a job that its last success already finished (the
        task told :meth:`finished_by_success`): no round trip, only its deletion if the worker
        deletes the jobs it finishes."""
        if job.id is None or job.id not in self._finished:
            await super().finish_job(job=job, status=status, delete_job=delete_job)
            return
        self._finished.discard(job.id)
        if status != Status.SUCCEEDED:  # cannot happen: the task returns once its job is finished
            logger.error("job %d ended %s after its success had finished it", job.id, status)
        if delete_job:
            await job_table.job_delete_finished(self.connector, job.id)

    async def unregister_worker(self, worker_id: int) -> None:
        try:
            await asyncio.wait_for(super().unregister_worker(worker_id), UNREGISTER_PATIENCE_S)
        except TimeoutError:
            logger.warning(
                "could not unregister worker %d within %.0f s; it is pruned once its heartbeat is stale",
                worker_id,
                UNREGISTER_PATIENCE_S,
            )
