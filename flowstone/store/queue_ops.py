"""The queue's writes, each one transaction (Postgres only): submit, fan-in, failure, retry, cancel,
stalled-job recovery. Part of :class:`PostgresQueueStore`.

Jobs are deferred through a callback (:data:`Enqueue`, provided by :mod:`flowstone.queue`) on the
same connection, inside the same transaction as the metadata they belong to: a job exists exactly
when its step row says ``queued`` (I1, I11, I14).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from flowstone.store import base, records, sqlfiles
from flowstone.store.postgres import PostgresStore, materialization_from_row, success_params, translate_errors

__all__ = ["BatchItem", "Enqueue", "PostgresQueueStore"]

Q = sqlfiles.query
Row = dict[str, Any]
Conn = psycopg.Connection[Row]

BatchItem = tuple[str, str]
"""(asset, batch_key): one job; the job's ``partition`` arg is the batch key."""

Enqueue = Callable[[Conn, str, Sequence[BatchItem]], list[int]]
"""Defers one job per item on the connection (caller's transaction); returns the job ids in order."""

CancelJob = Callable[[Conn, int], bool]
RetryJob = Callable[[Conn, int], None]


def _release_params(step: records.Materialization, now: datetime | None) -> dict[str, Any]:
    """Parameters of ``materialization_release_downstream`` for a step that just succeeded."""
    return {
        "run_id": step.run_id,
        "asset": step.asset,
        "partition_key": step.partition_key,
        "step_id": step.id,
        "attempt": step.attempt,
        "now": now,
    }


class PostgresQueueStore(PostgresStore):
    """The Postgres store plus the queue's transactions."""

    @contextmanager
    def _tx(self, action: str) -> Iterator[Conn]:
        with translate_errors(action), self.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def transaction(self, action: str, conn: Conn | None = None) -> Iterator[Conn]:
        """A transaction on a pooled connection, or a savepoint inside the caller's ``conn``."""
        if conn is None:
            with self._tx(action) as own:
                yield own
        else:
            with translate_errors(action), conn.transaction():
                yield conn

    @staticmethod
    def _defer(conn: Conn, run_id: str, items: Sequence[BatchItem], enqueue: Enqueue) -> None:
        unique = list(dict.fromkeys(items))
        if not unique:
            return
        job_ids = enqueue(conn, run_id, unique)
        conn.execute(
            Q("materialization_set_jobs"),
            {
                "run_id": run_id,
                "assets": [a for a, _ in unique],
                "batch_keys": [b for _, b in unique],
                "job_ids": job_ids,
            },
        )

    @staticmethod
    def _finish(conn: Conn, run_id: str, actor: str, now: datetime | None) -> None:
        # Lock first, in its own statement: the status computed next then sees every step that a
        # concurrent transaction committed while this one waited for the lock (READ COMMITTED).
        conn.execute(Q("run_lock"), {"run_id": run_id})
        conn.execute(Q("run_finish"), {"run_id": run_id, "actor": actor, "now": now})

    def submit_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        edges: Sequence[tuple[base.StepKey, base.StepKey]],
        ready: Sequence[tuple[str, str, str]],
        enqueue: Enqueue,
        *,
        conn: Conn | None = None,
        now: datetime | None = None,
    ) -> None:
        """One transaction (or a savepoint in the caller's ``conn``): run + planned steps + step
        edges + queued ready steps + their jobs."""
        with self.transaction("submit run", conn) as tx:
            self.insert_run(tx, run, steps, edges=edges, now=now)
            self._mark_and_defer(tx, run.run_id, ready, enqueue, now)

    def _mark_and_defer(
        self,
        conn: Conn,
        run_id: str,
        ready: Sequence[tuple[str, str, str]],
        enqueue: Enqueue,
        now: datetime | None,
    ) -> None:
        if not ready:
            return
        moved = conn.execute(
            Q("materialization_mark_queued"),
            {
                "run_id": run_id,
                "assets": [a for a, _, _ in ready],
                "keys": [k for _, k, _ in ready],
                "batch_keys": [b for _, _, b in ready],
                "now": now,
            },
        ).fetchall()
        self._defer(conn, run_id, [(r["asset"], r["batch_key"]) for r in moved], enqueue)

    def enqueue_batches(
        self,
        run_id: str,
        asset: str,
        code_version: str | None,
        batches: Sequence[Sequence[str]],
        enqueue: Enqueue,
        *,
        run: records.NewRun | None = None,
        now: datetime | None = None,
    ) -> int:
        """One transaction: (the run, when given) + one job per batch + its steps written ``queued``
        with COPY. Returns the number of steps written."""
        with self._tx("enqueue backfill") as conn:
            if run is not None:
                self.insert_run(conn, run, [], now=now)
            items = [(asset, batch[0]) for batch in batches if batch]
            job_ids = enqueue(conn, run_id, items) if items else []
            at = now if now is not None else datetime.now(UTC)
            count = 0
            with conn.cursor().copy(Q("materialization_copy_queued")) as copy:
                for batch, job_id in zip((b for b in batches if b), job_ids, strict=True):
                    for key in batch:
                        copy.write_row((run_id, asset, key, "queued", batch[0], at, code_version, job_id))
                        count += 1
            return count

    def complete_steps(
        self,
        items: Sequence[base.Success],
        *,
        actor: str,
        enqueue: Enqueue,
        release: bool = True,
        now: datetime | None = None,
    ) -> list[records.Materialization | None]:
        """One transaction (I11, I14) for one or many steps of a run: each success (with lineage,
        audit, output), the fan-in of their downstream steps, the jobs of those that became ready,
        and the run's status. The statements are pipelined: one round trip, one commit.

        Returns, per item, the succeeded row or ``None`` when that attempt lost its step.
        """
        if not items:
            return []
        run_id = items[0].step.run_id
        if any(item.output is not None and item.output.format == "rows" for item in items):
            return self._complete_one_by_one(items, actor=actor, enqueue=enqueue, release=release, now=now)
        with self._tx("record success") as conn:
            with conn.pipeline():
                successes = [
                    conn.execute(Q("materialization_succeed"), success_params(item, actor, now))
                    for item in items
                ]
                releases = [
                    conn.execute(Q("materialization_release_downstream"), _release_params(item.step, now))
                    for item in items
                    if release  # a backfill run has no step edges: nothing to release
                ]
                self._finish(conn, run_id, actor, now)
                done = [cur.fetchone() for cur in successes]
                ready = [
                    (r["asset"], r["batch_key"])
                    for cur in releases
                    for r in cur.fetchall()
                    if r["status"] == "queued"
                ]
            self._defer(conn, run_id, ready, enqueue)
            return [materialization_from_row(row) if row else None for row in done]

    def _complete_one_by_one(
        self,
        items: Sequence[base.Success],
        *,
        actor: str,
        enqueue: Enqueue,
        release: bool,
        now: datetime | None,
    ) -> list[records.Materialization | None]:
        """complete_steps without the pipeline (rows outputs use COPY, which a pipeline refuses)."""
        run_id = items[0].step.run_id
        done: list[records.Materialization | None] = []
        with self._tx("record success") as conn:
            ready: list[BatchItem] = []
            for item in items:
                row = self.succeed_step_on(
                    conn,
                    item.step,
                    output_ref=item.output_ref,
                    metadata=item.metadata,
                    lineage=item.lineage,
                    actor=actor,
                    output=item.output,
                    now=now,
                )
                done.append(row)
                if row is not None and release:
                    released = conn.execute(
                        Q("materialization_release_downstream"), _release_params(item.step, now)
                    ).fetchall()
                    ready.extend((r["asset"], r["batch_key"]) for r in released if r["status"] == "queued")
            self._finish(conn, run_id, actor, now)
            self._defer(conn, run_id, ready, enqueue)
        return done

    def fail_step_terminal(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """One transaction: ``failed`` + audit, every step reachable from it ``skipped``, run status."""
        with self._tx("record failure") as conn:
            failed = self._fail_on(conn, step, error=error, actor=actor, now=now)
            if failed is None:
                return None
            self._skip_reachable(conn, failed, now)
            self._finish(conn, step.run_id, actor, now)
            return failed

    @staticmethod
    def _skip_reachable(conn: Conn, failed: records.Materialization, now: datetime | None) -> None:
        conn.execute(
            Q("materialization_skip_reachable"),
            {
                "run_id": failed.run_id,
                "asset": failed.asset,
                "partition_key": failed.partition_key,
                "error": Jsonb(base.skip_error(failed)),
                "now": now,
            },
        )

    def retry_later(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        retry_in_s: float,
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """``running`` → ``queued`` keeping attempt and the error (the job is retried later)."""
        with self._tx("record retry") as conn:
            row = conn.execute(
                Q("materialization_retry_later"),
                {
                    "id": step.id,
                    "attempt": step.attempt,
                    "error": Jsonb(dict(error)),
                    "retry_in_s": retry_in_s,
                    "actor": actor,
                    "now": now,
                },
            ).fetchone()
            return materialization_from_row(row) if row else None

    def fail_unclaimed(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """A step whose job cannot run (unknown asset, bad args): ``failed`` where a row exists."""
        with self._tx("record failure") as conn:
            row = conn.execute(
                Q("materialization_fail_unclaimed"),
                {
                    "run_id": run_id,
                    "asset": asset,
                    "partition_key": partition_key,
                    "error": Jsonb(dict(error)),
                    "actor": actor,
                    "now": now,
                },
            ).fetchone()
            if row is None:
                return None
            failed = materialization_from_row(row)
            self._skip_reachable(conn, failed, now)
            self._finish(conn, run_id, actor, now)
            return failed

    def claim_job(
        self,
        run_id: str,
        asset: str,
        batch_key: str,
        *,
        code_version: str | None,
        reclaim: bool,
        now: datetime | None = None,
    ) -> tuple[list[records.Materialization], str | None, dict[str, Any] | None]:
        """Claim a job's steps in one round trip: (claimed rows, run kind, run config); empty
        when nothing could be claimed (already finished, cancelled, or no such run)."""
        rows = self._all(
            "claim job steps",
            "materialization_claim_job",
            {
                "run_id": run_id,
                "asset": asset,
                "batch_key": batch_key,
                "code_version": code_version,
                "reclaim": reclaim,
                "now": now,
            },
        )
        if not rows:
            return [], None, None
        return [materialization_from_row(r) for r in rows], rows[0]["run_kind"], rows[0]["run_config"]

    def job_context(self, run_id: str, asset: str, batch_key: str) -> tuple[dict[str, Any] | None, list[str]]:
        """What a job needs, in one round trip: the run's config (``None`` if the run does not
        exist) and the partition keys of the steps sharing its batch key."""
        with translate_errors("read job context"), self.connection() as conn:
            row = conn.execute(
                Q("run_job_context"), {"run_id": run_id, "asset": asset, "batch_key": batch_key}
            ).fetchone()
        if row is None:  # pragma: no cover - the query always returns one row
            return None, []
        return row["config"], list(row["keys"])

    def finish_unfinished_runs(self, *, actor: str, limit: int = 100) -> list[str]:
        """Finish runs left non-terminal with no active step (claimed with SKIP LOCKED, I18)."""
        with self._tx("finish runs") as conn:
            rows = conn.execute(Q("run_unfinished_claim"), {"limit": limit}).fetchall()
            for row in rows:
                self._finish(conn, str(row["run_id"]), actor, None)
            return [str(r["run_id"]) for r in rows]

    def step_counts(self, run_id: str) -> dict[str, int]:
        """Number of steps of a run by status."""
        with self.connection() as conn:
            rows = conn.execute(Q("run_step_counts"), {"run_id": run_id}).fetchall()
        return {r["status"]: int(r["n"]) for r in rows}

    def cancel_run(
        self, run_id: str, *, actor: str, cancel_job: CancelJob, now: datetime | None = None
    ) -> int:
        """One transaction: not-started steps ``cancelled``, their jobs cancelled, audit, run status.
        Running steps finish normally. Returns the number of steps cancelled."""
        with self._tx("cancel run") as conn:
            rows = conn.execute(Q("run_cancel_steps"), {"run_id": run_id, "now": now}).fetchall()
            for job_id in sorted({r["job_id"] for r in rows if r["job_id"] is not None}):
                cancel_job(conn, job_id)
            conn.execute(
                Q("audit_insert"),
                {
                    "event": "run.cancelled",
                    "actor": actor,
                    "run_id": run_id,
                    "materialization_id": None,
                    "asset": None,
                    "partition_key": None,
                    "details": Jsonb({"steps_cancelled": len(rows)}),
                    "now": now,
                },
            )
            self._finish(conn, run_id, actor, now)
            return len(rows)

    def recover_stalled_jobs(
        self, *, task_names: Sequence[str], stalled_after_s: float, retry_job: RetryJob
    ) -> list[int]:
        """Claim stalled FlowStone jobs with SKIP LOCKED (I18) and hand each back to the queue."""
        with self._tx("recover stalled jobs") as conn:
            rows = conn.execute(
                Q("queue_stalled_jobs_claim"),
                {"task_names": list(task_names), "seconds": stalled_after_s},
            ).fetchall()
            for row in rows:
                retry_job(conn, row["id"])
            return [int(r["id"]) for r in rows]
