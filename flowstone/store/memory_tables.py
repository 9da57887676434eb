"""The memory store's tables and the reads over them, as the SQL answers them.

:class:`Tables` holds the rows (the analogue of ``flowstone_materializations`` and
``flowstone_lineage``) and answers the queries; :class:`flowstone.store.memory.MemoryStore` owns
one, takes its lock for every method and implements the writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowstone import partition_keys
from flowstone.status import STEP_IN_FLIGHT, StepStatus
from flowstone.store import base, records

__all__ = ["Tables"]


def _latest_key(m: records.Materialization) -> tuple[datetime, int]:
    assert m.finished_at is not None  # noqa: S101 - succeeded rows always have finished_at (schema CHECK)
    return (m.finished_at, m.id)


@dataclass
class Tables:
    """Rows by id with the indexes the reads need; every access holds ``lock``."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    rows: dict[int, records.Materialization] = field(default_factory=dict)
    by_step: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (run, asset, key) -> id
    by_asset_key: dict[base.StepKey, list[int]] = field(default_factory=dict)
    lineage: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # reader -> [(upstream, input)]
    readers: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # upstream -> [(reader, input)]
    by_run: dict[str, list[int]] = field(default_factory=dict)  # run -> ids, in id order
    counts: dict[str, dict[StepStatus, int]] = field(default_factory=dict)  # run -> status -> steps
    memoized: dict[str, int] = field(default_factory=dict)  # run -> memoized skips
    batch: dict[int, str] = field(default_factory=dict)  # id -> batch key
    batches: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)  # (run, asset, batch) -> keys
    edges: dict[str, list[tuple[base.StepKey, base.StepKey]]] = field(default_factory=dict)  # run -> edges
    children: dict[str, dict[base.StepKey, list[base.StepKey]]] = field(
        default_factory=dict
    )  # run -> up -> downs

    def add_edges(self, run_id: str, edges: Sequence[tuple[base.StepKey, base.StepKey]]) -> None:
        """The step edges of a run (``flowstone_step_edges``)."""
        self.edges[run_id] = list(edges)
        children = self.children.setdefault(run_id, {})
        for up, down in edges:
            children.setdefault(up, []).append(down)

    def _set_batch(self, row: records.Materialization, batch_key: str) -> None:
        old = self.batch.get(row.id)
        if old is not None:
            self.batches[(row.run_id, row.asset, old)].discard(row.partition_key)
        self.batch[row.id] = batch_key
        self.batches.setdefault((row.run_id, row.asset, batch_key), set()).add(row.partition_key)

    def new_row(
        self, run_id: str, asset: str, key: str, *, status: StepStatus, now: datetime, **extra: Any
    ) -> records.Materialization:
        """Insert a step row (in its own batch unless ``batch_key`` is given). Keys longer than
        Postgres' index entries allow are refused here too, so both stores agree."""
        partition_keys.check_length(key)
        row = records.Materialization(
            id=next(self.ids),
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
        self.by_step[(run_id, asset, key)] = row.id
        self.by_asset_key.setdefault((asset, key), []).append(row.id)
        self.by_run.setdefault(run_id, []).append(row.id)
        self._set_batch(row, extra.get("batch_key", key))
        return self.put(row)

    def queue(self, row: records.Materialization, at: datetime) -> records.Materialization:
        """A pending step becomes queued, in its own batch."""
        self._set_batch(row, row.partition_key)
        return self.put(dataclasses.replace(row, status=StepStatus.QUEUED, queued_at=at))

    def transition(self, step: records.Materialization, **changes: Any) -> records.Materialization | None:
        """Change the row of a running attempt; ``None`` when the attempt no longer holds it."""
        current = self.rows.get(step.id)
        if current is None or current.status != StepStatus.RUNNING or current.attempt != step.attempt:
            return None
        started = changes.get("started_at", current.started_at)
        finished = changes.get("finished_at", current.finished_at)
        duration = (finished - started).total_seconds() * 1000 if started and finished else None
        return self.put(dataclasses.replace(current, duration_ms=duration, **changes))

    def batch_members(self, run_id: str, asset: str, batch_key: str) -> list[str]:
        """The keys of (run, asset) in a batch, and the batch key itself."""
        return sorted(self.batches.get((run_id, asset, batch_key), set()) | {batch_key})

    def claim_row(
        self,
        run_id: str,
        asset: str,
        key: str,
        batch_key: str,
        *,
        code_version: str | None,
        reclaim: bool,
        at: datetime,
    ) -> records.Materialization | None:
        """Claim one step (created running when absent), as ``materialization_claim`` does."""
        row = self.step(run_id, asset, key)
        if row is None:
            return self.new_row(
                run_id,
                asset,
                key,
                status=StepStatus.RUNNING,
                now=at,
                attempt=1,
                started_at=at,
                code_version=code_version,
                batch_key=batch_key,
            )
        if (
            row.status == StepStatus.QUEUED
            # a pending step only once nothing upstream is unfinished
            or (row.status == StepStatus.PENDING and row.pending_upstream == 0)
            or (row.status == StepStatus.RUNNING and reclaim)
        ):
            claimed = dataclasses.replace(
                row,
                status=StepStatus.RUNNING,
                attempt=row.attempt + 1,
                started_at=at,
                finished_at=None,
                duration_ms=None,
                code_version=code_version,
            )
            return self.put(claimed)
        return None

    def release(self, done: records.Materialization, at: datetime) -> list[base.BatchItem]:
        """Fan-in (I14): decrement the steps that read ``done``; those at zero become queued."""
        released = []
        for down in self.children.get(done.run_id, {}).get((done.asset, done.partition_key), ()):
            row = self.step(done.run_id, *down)
            if row is None or row.status != StepStatus.PENDING:
                continue
            if row.pending_upstream > 1:
                self.put(dataclasses.replace(row, pending_upstream=row.pending_upstream - 1))
                continue
            self._set_batch(row, row.partition_key)
            self.put(dataclasses.replace(row, pending_upstream=0, status=StepStatus.QUEUED, queued_at=at))
            released.append((row.asset, row.partition_key))
        return released

    def reachable(self, start: records.Materialization) -> list[base.StepKey]:
        """Every step reachable from ``start`` through its run's step edges."""
        children = self.children.get(start.run_id, {})
        seen: set[base.StepKey] = set()
        frontier = [(start.asset, start.partition_key)]
        while frontier:
            for down in children.get(frontier.pop(), ()):
                if down not in seen:
                    seen.add(down)
                    frontier.append(down)
        return sorted(seen)

    def put(self, row: records.Materialization) -> records.Materialization:
        """Store a new version of a row (and keep its run's count of steps by status)."""
        old = self.rows.get(row.id)
        if old is None or old.status != row.status:
            counts = self.counts.setdefault(row.run_id, {})
            if old is not None:
                counts[old.status] -= 1
                if not counts[old.status]:
                    del counts[old.status]
            counts[row.status] = counts.get(row.status, 0) + 1
        if row.memoized_from is not None and (old is None or old.memoized_from is None):
            self.memoized[row.run_id] = self.memoized.get(row.run_id, 0) + 1
        self.rows[row.id] = row
        return row

    def skip(
        self, run_id: str, steps: Sequence[base.StepKey], error: Mapping[str, Any], at: datetime
    ) -> list[records.Materialization]:
        """The not-yet-started ones of ``steps`` → ``skipped`` with ``error``; the rows that changed."""
        skipped = []
        for asset, key in steps:
            row = self.step(run_id, asset, key)
            if row is not None and row.status in (StepStatus.PENDING, StepStatus.QUEUED):
                changed = dataclasses.replace(
                    row, status=StepStatus.SKIPPED, finished_at=at, error=dict(error)
                )
                skipped.append(self.put(changed))
        return skipped

    def covered(self, asset: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` of ``asset`` have a row succeeded or in flight."""
        return {
            k
            for k in keys
            if any(self.rows[i].status in STEP_IN_FLIGHT for i in self.by_asset_key.get((asset, k), ()))
        }

    def run_statuses(self, run_id: str) -> set[StepStatus]:
        """The statuses of a run's steps for its own status: skips that memoization recorded count
        as successes (as ``run_finish`` counts them)."""
        counts = self.counts.get(run_id, {})
        statuses = set(counts)
        if StepStatus.SKIPPED in statuses and counts[StepStatus.SKIPPED] == self.memoized.get(run_id, 0):
            statuses = (statuses - {StepStatus.SKIPPED}) | {StepStatus.SUCCEEDED}
        return statuses

    def step(self, run_id: str, asset: str, key: str) -> records.Materialization | None:
        """The step row of (run, asset, key)."""
        row_id = self.by_step.get((run_id, asset, key))
        return self.rows[row_id] if row_id is not None else None

    def add_lineage(self, reader: int, lineage: Sequence[tuple[int, str]]) -> None:
        """The edges from ``reader`` to the rows it read."""
        edges = self.lineage.setdefault(reader, [])
        for upstream_id, input_name in lineage:
            edges.append((upstream_id, input_name))
            self.readers.setdefault(upstream_id, []).append((reader, input_name))

    def run_steps(self, run_id: str) -> list[records.Materialization]:
        """Every step of a run, in id order."""
        return [self.rows[i] for i in self.by_run.get(run_id, ())]

    def latest(self, asset: str, key: str) -> records.Materialization | None:
        """The latest succeeded row: ``finished_at DESC, id DESC`` (I8)."""
        succeeded = [
            self.rows[i]
            for i in self.by_asset_key.get((asset, key), ())
            if self.rows[i].status == StepStatus.SUCCEEDED
        ]
        return max(succeeded, key=_latest_key) if succeeded else None

    def latest_all(self, asset: str | None) -> list[records.Materialization]:
        """The latest succeeded row of every (asset, key), ordered by asset, key."""
        found = [self.latest(a, k) for (a, k) in sorted(self.by_asset_key) if asset is None or a == asset]
        return [m for m in found if m is not None]

    def newest_all(self, asset: str) -> list[records.Materialization]:
        """The newest row (any status) of every partition of ``asset``."""
        return [
            self.rows[max(ids)] for (a, _), ids in sorted(self.by_asset_key.items()) if a == asset and ids
        ]

    def history(self, asset: str, key: str, limit: int) -> list[records.Materialization]:
        """Rows of (asset, key), newest id first."""
        ids = sorted(self.by_asset_key.get((asset, key), ()), reverse=True)
        return [self.rows[i] for i in ids[:limit]]

    def find_inputs(self, run_id: str, wanted: Sequence[base.StepKey]) -> base.Found:
        """This run's row of each wanted (asset, key) (a memoized skip: the row it reused), else the
        latest succeeded one."""
        found: base.Found = {}
        for asset, key in wanted:
            in_run = self.step(run_id, asset, key)
            if in_run is not None:
                found[(asset, key)] = (self.rows.get(in_run.memoized_from or in_run.id, in_run), True)
                continue
            latest = self.latest(asset, key)
            if latest is not None:
                found[(asset, key)] = (latest, False)
        return found

    def walk(self, start: int, *, upstream: bool, max_depth: int) -> list[records.LineageRow]:
        """Breadth-first: each row once, at its nearest depth, reached from the smallest id on the
        level below (the same answer as the SQL walk)."""
        edges: Mapping[int, list[tuple[int, str]]] = self.lineage if upstream else self.readers
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
            row = self.rows[node]
            also = sorted(p for p in depth_of if p != via_id and any(o == node for o, _ in edges.get(p, ())))
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
                    also_via=tuple(also),
                )
            )
        found.sort(key=lambda r: (r.depth, r.asset, r.partition_key, r.id))
        return found

    def gc_candidates(self, keep_last: int, active_runs: set[str]) -> list[records.GcCandidate]:
        """Succeeded rows beyond the latest ``keep_last`` per (asset, key), ranked among all
        succeeded rows (deleted ones included) as the SQL does, outside ``active_runs``, and not the
        latest when a step still running started (it may be reading them)."""
        starts = [r.started_at for r in self.rows.values() if r.status == StepStatus.RUNNING and r.started_at]
        found: list[records.GcCandidate] = []
        for latest in self.latest_all(None):
            succeeded = [
                m
                for m in self.history(latest.asset, latest.partition_key, limit=len(self.rows))
                if m.status == StepStatus.SUCCEEDED and m.output_ref is not None
            ]
            succeeded.sort(key=_latest_key, reverse=True)
            for rank in range(len(succeeded) - 1, keep_last - 1, -1):
                m = succeeded[rank]
                until = succeeded[rank - 1].finished_at
                assert m.finished_at is not None and until is not None  # noqa: PT018,S101 - succeeded rows
                if m.run_id in active_runs or m.output_deleted_at is not None:
                    continue
                if any(m.finished_at <= start < until for start in starts):
                    continue
                found.append(records.GcCandidate(m.id, m.asset, m.partition_key, dict(m.output_ref or {})))
        return found
