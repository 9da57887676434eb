"""The memory store: the Postgres store's state machine in a process (tests, notebooks, quick runs).

Append-only ids, the same guarded transitions, fan-in through step edges and "latest" ordering; one
lock makes every method atomic. The contract suite runs against both stores; approvals need Postgres."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from flowstone import approval_types, errors
from flowstone.io import base as io_base
from flowstone.status import RUN_TERMINAL, RunStatus, StepStatus, run_status_of
from flowstone.store import base, memory_checks, memory_partitions, memory_step_logs, memory_tables, records

__all__ = ["MemoryStore"]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class MemoryStore(base.Store):
    """Metadata kept in dictionaries; lost when the process ends."""

    kind = "memory"

    def __init__(self) -> None:
        self._t = memory_tables.Tables()
        self._lock = self._t.lock
        self.checks: memory_checks.MemoryChecks = memory_checks.MemoryChecks(self._lock)
        self.partitions = memory_partitions.MemoryDynamicPartitions(self._lock)
        self._audit_ids = itertools.count(1)
        self.logs = memory_step_logs.MemoryStepLogs(self.get_materialization)
        self._runs: dict[str, records.Run] = {}
        self._audit: list[records.AuditEvent] = []

    def _append_audit(self, event: str, *, actor: str, now: datetime, **where: Any) -> int:
        audit_id = next(self._audit_ids)
        details = dict(where.pop("details", None) or {})
        where = {k: where.get(k) for k in ("run_id", "materialization_id", "asset", "partition_key")}
        self._audit.append(
            records.AuditEvent(id=audit_id, at=now, event=event, actor=actor, details=details, **where)
        )
        return audit_id

    def _audit_step(
        self, event: str, row: records.Materialization, *, actor: str, now: datetime, **details: Any
    ) -> None:
        self._append_audit(
            event,
            actor=actor,
            now=now,
            run_id=row.run_id,
            materialization_id=row.id,
            asset=row.asset,
            partition_key=row.partition_key,
            details=details,
        )

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
    ) -> records.Run:
        if jobs is not None:
            raise errors.ConfigurationError("the memory store has no job queue: run in-process")
        at = _now(now)
        with self._lock:
            if run.run_id in self._runs:
                raise errors.StoreError(
                    f"run {run.run_id} already exists",
                    retryable=False,
                    context={"constraint": "flowstone_runs_pkey"},
                )
            created = records.Run(
                run_id=run.run_id,
                kind=run.kind,
                selection=tuple(run.selection),
                config=dict(run.config),
                tags=dict(run.tags),
                requested_by=run.requested_by,
                status=run.status,
                created_at=at,
                finished_at=None,
            )
            self._runs[run.run_id] = created
            self._t.add_edges(run.run_id, edges)
            for step in steps:
                if (run.run_id, step.asset, step.partition_key) not in self._t.by_step:
                    self._t.new_row(
                        run.run_id,
                        step.asset,
                        step.partition_key,
                        status=StepStatus.PENDING,
                        now=at,
                        pending_upstream=step.pending_upstream,
                        code_version=step.code_version,
                    )
            self._append_audit(
                "run.requested",
                actor=run.requested_by,
                now=at,
                run_id=run.run_id,
                details={"kind": run.kind, "selection": list(run.selection), "steps": len(steps)},
            )
            for asset, key in ready:
                row_id = self._t.by_step.get((run.run_id, asset, key))
                if row_id is not None and self._t.rows[row_id].status == StepStatus.PENDING:
                    self._t.queue(self._t.rows[row_id], at)
            return created

    def get_run(self, run_id: str) -> records.Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(self, *, limit: int = 20) -> list[records.Run]:
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.run_id)
            runs.sort(key=lambda r: r.created_at, reverse=True)
            return runs[:limit]

    def finish_run(self, run_id: str, *, actor: str, now: datetime | None = None) -> records.Run | None:
        with self._lock:
            return self._finish(run_id, actor, _now(now))

    def _finish(self, run_id: str, actor: str, at: datetime) -> records.Run | None:
        """The run's status from its steps, as ``run_finish`` computes it."""
        run = self._runs.get(run_id)
        if run is None or run.status in RUN_TERMINAL:
            return None
        status = run_status_of(self._t.run_statuses(run_id))
        if status == run.status:
            return None
        terminal = status in RUN_TERMINAL
        changed = dataclasses.replace(run, status=status, finished_at=at if terminal else None)
        self._runs[run_id] = changed
        if terminal:
            self._append_audit("run.finished", actor=actor, now=at, run_id=run_id, details={"status": status})
        return changed

    def step_edges(self, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
        with self._lock:
            return list(self._t.edges.get(run_id, ()))

    def step_counts(self, run_id: str) -> dict[str, int]:
        with self._lock:
            return {str(k): v for k, v in sorted(self._t.counts.get(run_id, {}).items())}

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
        at = _now(now)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return base.Claim(steps=[])
            found = (
                self._t.claim_row(
                    run_id, asset, key, batch_key, code_version=code_version, reclaim=reclaim, at=at
                )
                for key in self._t.batch_members(run_id, asset, batch_key)
            )
            claimed = [row for row in found if row is not None]
            if not claimed:
                return base.Claim(steps=[])
            if run.status == RunStatus.QUEUED:
                self._runs[run_id] = dataclasses.replace(run, status=RunStatus.RUNNING)
            return base.Claim(
                steps=claimed,
                inputs=self._t.find_inputs(run_id, wanted),
                run_kind=run.kind,
                run_config=dict(run.config),
            )

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
        if output is not None:
            raise errors.ConfigurationError(
                "the memory store cannot hold outputs of a transactional IO manager (PostgresIOManager)"
            )
        at = _now(now)
        with self._lock:
            for upstream_id, _ in lineage:  # the foreign key of flowstone_lineage
                if upstream_id not in self._t.rows or upstream_id == step.id:
                    raise errors.StoreError(
                        f"record success: lineage names unknown materialization {upstream_id}",
                        retryable=False,
                        context={"constraint": "flowstone_lineage_upstream_materialization_id_fkey"},
                    )
            done = self._t.transition(
                step,
                status=StepStatus.SUCCEEDED,
                finished_at=at,
                output_ref=dict(output_ref),
                metadata=dict(metadata),
                error=None,
            )
            if done is None:
                return None
            self._t.add_lineage(done.id, lineage)
            self._audit_step("materialization.succeeded", done, actor=actor, now=at, attempt=done.attempt)
            return done

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
        if jobs is not None or finish_job is not None:
            raise errors.ConfigurationError("the memory store has no job queue: run in-process")
        if not items:
            return base.Completed(rows=[])
        at = _now(now)
        with self._lock:
            rows: list[records.Materialization | None] = []
            released: list[base.BatchItem] = []
            for item in items:
                if item.memoized_from is not None:  # memoization: skipped, pointing at the reused row
                    row = self._t.transition(
                        item.step, status=StepStatus.SKIPPED, finished_at=at, memoized_from=item.memoized_from
                    )
                    if row is not None:
                        self._audit_step(
                            "materialization.memoized",
                            row,
                            actor=actor,
                            now=at,
                            attempt=row.attempt,
                            memoized_from=item.memoized_from,
                        )
                        released.extend(self._t.release(row, at) if release else [])
                    rows.append(row)
                    continue
                row = self.succeed_step(
                    item.step,
                    output_ref=item.output_ref,
                    metadata=item.metadata,
                    lineage=item.lineage,
                    actor=actor,
                    output=item.output,
                    now=at,
                )
                rows.append(row)
                if row is not None and (blocked := self.checks.record(row, item.checks, at)) and release:
                    self.skip_steps(row.run_id, self._t.reachable(row), error=blocked, now=at)
                elif row is not None and release:
                    released.extend(self._t.release(row, at))
            changed = self._finish(items[0].step.run_id, actor, at)
            ended = changed if changed is not None and changed.status in RUN_TERMINAL else None
        if (a := claim_ahead) is None:
            return base.Completed(rows=rows, released=released, run=ended)
        run_id = items[0].step.run_id
        ahead = self.claim(run_id, a.asset, a.batch_key, wanted=a.wanted, code_version=a.code_version, now=at)
        return base.Completed(rows=rows, released=released, run=ended, ahead=ahead)

    def _fail(
        self,
        step: records.Materialization,
        error: Mapping[str, Any],
        actor: str,
        at: datetime,
        *,
        skip: Callable[[records.Materialization], Sequence[base.StepKey]],
        finish: bool,
    ) -> records.Materialization | None:
        """``failed`` + audit, then ``skip(failed)`` skipped and (``finish``) the run's status."""
        with self._lock:
            failed = self._t.transition(step, status=StepStatus.FAILED, finished_at=at, error=dict(error))
            if failed is None:
                return None
            self._audit_step(
                "materialization.failed",
                failed,
                actor=actor,
                now=at,
                attempt=failed.attempt,
                error_type=error.get("type"),
            )
            self.skip_steps(failed.run_id, skip(failed), error=base.skip_error(failed), now=at)
            if finish:
                self._finish(failed.run_id, actor, at)
            return failed

    def fail_step(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        skip: Sequence[base.StepKey],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        return self._fail(step, error, actor, _now(now), skip=lambda failed: skip, finish=False)

    def fail_terminal(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        return self._fail(step, error, actor, _now(now), skip=self._t.reachable, finish=True)

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
        at = _now(now)
        with self._lock:
            moved = self._t.transition(step, status=StepStatus.QUEUED, queued_at=at, error=dict(error))
            if moved is not None:
                self._audit_step(
                    "materialization.retrying",
                    moved,
                    actor=actor,
                    now=at,
                    attempt=moved.attempt,
                    retry_in_s=retry_in_s,
                    error_type=error.get("type"),
                )
            return moved

    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[base.StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        with self._lock:
            return self._t.skip(run_id, steps, error, _now(now))

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
        raise errors.ConfigurationError(
            f"asset {step.asset!r} asks for approval, which needs the Postgres store (approvals are "
            "rows people and timeouts decide on): create FlowStone without store='memory'",
            asset=step.asset,
            retryable=False,
        )

    def approval_decision(self, materialization_id: int) -> approval_types.ApprovalDecision | None:
        return None  # no approval can exist in this store

    def hold_run(self, run_id: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the runs end with this process

    # -- queries, audit, retention --------------------------------------------------------------

    def run_steps(self, run_id: str) -> list[records.Materialization]:
        with self._lock:
            return self._t.run_steps(run_id)

    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        with self._lock:
            return self._t.step(run_id, asset, partition_key)

    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        with self._lock:
            return self._t.rows.get(materialization_id)

    def get_materializations(self, ids: Sequence[int]) -> dict[int, records.Materialization]:
        with self._lock:
            return {i: self._t.rows[i] for i in ids if i in self._t.rows}

    def find_inputs(self, run_id: str, wanted: Sequence[base.StepKey]) -> base.Found:
        with self._lock:
            return self._t.find_inputs(run_id, wanted)

    def latest(self, asset: str, partition_key: str) -> records.Materialization | None:
        with self._lock:
            return self._t.latest(asset, partition_key)

    def latest_all(self, asset: str | None = None) -> list[records.Materialization]:
        with self._lock:
            return self._t.latest_all(asset)

    def newest_all(self, asset: str) -> list[records.Materialization]:
        with self._lock:
            return self._t.newest_all(asset)

    def history(self, asset: str, partition_key: str, *, limit: int = 20) -> list[records.Materialization]:
        with self._lock:
            return self._t.history(asset, partition_key, limit)

    def succeeded_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {k for k in partition_keys if self._t.latest(asset, k) is not None}

    def lineage_upstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self._lock:
            return self._t.walk(materialization_id, upstream=True, max_depth=max_depth)

    def lineage_downstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self._lock:
            return self._t.walk(materialization_id, upstream=False, max_depth=max_depth)

    def covered_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        with self._lock:
            return self._t.covered(asset, partition_keys)

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
        with self._lock:
            return self._append_audit(
                event,
                actor=actor,
                now=_now(now),
                run_id=run_id,
                materialization_id=materialization_id,
                asset=asset,
                partition_key=partition_key,
                details=details,
            )

    def audit_events(self, *, run_id: str | None = None, limit: int = 1000) -> list[records.AuditEvent]:
        with self._lock:
            events = [e for e in self._audit if run_id is None or e.run_id == run_id]
        return events[:limit]

    def gc_candidates(self, keep_last: int) -> list[records.GcCandidate]:
        base.check_keep_last(keep_last)
        with self._lock:
            active_runs = {r.run_id for r in self._runs.values() if r.status not in RUN_TERMINAL}
            return self._t.gc_candidates(keep_last, active_runs)

    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        at = _now(now)
        with self._lock:
            for i in ids:
                row = self._t.rows.get(i)
                if row is not None and row.output_deleted_at is None:
                    self._t.put(dataclasses.replace(row, output_deleted_at=at))
