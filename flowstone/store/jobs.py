"""Procrastinate's tables (``sql/queries/jobs.sql``): every query FlowStone runs on them lives here.

Deferring and cancelling go through Procrastinate's own ``JobManager`` on FlowStone's connection
(:class:`flowstone.queue.client.Enqueuer`); putting a stalled job back uses Procrastinate's own
``retry_job`` query, so FlowStone follows its versioned SQL functions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import procrastinate
from procrastinate import sql as procrastinate_sql

from flowstone import errors
from flowstone.store.pg import Conn, Database, Pending, Q

__all__ = [
    "JOB_STATISTICS_AFTER",
    "job_delete_finished",
    "job_finish_succeeded",
    "job_lost_claim",
    "job_retry",
    "job_stalled_claim",
    "job_statistics_refresh",
    "job_todo_now",
    "refresh_statistics",
]

logger = logging.getLogger("flowstone.store")

JOB_STATISTICS_AFTER = 1_000
"""A submit, backfill, retry or step success that defers at least this many jobs refreshes the
statistics of ``procrastinate_jobs`` once it has committed (:func:`refresh_statistics`): with
statistics taken while few jobs waited, Procrastinate's fetch sorts every waiting job on each fetch
(measured: 680 against 260 µs of server time per fetch, 251 against 303 steps/s, over a backlog of
10,000 jobs)."""


def job_stalled_claim(conn: Conn, task_names: Sequence[str], stalled_after_s: float) -> list[int]:
    """Claim (SKIP LOCKED, I18) ``doing`` jobs of these tasks whose worker is gone or silent."""
    rows = conn.execute(
        Q("job_stalled_claim"), {"task_names": list(task_names), "seconds": stalled_after_s}
    ).fetchall()
    return [int(r["id"]) for r in rows]


def job_lost_claim(conn: Conn, worker_id: int, running: Sequence[int]) -> list[int]:
    """Claim (SKIP LOCKED, I18) the ``doing`` jobs of the live worker ``worker_id`` that it is not
    running (``running``: the ids it is)."""
    rows = conn.execute(Q("job_lost_claim"), {"worker_id": worker_id, "running": list(running)}).fetchall()
    return [int(r["id"]) for r in rows]


def job_finish_succeeded(conn: Conn, job_id: int, step_ids: Sequence[int]) -> Pending[bool]:
    """Finish the job ``job_id`` as ``succeeded`` in the caller's transaction, unless it is no longer
    active or one of ``step_ids`` is neither ``succeeded`` nor ``skipped`` (ADR 0016); whether it did,
    once fetched (the statement may go in a pipeline)."""
    cursor = conn.execute(Q("job_finish_succeeded"), {"job_id": job_id, "step_ids": list(step_ids)})
    return Pending(cursor, lambda rows: rows.fetchone() is not None)


async def job_delete_finished(connector: procrastinate.BaseConnector, job_id: int) -> None:
    """Delete a job that its last success finished, on Procrastinate's connector (its worker, which
    deletes the jobs it finishes, skipped its own finish)."""
    await connector.execute_query_async(Q("job_delete_finished"), job_id=job_id)


def job_todo_now(conn: Conn, queues: Sequence[str] | None) -> bool:
    """Whether a job waits to run now in ``queues`` (every queue when ``None``)."""
    row = conn.execute(Q("job_todo_now"), {"queues": list(queues) if queues is not None else None}).fetchone()
    return bool(row and row["waiting"])


def job_statistics_refresh(conn: Conn) -> None:
    """``ANALYZE procrastinate_jobs`` (after a large enqueue has committed)."""
    conn.execute(Q("job_statistics_refresh"))


def refresh_statistics(db: Database, deferred: int) -> None:
    """After a commit that deferred ``deferred`` jobs: refresh ``procrastinate_jobs``' statistics
    when that is at least :data:`JOB_STATISTICS_AFTER`. The jobs are committed, so a failure here
    only costs the workers a slower fetch: it is logged, not raised."""
    if deferred < JOB_STATISTICS_AFTER:
        return
    try:
        with db.session("refresh the queue's statistics") as conn:
            job_statistics_refresh(conn)
    except errors.StoreError as exc:  # the session translated the driver's error
        logger.warning("could not refresh the statistics of procrastinate_jobs: %s", exc)


def job_retry(conn: Conn, job_id: int, *, priority: int | None = None) -> None:
    """Put a ``doing`` job back to ``todo`` now (with a new ``priority`` when given), with
    Procrastinate's own query."""
    conn.execute(
        procrastinate_sql.queries["retry_job"],
        {
            "job_id": job_id,
            "retry_at": None,
            "new_priority": priority,
            "new_queue_name": None,
            "new_lock": None,
        },
    )
