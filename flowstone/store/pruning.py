"""Retention's deletes (``sql/queries/pruning.sql``), Postgres only: old steps, runs and
Procrastinate jobs, in batches, each batch its own short transaction taking only unlocked rows
(SKIP LOCKED), so that claims and successes never wait behind pruning. Composed into the Postgres
store as ``store.pruning``; :mod:`flowstone.prune` runs the passes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from psycopg.types.json import Jsonb

from flowstone.store import pg
from flowstone.store.pg import Q

__all__ = ["PostgresPruning"]


class PostgresPruning:
    """Batches of deletes on a Database; each method is one short transaction."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def steps(self, before: datetime, cutoffs: Mapping[str, datetime], batch: int) -> list[str]:
        """Delete one batch of prunable steps; their assets (one per deleted row)."""
        params = {
            "before": before,
            "cutoffs": Jsonb({k: v.isoformat() for k, v in cutoffs.items()}),
            "batch": batch,
        }
        with self.db.transaction("prune steps") as conn:
            return [r["asset"] for r in conn.execute(Q("pruning_steps"), params).fetchall()]

    def runs(self, before: datetime, batch: int) -> int:
        """Delete one batch of ended runs with no step left; how many."""
        with self.db.transaction("prune runs") as conn:
            return len(conn.execute(Q("pruning_runs"), {"before": before, "batch": batch}).fetchall())

    def jobs(self, before: datetime, batch: int) -> int:
        """Delete one batch of ended Procrastinate jobs (with their events); how many."""
        with self.db.transaction("prune jobs") as conn:
            return len(conn.execute(Q("pruning_jobs"), {"before": before, "batch": batch}).fetchall())

    def step_logs(self, before: datetime, batch: int) -> int:
        """Delete one batch of step log lines written before ``before``; how many."""
        with self.db.transaction("prune step logs") as conn:
            return len(conn.execute(Q("pruning_step_logs"), {"before": before, "batch": batch}).fetchall())

    def counts(
        self, before_runs: datetime, cutoffs: Mapping[str, datetime], before_jobs: datetime | None
    ) -> dict[str, int]:
        """What one pass would delete (a dry run): steps, runs, jobs."""
        params = {"before": before_runs, "cutoffs": Jsonb({k: v.isoformat() for k, v in cutoffs.items()})}
        with self.db.session("count what pruning would delete") as conn:
            steps = conn.execute(Q("pruning_steps_count"), params).fetchone()
            runs = conn.execute(Q("pruning_runs_count"), params).fetchone()
            jobs = (
                conn.execute(Q("pruning_jobs_count"), {"before": before_jobs}).fetchone()
                if before_jobs is not None
                else None
            )
        return {
            "flowstone_materializations": int(steps["n"]) if steps else 0,
            "flowstone_runs": int(runs["n"]) if runs else 0,
            "procrastinate_jobs": int(jobs["n"]) if jobs else 0,
        }

    def audit_partitions(self, now: datetime | None = None) -> None:
        """Create the audit log's monthly partitions of this month and the next three."""
        with self.db.transaction("create audit log partitions") as conn:
            conn.execute(Q("pruning_audit_partitions"), {"now": now})

    def fold_status_counts(self) -> int:
        """Fold the per-session status counters of sessions that are gone (a maintenance round's
        upkeep, cheap when there are none); how many counter rows were folded."""
        with self.db.transaction("fold status counters") as conn:
            row = conn.execute(Q("pruning_fold_status_counts")).fetchone()
        return int(row["folded"]) if row else 0

    def audit_drop_before(self, cutoff: datetime, *, actor: str, dry_run: bool) -> dict[str, int]:
        """Drop whole months of the audit log ending on or before ``cutoff`` (recorded as
        ``audit.dropped``), or with ``dry_run`` count them; {"YYYY_MM": rows}."""
        params = {"cutoff": cutoff, "actor": actor, "dry_run": dry_run}
        with self.db.transaction("drop old audit log months") as conn:
            row = conn.execute(Q("pruning_audit_drop_before"), params).fetchone()
        return {k: int(v) for k, v in (row["dropped"] if row else {}).items()}
