"""The Postgres store: the facade over one module per table (``runs``, ``materializations``,
``step_edges``, ``lineage``, ``approvals``, ``automation``, ``outputs``, ``audit``, ``jobs``), each
mirroring its ``sql/queries/<table>.sql``, and the transactions that compose them
(``transitions``, ``decisions``). Each method takes a pooled connection, opens the transaction and
names the action driver errors are reported under; the SQL is in the modules it calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from flowstone import approval_types, errors
from flowstone.io import base as io_base
from flowstone.status import StepStatus
from flowstone.store import (
    approvals,
    audit,
    base,
    decisions,
    pg,
    pg_approvals,
    pg_data,
    pg_definitions,
    pg_outputs,
    pg_reads,
    pg_step_logs,
    pools,
    pruning,
    records,
    reports,
    runs,
    step_edges,
    transitions,
)
from flowstone.store import jobs as job_table
from flowstone.store import materializations as mat
from flowstone.store import outputs as store_outputs
from flowstone.store.pg import Conn, translate_errors

__all__ = ["PostgresStore"]


class PostgresStore(pg_reads.PostgresReads, base.Store):
    """Metadata in Postgres through a small connection pool (autocommit; explicit transactions)."""

    kind = "postgres"

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        self.url = url
        self.db = pg.Database(url, max_connections=max_connections)
        self.outputs = pg_outputs.PostgresOutputs(self.db)
        self.approvals = pg_approvals.PostgresApprovals(self.db)
        self.snapshots = pg_definitions.PostgresSnapshots(self.db)
        self.reports = reports.PostgresReports(self.db)
        self.pools = pools.PostgresPools(self.db)
        self.pruning = pruning.PostgresPruning(self.db)
        self.logs: pg_step_logs.PostgresStepLogs = pg_step_logs.PostgresStepLogs(self.db)
        self.checks, self.partitions = pg_data.components(self.db)

    def close(self) -> None:
        """Stop the step-log flush (after a last one), close the pool; the store reopens it if used again."""
        self.logs.close()
        self.db.close()

    @contextmanager
    def transaction(self, action: str, conn: Conn | None = None) -> Iterator[Conn]:
        """A transaction on a pooled connection, or a savepoint inside the caller's ``conn``."""
        with self.db.transaction(action, conn) as tx:
            yield tx

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[base.StepKey, base.StepKey]] = (),
        ready: Sequence[base.StepKey] = (),
        jobs: base.JobQueue | None = None,
        now: datetime | None = None,
        conn: Conn | None = None,
    ) -> records.Run:
        """See :meth:`Store.create_run`; ``conn``: in the caller's transaction (a savepoint)."""
        with self.db.transaction("create run", conn) as tx:
            transitions.create(tx, run, steps, edges=edges, ready=ready, jobs=jobs, now=now)
            created = runs.run_get(tx, run.run_id)
        assert created is not None  # noqa: S101 - inserted above
        # committed here, unless in the caller's transaction (then not yet: nothing to refresh)
        job_table.refresh_statistics(self.db, len(ready) if conn is None and jobs is not None else 0)
        return created

    def get_run(self, run_id: str) -> records.Run | None:
        with self.db.session("read run") as conn:
            return runs.run_get(conn, run_id)

    def list_runs(self, *, limit: int = 20) -> list[records.Run]:
        with self.db.session("list runs") as conn:
            return runs.run_list(conn, limit)

    def finish_run(self, run_id: str, *, actor: str, now: datetime | None = None) -> records.Run | None:
        with self.db.transaction("finish run") as conn:
            return transitions.finish(conn, run_id, actor, now)

    def run_steps(self, run_id: str) -> list[records.Materialization]:
        with self.db.session("read run steps") as conn:
            return mat.materialization_run_steps(conn, run_id)

    def step_edges(self, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
        with self.db.session("read step edges") as conn:
            return step_edges.step_edges_of_run(conn, run_id)

    def step_counts(self, run_id: str) -> dict[str, int]:
        with self.db.session("count steps") as conn:
            return runs.run_step_counts(conn, run_id)

    def enqueue_backfill(
        self,
        run: records.NewRun,
        asset: str,
        code_version: str | None,
        batches: Sequence[Sequence[str]],
        jobs: base.JobQueue,
        *,
        chunk: int = 5_000,
        progress: Callable[[int], None] | None = None,
        now: datetime | None = None,
    ) -> int:
        """ONE transaction: the run, one job per batch of partitions and its steps ``queued``
        (COPY), ``chunk`` steps at a time (``progress(steps written)`` after each); a run with
        nothing to do finishes at once. Returns the number of steps written."""
        with self.db.transaction("enqueue backfill") as conn:
            transitions.create(conn, run, [], edges=(), ready=(), jobs=None, now=now)
            per_chunk = max(1, chunk // max(1, max((len(b) for b in batches), default=1)))
            written = 0
            for start in range(0, len(batches), per_chunk):
                written += transitions.enqueue_batches(
                    conn,
                    run.run_id,
                    asset,
                    code_version=code_version,
                    batches=batches[start : start + per_chunk],
                    jobs=jobs,
                    now=now,
                )
                if progress is not None:
                    progress(written)
            if not written:
                transitions.finish(conn, run.run_id, run.requested_by, now)
        job_table.refresh_statistics(self.db, sum(1 for b in batches if b))
        return written

    def cancel_run(
        self, run_id: str, *, actor: str, jobs: base.JobQueue | None, now: datetime | None = None
    ) -> int:
        """Not-started steps ``cancelled`` with their jobs, audited, in one transaction."""
        with self.db.transaction("cancel run") as conn:
            return transitions.cancel(conn, run_id, actor, jobs, now)

    def finish_unfinished_runs(self, *, actor: str, limit: int = 100) -> list[str]:
        """Finish runs left non-terminal with no active step (claimed with SKIP LOCKED, I18)."""
        with self.db.transaction("finish runs") as conn:
            ids = runs.run_unfinished_claim(conn, limit)
            for run_id in ids:
                transitions.finish(conn, run_id, actor, None)
            return ids

    def recover_stalled_jobs(
        self, *, task_names: Sequence[str], stalled_after_s: float, priority: int | None = None
    ) -> list[int]:
        """Claim stalled jobs of these tasks (SKIP LOCKED, I18) and hand each back to the queue
        (with ``priority``: ahead of a backlog)."""
        with self.db.transaction("recover stalled jobs") as conn:
            ids = job_table.job_stalled_claim(conn, task_names, stalled_after_s)
            for job_id in ids:
                job_table.job_retry(conn, job_id, priority=priority)
            return ids

    def settle_orphans(
        self,
        *,
        decide: Callable[
            [records.Materialization, str | None], tuple[transitions.Settlement, dict[str, Any]]
        ],
        jobs: base.JobQueue,
        actor: str,
        limit: int = 100,
    ) -> list[tuple[records.Materialization, transitions.Settlement]]:
        """Settle the active steps whose job ended without them (claimed with SKIP LOCKED, I18):
        ``decide(step, job_status)`` says whether a running one is retried or fails."""
        settled = []
        with self.db.transaction("settle steps whose job ended") as conn:
            for step, job_status in mat.materialization_orphaned_claim(conn, limit):
                settlement, error = decide(step, job_status)
                done = transitions.settle_orphan(conn, step, settlement, error, jobs=jobs, actor=actor)
                settled.append((step, done))
        return settled

    def abandon_runs(self, *, actor: str, grace_s: float = 5.0, limit: int = 20) -> list[str]:
        """Fail the in-process runs whose owner process is gone (claimed with SKIP LOCKED, I18)."""
        with self.db.transaction("abandon runs") as conn:
            ids = runs.run_abandoned_claim(conn, grace_s=grace_s, limit=limit, now=None)
            for run_id in ids:
                transitions.abandon(conn, run_id, actor=actor, now=None)
            return ids

    def reopen_run(
        self,
        run_id: str,
        *,
        statuses: Sequence[StepStatus],
        error_type: str | None = None,
        assets: Sequence[str] | None = None,
        jobs: base.JobQueue | None,
        actor: str,
        now: datetime | None = None,
    ) -> list[base.StepKey]:
        """A retry of a run (see :func:`flowstone.store.transitions.reopen`); the ready steps."""
        with self.db.transaction("reopen run") as conn:
            run = runs.run_get(conn, run_id)
            if run is None:
                raise errors.FlowStoneError(f"run {run_id} does not exist", run_id=run_id)
            ready = transitions.reopen(
                conn,
                run,
                statuses=statuses,
                error_type=error_type,
                assets=assets,
                jobs=jobs,
                actor=actor,
                now=now,
            )
        job_table.refresh_statistics(self.db, len(ready) if jobs is not None else 0)
        return ready

    @contextmanager
    def hold_run(self, run_id: str) -> Iterator[None]:
        """Own an in-process run while this process runs its steps: a session-level advisory lock
        on a connection of its own (not pooled), released when the process ends however it ends.
        The recovery sweep fails the runs nobody owns (``abandon_runs``)."""
        with (
            translate_errors("own run"),
            psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn,
        ):
            if not runs.run_owner_lock(conn, run_id):
                raise errors.ConfigurationError(
                    f"run {run_id} is being run by another process right now", run_id=run_id
                )
            yield

    # -- the step state machine ---------------------------------------------------------------

    def claim(
        self,
        run_id: str,
        asset: str,
        batch_key: str,
        *,
        wanted: Sequence[base.StepKey] = (),
        code_version: str | None = None,
        reclaim: bool = False,
        job_id: int | None = None,
        now: datetime | None = None,
    ) -> base.Claim:
        """See :meth:`Store.claim`: one round trip. Stored outputs of the inputs (Postgres IO
        manager) come along and are kept for this thread's next loads."""
        with self.db.session("claim step") as conn:
            claim, input_rows = transitions.claim(
                conn,
                run_id,
                asset,
                batch_key,
                wanted=wanted,
                code_version=code_version,
                reclaim=reclaim,
                job_id=job_id,
                now=now,
            )
        self.outputs.keep(input_rows)
        return claim

    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        with self.db.session("read step") as conn:
            return mat.materialization_get_step(conn, run_id, asset, partition_key)

    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        with self.db.session("read materialization") as conn:
            return mat.materialization_get(conn, materialization_id)

    def get_materializations(self, ids: Sequence[int]) -> dict[int, records.Materialization]:
        with self.db.session("read materializations") as conn:
            return mat.materialization_get_many(conn, ids)

    def find_inputs(self, run_id: str, wanted: Sequence[base.StepKey]) -> base.Found:
        if not wanted:
            return {}
        with self.db.session("find inputs") as conn:
            rows = mat.materialization_inputs(conn, run_id, wanted).get()
        self.outputs.keep(rows, more=True)
        return transitions.found_inputs(rows)

    def succeed_step(
        self,
        step: records.Materialization,
        *,
        output_ref: Mapping[str, Any],
        metadata: Mapping[str, Any],
        lineage: Sequence[tuple[int, str]],
        actor: str,
        output: io_base.PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        item = base.Success(step, output_ref, metadata, lineage, output)
        with self.db.transaction("record success") as conn:
            row = mat.materialization_succeed(conn, [item], actor, now, release=False).get()[0].get(step.id)
            if row is not None and output is not None and output.format == "rows":
                store_outputs.write_rows(
                    conn, output, materialization_id=row.id, asset=row.asset, partition_key=row.partition_key
                )
            return row

    def complete_steps(
        self,
        items: Sequence[base.Success],
        *,
        actor: str,
        jobs: base.JobQueue | None = None,
        release: bool = True,
        keep: base.Keep | None = None,
        claim_ahead: base.ClaimAhead | None = None,
        now: datetime | None = None,
        finish_job: int | None = None,
    ) -> base.Completed:
        with self.db.session("record success") as conn:
            completed, input_rows = transitions.complete(
                conn,
                items,
                actor=actor,
                jobs=jobs,
                release=release,
                keep=keep,
                now=now,
                ahead=claim_ahead,
                finish_job=finish_job,
            )
        self.outputs.keep(input_rows)  # the inputs of the step claimed ahead, if any
        deferred = len(completed.released) - (completed.continued is not None)  # a fan-out: thousands
        job_table.refresh_statistics(self.db, deferred if jobs is not None and release else 0)
        return completed

    def fail_step(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        skip: Sequence[base.StepKey],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        with self.db.transaction("record failure") as conn:
            return transitions.fail_with_skips(conn, step, error=error, skip=skip, actor=actor, now=now)

    def fail_terminal(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        with self.db.transaction("record failure") as conn:
            return transitions.fail_terminal(conn, step, error, actor, now)

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
        with self.db.transaction("record failure") as conn:
            return transitions.fail_unclaimed(
                conn, run_id, asset, partition_key, error=error, actor=actor, now=now
            )

    def retry_later(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        retry_in_s: float,
        actor: str,
        jobs: base.JobQueue | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        with self.db.transaction("record retry") as conn:
            row = mat.materialization_retry_later(
                conn, step, error=error, retry_in_s=retry_in_s, actor=actor, now=now
            )
            if row is not None and jobs is not None:
                transitions.defer(
                    conn, row.run_id, [(row.asset, row.partition_key)], jobs, schedule_in_s=retry_in_s
                )
            return row

    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[base.StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        if not steps:
            return []
        with self.db.session("skip steps") as conn:
            return mat.materialization_skip(conn, run_id, steps, error, now)

    # -- approvals ------------------------------------------------------------------------------

    def request_approval(
        self,
        step: records.Materialization,
        request: approval_types.ApprovalRequest,
        *,
        actor: str,
        jobs: base.JobQueue | None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        with self.db.transaction("request approval") as conn:
            waiting = decisions.request(conn, step, request, actor=actor, jobs=jobs, now=now)
        return self.get_step(step.run_id, step.asset, step.partition_key) if waiting else None

    def approval_decision(self, materialization_id: int) -> approval_types.ApprovalDecision | None:
        with self.db.session("read approval") as conn:
            return decisions.decision_of(approvals.approval_for_materialization(conn, materialization_id))

    def audit(
        self,
        event: str,
        *,
        actor: str,
        run_id: str | None = None,
        materialization_id: int | None = None,
        asset: str | None = None,
        partition_key: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        params = audit.audit_params(
            event,
            actor=actor,
            run_id=run_id,
            materialization_id=materialization_id,
            asset=asset,
            partition_key=partition_key,
            details=details,
            now=now,
        )
        with self.db.session("write audit event") as conn:
            return audit.audit_insert(conn, params)

    def gc_candidates(self, keep_last: int) -> list[records.GcCandidate]:
        return self.outputs.gc_plan(keep_last)

    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        self.outputs.mark_deleted(ids, now=now)
