"""The memory store: the Postgres store's semantics in a process (tests, notebooks, quick runs).

Append-only ids, the same guarded transitions, the same "latest" ordering (``finished_at DESC,
id DESC``). One lock makes every method atomic, the analogue of the Postgres transactions. The
contract suite (``tests/integration/test_store_contract.py``) runs against both stores.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flowstone import errors
from flowstone.store import base, records

if TYPE_CHECKING:
    from flowstone.io.base import PreparedOutput

__all__ = ["MemoryStore"]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _duration_ms(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds() * 1000


def _latest_key(m: records.Materialization) -> tuple[datetime, int]:
    assert m.finished_at is not None  # noqa: S101 - succeeded rows always have finished_at (schema CHECK)
    return (m.finished_at, m.id)


class MemoryStore(base.Store):
    """Metadata kept in dictionaries; lost when the process ends."""

    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._audit_ids = itertools.count(1)
        self._runs: dict[str, records.Run] = {}
        self._rows: dict[int, records.Materialization] = {}
        self._by_step: dict[tuple[str, str, str], int] = {}  # (run, asset, key) -> id
        self._by_asset_key: dict[base.StepKey, list[int]] = {}
        self._lineage: dict[int, list[tuple[int, str]]] = {}  # reader -> [(upstream, input)]
        self._readers: dict[int, list[tuple[int, str]]] = {}  # upstream -> [(reader, input)]
        self._audit: list[records.AuditEvent] = []
        self._edges: dict[str, list[tuple[base.StepKey, base.StepKey]]] = {}

    # -- helpers ------------------------------------------------------------------------------

    def _put(self, row: records.Materialization) -> records.Materialization:
        self._rows[row.id] = row
        return row

    def _new_row(
        self, run_id: str, asset: str, key: str, *, status: str, now: datetime, **extra: Any
    ) -> records.Materialization:
        row = records.Materialization(
            id=next(self._ids),
            run_id=run_id,
            asset=asset,
            partition_key=key,
            status=status,
            attempt=extra.get("attempt", 0),
            pending_upstream=extra.get("pending_upstream", 0),
            created_at=now,
            queued_at=None,
            started_at=extra.get("started_at"),
            finished_at=None,
            duration_ms=None,
            error=None,
            metadata={},
            output_ref=None,
            code_version=extra.get("code_version"),
            job_id=None,
        )
        self._by_step[(run_id, asset, key)] = row.id
        self._by_asset_key.setdefault((asset, key), []).append(row.id)
        return self._put(row)

    def _append_audit(
        self,
        event: str,
        *,
        actor: str,
        now: datetime,
        run_id: str | None = None,
        materialization_id: int | None = None,
        asset: str | None = None,
        partition_key: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        audit_id = next(self._audit_ids)
        self._audit.append(
            records.AuditEvent(
                id=audit_id,
                at=now,
                event=event,
                actor=actor,
                run_id=run_id,
                materialization_id=materialization_id,
                asset=asset,
                partition_key=partition_key,
                details=dict(details or {}),
            )
        )
        return audit_id

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[base.StepKey, base.StepKey]] = (),
        now: datetime | None = None,
    ) -> records.Run:
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
            self._edges[run.run_id] = list(edges)
            for step in steps:
                if (run.run_id, step.asset, step.partition_key) not in self._by_step:
                    self._new_row(
                        run.run_id,
                        step.asset,
                        step.partition_key,
                        status="pending",
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
        at = _now(now)
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status in records.RUN_TERMINAL:
                return None
            statuses = [r.status for r in self._rows.values() if r.run_id == run_id]
            if any(s in ("queued", "running") for s in statuses):
                status = "running"
            elif "waiting_approval" in statuses:
                status = "waiting_approval"  # pending steps can only be waiting behind the gate
            elif "pending" in statuses:
                status = "running"
            elif "cancelled" in statuses:
                status = "cancelled"
            elif any(s in {"failed", "rejected", "skipped"} for s in statuses):
                status = "failed"
            else:
                status = "succeeded"
            if status == run.status:
                return None
            terminal = status in records.RUN_TERMINAL
            changed = dataclasses.replace(run, status=status, finished_at=at if terminal else None)
            self._runs[run_id] = changed
            if terminal:
                self._append_audit(
                    "run.finished", actor=actor, now=at, run_id=run_id, details={"status": status}
                )
            return changed

    # -- steps --------------------------------------------------------------------------------

    def start_step(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        code_version: str | None = None,
        reclaim: bool = False,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        at = _now(now)
        with self._lock:
            row_id = self._by_step.get((run_id, asset, partition_key))
            if row_id is None:
                return self._new_row(
                    run_id,
                    asset,
                    partition_key,
                    status="running",
                    now=at,
                    attempt=1,
                    started_at=at,
                    code_version=code_version,
                )
            row = self._rows[row_id]
            if row.status in ("pending", "queued") or (row.status == "running" and reclaim):
                return self._put(
                    dataclasses.replace(
                        row,
                        status="running",
                        attempt=row.attempt + 1,
                        started_at=at,
                        finished_at=None,
                        duration_ms=None,
                        code_version=code_version,
                    )
                )
            return None

    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        with self._lock:
            row_id = self._by_step.get((run_id, asset, partition_key))
            return self._rows[row_id] if row_id is not None else None

    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        with self._lock:
            return self._rows.get(materialization_id)

    def find_inputs(
        self, run_id: str, wanted: Sequence[base.StepKey]
    ) -> dict[base.StepKey, tuple[records.Materialization, bool]]:
        found: dict[base.StepKey, tuple[records.Materialization, bool]] = {}
        with self._lock:
            for asset, key in wanted:
                row_id = self._by_step.get((run_id, asset, key))
                if row_id is not None:
                    found[(asset, key)] = (self._rows[row_id], True)
                    continue
                latest = self._latest(asset, key)
                if latest is not None:
                    found[(asset, key)] = (latest, False)
        return found

    def _transition(self, step: records.Materialization, **changes: Any) -> records.Materialization | None:
        current = self._rows.get(step.id)
        if current is None or current.status != "running" or current.attempt != step.attempt:
            return None
        updated = dataclasses.replace(current, **changes)
        updated = dataclasses.replace(
            updated, duration_ms=_duration_ms(updated.started_at, updated.finished_at)
        )
        return self._put(updated)

    def succeed_step(
        self,
        step: records.Materialization,
        *,
        output_ref: Mapping[str, Any],
        metadata: Mapping[str, Any],
        lineage: Sequence[tuple[int, str]],
        actor: str,
        output: PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        if output is not None:
            raise errors.ConfigurationError(
                "the memory store cannot hold outputs of a transactional IO manager (PostgresIOManager)"
            )
        at = _now(now)
        with self._lock:
            for upstream_id, _ in lineage:  # the foreign key of flowstone_lineage
                if upstream_id not in self._rows or upstream_id == step.id:
                    raise errors.StoreError(
                        f"record success: lineage names unknown materialization {upstream_id}",
                        retryable=False,
                        context={"constraint": "flowstone_lineage_upstream_materialization_id_fkey"},
                    )
            done = self._transition(
                step,
                status="succeeded",
                finished_at=at,
                output_ref=dict(output_ref),
                metadata=dict(metadata),
                error=None,
            )
            if done is None:
                return None
            edges = self._lineage.setdefault(done.id, [])
            for upstream_id, input_name in lineage:
                edges.append((upstream_id, input_name))
                self._readers.setdefault(upstream_id, []).append((done.id, input_name))
            self._append_audit(
                "materialization.succeeded",
                actor=actor,
                now=at,
                run_id=done.run_id,
                materialization_id=done.id,
                asset=done.asset,
                partition_key=done.partition_key,
                details={"attempt": done.attempt},
            )
            return done

    def fail_step(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        skip: Sequence[base.StepKey],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        at = _now(now)
        with self._lock:
            failed = self._transition(step, status="failed", finished_at=at, error=dict(error))
            if failed is None:
                return None
            self._append_audit(
                "materialization.failed",
                actor=actor,
                now=at,
                run_id=failed.run_id,
                materialization_id=failed.id,
                asset=failed.asset,
                partition_key=failed.partition_key,
                details={"attempt": failed.attempt, "error_type": error.get("type")},
            )
            if skip:
                self.skip_steps(failed.run_id, skip, error=base.skip_error(failed), now=at)
            return failed

    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[base.StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        at = _now(now)
        skipped = []
        with self._lock:
            for asset, key in steps:
                row_id = self._by_step.get((run_id, asset, key))
                if row_id is None:
                    continue
                row = self._rows[row_id]
                if row.status in ("pending", "queued"):
                    skipped.append(
                        self._put(
                            dataclasses.replace(row, status="skipped", finished_at=at, error=dict(error))
                        )
                    )
        return skipped

    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        at = _now(now)
        with self._lock:
            for i in ids:
                row = self._rows.get(i)
                if row is not None and row.output_deleted_at is None:
                    self._put(dataclasses.replace(row, output_deleted_at=at))

    def step_edges(self, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
        with self._lock:
            return list(self._edges.get(run_id, ()))

    def run_steps(self, run_id: str) -> list[records.Materialization]:
        with self._lock:
            return sorted((r for r in self._rows.values() if r.run_id == run_id), key=lambda r: r.id)

    # -- queries ------------------------------------------------------------------------------

    def _latest(self, asset: str, key: str) -> records.Materialization | None:
        succeeded = [
            self._rows[i]
            for i in self._by_asset_key.get((asset, key), ())
            if self._rows[i].status == "succeeded"
        ]
        return max(succeeded, key=_latest_key) if succeeded else None

    def latest(self, asset: str, partition_key: str) -> records.Materialization | None:
        with self._lock:
            return self._latest(asset, partition_key)

    def latest_all(self, asset: str | None = None) -> list[records.Materialization]:
        with self._lock:
            found = [
                self._latest(a, k) for (a, k) in sorted(self._by_asset_key) if asset is None or a == asset
            ]
        return [m for m in found if m is not None]

    def newest_all(self, asset: str) -> list[records.Materialization]:
        with self._lock:
            return [
                self._rows[max(ids)]
                for (a, _), ids in sorted(self._by_asset_key.items())
                if a == asset and ids
            ]

    def history(self, asset: str, partition_key: str, *, limit: int = 20) -> list[records.Materialization]:
        with self._lock:
            ids = sorted(self._by_asset_key.get((asset, partition_key), ()), reverse=True)
            return [self._rows[i] for i in ids[:limit]]

    def succeeded_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {k for k in partition_keys if self._latest(asset, k) is not None}

    def _walk(
        self, start: int, edges: Mapping[int, list[tuple[int, str]]], max_depth: int
    ) -> list[records.LineageRow]:
        """Breadth-first: each row once, at its nearest depth, reached from the smallest id on the
        level below (the same answer as the SQL walk)."""
        depth_of: dict[int, int] = {start: 0}
        via_of: dict[int, tuple[int, str]] = {}
        frontier = [start]
        depth = 0
        while frontier and depth < max_depth:
            depth += 1
            reached: dict[int, tuple[int, str]] = {}
            for node in frontier:
                for other, name in edges.get(node, ()):
                    if other not in depth_of:
                        best = reached.get(other)
                        reached[other] = min(best, (node, name)) if best else (node, name)
            for other, parent in reached.items():
                depth_of[other] = depth
                via_of[other] = parent
            frontier = sorted(reached)
        found: list[records.LineageRow] = []
        for node, node_depth in depth_of.items():
            if node == start:
                continue
            via_id, input_name = via_of[node]
            row = self._rows[node]
            found.append(
                records.LineageRow(
                    depth=node_depth,
                    via_id=via_id,
                    input_name=input_name,
                    id=row.id,
                    run_id=row.run_id,
                    asset=row.asset,
                    partition_key=row.partition_key,
                    status=row.status,
                    finished_at=row.finished_at,
                )
            )
        found.sort(key=lambda r: (r.depth, r.asset, r.partition_key, r.id))
        return found

    def covered_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        covered = {"succeeded", "pending", "queued", "running", "waiting_approval"}
        with self._lock:
            return {
                k
                for k in partition_keys
                if any(self._rows[i].status in covered for i in self._by_asset_key.get((asset, k), ()))
            }

    def lineage_upstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self._lock:
            return self._walk(materialization_id, self._lineage, max_depth)

    def lineage_downstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self._lock:
            return self._walk(materialization_id, self._readers, max_depth)

    # -- audit --------------------------------------------------------------------------------

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
