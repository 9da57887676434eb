"""The step state machine on Postgres: each function is one transaction's worth of statements on
the caller's connection, composed from the table modules (docs/design/consistency.md).

In-process and queued runs go through the same functions: :func:`create` plans a run and queues
its ready steps, :func:`claim` takes the steps of one unit of work (with their inputs, one round
trip), :func:`complete` records successes with the fan-in, :func:`fail_terminal` records a failure
and skips what depends on it. Every transaction that ends a step calls :func:`finish`, the one
place a run's status is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from flowstone import errors
from flowstone.status import RUN_TERMINAL, RunKind, RunStatus, StepStatus
from flowstone.store import approvals, audit, base, checks, pg, records, runs, step_edges, step_logs
from flowstone.store import jobs as jobs_table
from flowstone.store import materializations as mat
from flowstone.store import outputs as store_outputs
from flowstone.store.pg import Conn

__all__ = [
    "abandon",
    "cancel",
    "claim",
    "complete",
    "create",
    "defer",
    "enqueue_batches",
    "fail_terminal",
    "fail_unclaimed",
    "fail_with_skips",
    "finish",
    "found_inputs",
    "reopen",
    "settle_orphan",
]

Settlement = Literal["requeue", "retry", "fail"]


def finish(conn: Conn, run_id: str, actor: str, now: datetime | None) -> records.Run | None:
    """Recompute the run's status; the run when it changed. The one place a run finishes
    (``flowstone_run_finish``, migration 0018): it locks the run's row first, in a statement of its
    own, so the status computed next sees every step that a concurrent transaction committed while
    this one waited (READ COMMITTED), and of two last steps ending together the second always
    finishes the run."""
    return runs.run_finish(conn, run_id, actor, now).get()


def defer(
    conn: Conn,
    run_id: str,
    items: Sequence[base.BatchItem],
    jobs: base.JobQueue | None,
    *,
    schedule_in_s: float | None = None,
) -> None:
    """Defer one job per unit of work (in the caller's transaction) and record the job ids."""
    unique = list(dict.fromkeys(items))
    if not unique or jobs is None:
        return
    job_ids = jobs.defer_steps(conn, run_id, unique, schedule_in_s=schedule_in_s)
    mat.materialization_set_jobs(conn, run_id, unique, job_ids)


def create(
    conn: Conn,
    run: records.NewRun,
    steps: Sequence[records.PlannedStep],
    *,
    edges: Sequence[tuple[base.StepKey, base.StepKey]],
    ready: Sequence[base.StepKey],
    jobs: base.JobQueue | None,
    now: datetime | None,
) -> None:
    """The run, its planned steps, their edges, ``run.requested``, and the ready steps queued with
    their jobs."""
    runs.run_insert(conn, run, now)
    mat.materialization_plan(conn, run.run_id, steps, now)
    step_edges.step_edges_insert(conn, run.run_id, edges)
    audit.audit_insert(
        conn,
        audit.audit_params(
            "run.requested",
            actor=run.requested_by,
            run_id=run.run_id,
            details={
                "kind": run.kind,
                "selection": list(run.selection),
                # a bulk backfill writes its steps after the run (COPY): count from its tags
                "steps": len(steps) or int(run.tags.get("partitions", 0)),
            },
            now=now,
        ),
    )
    defer(conn, run.run_id, mat.materialization_mark_queued(conn, run.run_id, ready, now), jobs)


def enqueue_batches(
    conn: Conn,
    run_id: str,
    asset: str,
    *,
    code_version: str | None,
    batches: Sequence[Sequence[str]],
    jobs: base.JobQueue,
    now: datetime | None,
) -> int:
    """One job per batch of partitions, and its steps written ``queued`` with COPY; returns the
    number of steps written."""
    full = [b for b in batches if b]
    job_ids = jobs.defer_steps(conn, run_id, [(asset, b[0]) for b in full]) if full else []
    return mat.materialization_copy_queued(
        conn, run_id, asset, code_version=code_version, batches=full, job_ids=job_ids, now=now
    )


def found_inputs(rows: Sequence[pg.Row]) -> base.Found:
    """The ``materialization_inputs`` rows by (asset, key), with whether each is this run's."""
    return {
        (r["asset"], r["partition_key"]): (pg.materialization_from_row(r), bool(r["in_run"])) for r in rows
    }


def claim(
    conn: Conn,
    run_id: str,
    asset: str,
    batch_key: str,
    *,
    wanted: Sequence[base.StepKey],
    code_version: str | None,
    reclaim: bool,
    job_id: int | None,
    now: datetime | None,
) -> tuple[base.Claim, list[pg.Row]]:
    """The claim and the lookup of ``wanted`` inputs, pipelined: one round trip. Each statement
    commits on its own (autocommit; the claim asynchronously, ADR 0009). Returns the claim and
    the raw input rows (with any stored outputs)."""
    unit = base.ClaimAhead(asset, batch_key, wanted, code_version)
    with conn.pipeline():
        sent = _send_claim(conn, run_id, unit, reclaim=reclaim, job_id=job_id, now=now)
    return sent.get()  # the results came with the pipeline's one sync


def _send_claim(
    conn: Conn,
    run_id: str,
    unit: base.ClaimAhead,
    *,
    reclaim: bool,
    job_id: int | None,
    now: datetime | None,
) -> pg.Pending[tuple[base.Claim, list[pg.Row]]]:
    """Send the claim of ``unit`` and its input lookup (in the caller's pipeline); fetch both with
    ``get``. A claim sent ahead for a job's kept unit passes the job (``reclaim``, ``job_id``), as
    the worker's own claim of it would."""
    claimed = mat.materialization_claim(
        conn,
        run_id=run_id,
        asset=unit.asset,
        batch_key=unit.batch_key,
        code_version=unit.code_version,
        reclaim=reclaim,
        job_id=job_id,
        now=now,
    )
    inputs = mat.materialization_inputs(conn, run_id, unit.wanted) if unit.wanted else None

    def fetch(_: object) -> tuple[base.Claim, list[pg.Row]]:
        rows = claimed.get()
        input_rows = inputs.get() if inputs is not None else []
        if not rows:
            return base.Claim(steps=[]), []
        return (
            base.Claim(
                steps=[pg.materialization_from_row(r) for r in rows],
                inputs=found_inputs(input_rows),
                run_kind=RunKind(rows[0]["run_kind"]),
                run_config=rows[0]["run_config"],
            ),
            input_rows,
        )

    return pg.Pending(claimed.cursor, fetch)


def complete(
    conn: Conn,
    items: Sequence[base.Success],
    *,
    actor: str,
    jobs: base.JobQueue | None,
    release: bool,
    keep: base.Keep | None,
    now: datetime | None,
    ahead: base.ClaimAhead | None = None,
    finish_job: int | None = None,
) -> tuple[base.Completed, list[pg.Row]]:
    """Successes of one run (one statement), their fan-in, the jobs of the steps that became ready
    (one of them kept for the running job with ``keep``) and the run's status, in ONE transaction
    that this function opens on the autocommit ``conn``. BEGIN, the statements and COMMIT are
    pipelined: one round trip in process, one more before the jobs are deferred. It commits
    asynchronously unless the run ends in it (ADR 0013). Outputs for a user table (COPY, which a
    pipeline refuses) go without the pipeline. The claim ``ahead`` follows the COMMIT in the same
    round trip (as :func:`claim` makes it, on its own); returned with the raw input rows of that
    claim. ``finish_job``: the running job, which ends with this success unless it keeps a step
    (``keep``): the transaction finishes it too and commits durably (ADR 0016)."""
    if not items:
        return base.Completed(rows=[]), []
    run_id = items[0].step.run_id
    rows_mode = any(item.output is not None and item.output.format == "rows" for item in items)
    defer_now = release and jobs is not None
    continued: base.BatchItem | None = None
    sent: list[pg.Pending[tuple[base.Claim, list[pg.Row]]]] = []

    def send_after() -> None:  # behind the COMMIT: the claim ahead, or that of the kept unit
        if ahead is not None:
            sent.append(_send_claim(conn, run_id, ahead, reclaim=False, job_id=None, now=now))
        elif continued is not None and keep is not None and keep.ahead is not None:
            kept = keep.ahead(continued)
            sent.append(_send_claim(conn, run_id, kept, reclaim=True, job_id=keep.job_id, now=now))

    kept_ahead = defer_now and keep is not None and keep.ahead is not None
    after = pg.After(send_after) if (ahead is not None or kept_ahead) and not rows_mode else None
    with conn.transaction() if rows_mode else pg.one_trip(conn, after):
        step_logs.step_logs_insert(conn, [line for item in items for line in item.logs])
        # the successes and the fan-in of those that release, in one statement
        succeeded = mat.materialization_succeed(conn, items, actor, now, release=release)
        if rows_mode:  # rows follow their success row
            _write_rows(conn, items, succeeded.get()[0])
        checks.check_result_insert(conn, items, now)
        for item in items:  # a failed blocking check skips downstream instead of releasing it
            if release and (check := item.blocked_by) is not None:
                checks.check_skip_downstream(conn, item.step, check, now)
        if defer_now:
            assert jobs is not None  # noqa: S101 - defer_now says so
            released = succeeded.get()[1]  # syncs here (unless the rows did)
            continued = _kept(released, keep, jobs)
            defer(conn, run_id, [unit for unit in released if unit != continued], jobs)
            if continued is not None and keep is not None:
                mat.materialization_set_jobs(conn, run_id, [continued], [keep.job_id])
        # Last before the COMMIT: the run's row lock is held for the end of the pipeline only, not
        # across the round trips above, during which concurrent successes of the run would wait on
        # it. (Safe since migration 0019: the key-share locks that the updates above take on the
        # run's row, for their foreign-key checks, do not conflict with it.)
        ends_job = finish_job if continued is None else None
        finished = runs.run_finish(conn, run_id, actor, now, commit_async=ends_job is None)
        # After the run's status, so the job's row is locked for the pipeline's end only.
        job_done = None
        if ends_job is not None:
            job_done = jobs_table.job_finish_succeeded(conn, ends_job, [i.step.id for i in items])
    # The results came with the commit (one round trip); a pipeline's cursors keep them.
    done, released = succeeded.get()
    run = finished.get()
    ended = run if run is not None and run.status in RUN_TERMINAL else None
    claimed: base.Claim | None = None
    input_rows: list[pg.Row] = []
    if ahead is not None and rows_mode:  # the COPY went without a pipeline: the claim follows
        with conn.pipeline():
            sent.append(_send_claim(conn, run_id, ahead, reclaim=False, job_id=None, now=now))
        claimed, input_rows = sent[0].get()
    elif sent and (after is None or after.failed is None):
        claimed, input_rows = sent[0].get()
    completed = base.Completed(
        rows=[done.get(i.step.id) for i in items],
        released=released,
        continued=continued,
        run=ended,
        ahead=claimed,
        job_finished=job_done is not None and job_done.get(),
    )
    return completed, input_rows


def _write_rows(
    conn: Conn, items: Sequence[base.Success], done: Mapping[int, records.Materialization]
) -> None:
    for item in items:
        row = done.get(item.step.id)
        if row is not None and item.output is not None and item.output.format == "rows":
            store_outputs.write_rows(
                conn, item.output, materialization_id=row.id, asset=row.asset, partition_key=row.partition_key
            )


def _kept(
    released: Sequence[base.BatchItem], keep: base.Keep | None, jobs: base.JobQueue
) -> base.BatchItem | None:
    """The released unit of work the running job keeps: the first one on its own queue."""
    if keep is None:
        return None
    return next((unit for unit in released if jobs.queue_of(unit[0]) == keep.queue), None)


def fail_terminal(
    conn: Conn, step: records.Materialization, error: Mapping[str, Any], actor: str, now: datetime | None
) -> records.Materialization | None:
    """``failed`` + audit, every step reachable from it ``skipped``, the run's status."""
    failed = mat.materialization_fail(conn, step, error, actor, now)
    if failed is None:
        return None
    mat.materialization_skip_reachable(conn, failed, now)
    finish(conn, step.run_id, actor, now)
    return failed


def fail_with_skips(
    conn: Conn,
    step: records.Materialization,
    *,
    error: Mapping[str, Any],
    skip: Sequence[base.StepKey],
    actor: str,
    now: datetime | None,
) -> records.Materialization | None:
    """``failed`` + audit, and the given not-yet-started steps ``skipped``."""
    failed = mat.materialization_fail(conn, step, error, actor, now)
    if failed is not None and skip:
        mat.materialization_skip(conn, step.run_id, skip, base.skip_error(failed), now)
    return failed


def fail_unclaimed(
    conn: Conn,
    run_id: str,
    asset: str,
    partition_key: str,
    *,
    error: Mapping[str, Any],
    actor: str,
    now: datetime | None,
) -> records.Materialization | None:
    """A step whose job cannot run (unknown asset, bad args) → ``failed`` where a row exists, its
    dependents skipped, the run's status."""
    failed = mat.materialization_fail_unclaimed(
        conn, run_id, asset, partition_key, error=error, actor=actor, now=now
    )
    if failed is None:
        return None
    mat.materialization_skip_reachable(conn, failed, now)
    finish(conn, run_id, actor, now)
    return failed


def cancel(conn: Conn, run_id: str, actor: str, jobs: base.JobQueue | None, now: datetime | None) -> int:
    """Not-started steps and steps waiting for approval ``cancelled`` with their jobs (their
    approval requests withdrawn), ``run.cancelled``, the run's status. Running steps finish
    normally. Returns the number of steps cancelled."""
    rows = mat.materialization_cancel_run(conn, run_id, now)
    withdrawn = approvals.approval_withdraw_run(
        conn, run_id, by=actor, reason="the run was cancelled", now=now
    )
    for approval in withdrawn:
        audit.audit_insert(
            conn,
            audit.audit_params(
                "approval.withdrawn",
                actor=actor,
                run_id=run_id,
                materialization_id=approval.materialization_id,
                asset=approval.asset,
                partition_key=approval.partition_key,
                details={"approval_id": approval.id, "reason": approval.reason},
                now=now,
            ),
        )
    if jobs is not None:
        job_ids = {r["job_id"] for r in rows} | {a.timeout_job_id for a in withdrawn}
        for job_id in sorted(j for j in job_ids if j is not None):
            jobs.cancel_job(conn, job_id)
    audit.audit_insert(
        conn,
        audit.audit_params(
            "run.cancelled", actor=actor, run_id=run_id, details={"steps_cancelled": len(rows)}, now=now
        ),
    )
    finish(conn, run_id, actor, now)
    return len(rows)


def settle_orphan(
    conn: Conn,
    step: records.Materialization,
    settlement: Settlement,
    error: Mapping[str, Any],
    *,
    jobs: base.JobQueue,
    actor: str,
) -> Settlement:
    """Settle an active step whose job ended without it (claimed by the recovery sweep): a
    ``queued`` step gets a new job; a ``running`` one is retried with a new job, or fails."""
    if step.status == StepStatus.QUEUED or settlement == "requeue":
        defer(conn, step.run_id, [(step.asset, _batch_of(step))], jobs)
        return "requeue"
    if settlement == "retry" and mat.materialization_retry_later(
        conn, step, error=error, retry_in_s=0.0, actor=actor, now=None
    ):
        defer(conn, step.run_id, [(step.asset, _batch_of(step))], jobs)
        return "retry"
    fail_terminal(conn, step, error, actor, None)
    return "fail"


def _batch_of(step: records.Materialization) -> str:
    # Only the step's own key is sure to name it: a batch-mate may have moved on.
    return step.partition_key


def abandon(conn: Conn, run_id: str, *, actor: str, now: datetime | None) -> int:
    """An in-process run whose process is gone: its active steps fail with
    ``RunAbandonedError``, what depends on them is skipped, the run finishes (``failed``)."""
    error = errors.RunAbandonedError(
        "the process running this in-process run ended before the step did; resume the run "
        "(runtime.resume(run_id)) to run it again",
        run_id=run_id,
    ).to_dict()
    failed = mat.materialization_abandon_run(conn, run_id, error, now)
    for step in failed:
        mat.materialization_skip_reachable(conn, step, now)
    audit.audit_insert(
        conn,
        audit.audit_params(
            "run.abandoned", actor=actor, run_id=run_id, details={"steps": len(failed)}, now=now
        ),
    )
    finish(conn, run_id, actor, now)
    return len(failed)


def reopen(
    conn: Conn,
    run: records.Run,
    *,
    statuses: Sequence[StepStatus],
    error_type: str | None,
    assets: Sequence[str] | None,
    jobs: base.JobQueue | None,
    actor: str,
    now: datetime | None,
) -> list[base.StepKey]:
    """A retry of a run: the steps that did not succeed in ``statuses`` (of ``error_type``, of
    ``assets``, when given) and what is downstream of them go back to ``pending`` (a claim then
    increments their attempt); what is still blocked by another failure is skipped again; the run
    becomes active. Queued runs get the jobs of their ready steps; returns the ready steps."""
    reopened = mat.materialization_reopen(
        conn, run.run_id, statuses=[s.value for s in statuses], error_type=error_type, assets=assets
    )
    if not reopened:
        return []
    mat.materialization_recount_pending(conn, run.run_id)
    blocked = errors.DependencyFailedError(
        "an upstream step of the run did not succeed", run_id=run.run_id
    ).to_dict()
    mat.materialization_skip_blocked(conn, run.run_id, blocked, now)
    queued = run.kind != RunKind.MATERIALIZE and run.tags.get("backfill") != "sync"
    runs.run_reopen(conn, run.run_id, RunStatus.QUEUED if queued else RunStatus.RUNNING)
    audit.audit_insert(
        conn,
        audit.audit_params(
            "run.reopened",
            actor=actor,
            run_id=run.run_id,
            details={"steps": len(reopened), "statuses": [str(s) for s in statuses]},
            now=now,
        ),
    )
    ready = mat.materialization_ready(conn, run.run_id)
    if queued:
        defer(conn, run.run_id, mat.materialization_mark_queued(conn, run.run_id, ready, now), jobs)
    if not ready:  # everything reopened was blocked again: the run ends as it was
        finish(conn, run.run_id, actor, now)
    return ready
