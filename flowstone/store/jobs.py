"""Procrastinate's tables (``sql/queries/jobs.sql``): every query FlowStone runs on them lives here.

Deferring and cancelling go through Procrastinate's own ``JobManager`` on FlowStone's connection
(:class:`flowstone.queue.client.Enqueuer`); putting a stalled job back uses Procrastinate's own
``retry_job`` query, so FlowStone follows its versioned SQL functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from procrastinate import sql as procrastinate_sql

from flowstone.store.pg import Conn, Q

__all__ = ["job_lost_claim", "job_retry", "job_stalled_claim", "job_statistics_refresh", "job_todo_now"]


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


def job_todo_now(conn: Conn, queues: Sequence[str] | None) -> bool:
    """Whether a job waits to run now in ``queues`` (every queue when ``None``)."""
    row = conn.execute(Q("job_todo_now"), {"queues": list(queues) if queues is not None else None}).fetchone()
    return bool(row and row["waiting"])


def job_statistics_refresh(conn: Conn) -> None:
    """``ANALYZE procrastinate_jobs`` (after a large enqueue has committed)."""
    conn.execute(Q("job_statistics_refresh"))


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
