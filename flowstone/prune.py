"""Retention of runs, steps and queue jobs: ``fs.Retention`` and ``flowstone db prune``.

A policy says how long finished runs stay (``runs_days``, overridable per asset), how many
succeeded versions of each partition keep their stored output (``keep_last_per_partition``, the
``gc`` rule) and how long ended Procrastinate jobs stay (``jobs_days``). :func:`prune` first runs
``gc`` with ``keep_last_per_partition``, then deletes in batches, each its own short transaction
that skips locked rows, with a pause between batches: the steps of old finished runs (never the
versions gc kept, never a step a kept step's lineage points at), the runs left without steps,
and the old ended jobs with their events. The counts per table are audited
(``retention.pruned``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flowstone import retention, services
from flowstone.retention_policy import Retention

__all__ = ["PruneReport", "Retention", "prune"]

logger = logging.getLogger("flowstone.retention")


@dataclass
class PruneReport:
    """What a prune deleted (or with ``dry_run`` would delete, in one pass), per table."""

    deleted: dict[str, int]
    dry_run: bool
    outputs: int = 0
    """Output versions deleted by the gc pass."""


def prune(
    svc: services.Services,
    policy: Retention,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch: int = 1000,
    pause_s: float = 0.05,
) -> PruneReport:
    """Apply ``policy`` (see the module docstring); ``now`` moves the clock (tests)."""
    store = svc.postgres("pruning")
    moment = now or datetime.now(UTC)
    before = moment - timedelta(days=policy.runs_days)
    cutoffs = {asset: moment - timedelta(days=days) for asset, days in policy.assets.items()}
    for asset in cutoffs:
        svc.defs.get(asset)  # an unknown name: a clear error
    jobs_before = moment - timedelta(days=policy.jobs_days) if policy.jobs_days is not None else None
    if dry_run:
        counts = store.pruning.counts(min([before, *cutoffs.values()]), cutoffs, jobs_before)
        return PruneReport(deleted=counts, dry_run=True)
    report = retention.gc(svc, policy.keep_last_per_partition)
    deleted = {"flowstone_materializations": 0, "flowstone_runs": 0, "procrastinate_jobs": 0}
    if policy.logs_days is not None:  # step logs older than their window, before their steps go
        deleted["flowstone_step_logs"] = 0
        logs_before = moment - timedelta(days=policy.logs_days)
        while (n := store.pruning.step_logs(logs_before, batch)) > 0:
            deleted["flowstone_step_logs"] += n
            time.sleep(pause_s)
    while True:  # steps: a batch at a time, readers first (a row read by a kept one stays)
        gone = store.pruning.steps(before, cutoffs, batch)
        deleted["flowstone_materializations"] += len(gone)
        if not gone:
            break
        time.sleep(pause_s)
    oldest = max([before, *cutoffs.values()])
    while (n := store.pruning.runs(oldest, batch)) > 0:
        deleted["flowstone_runs"] += n
        time.sleep(pause_s)
    while jobs_before is not None and (n := store.pruning.jobs(jobs_before, batch)) > 0:
        deleted["procrastinate_jobs"] += n
        time.sleep(pause_s)
    store.pruning.fold_status_counts()  # also where no worker runs the maintenance round
    outputs = sum(report.deleted.values())
    if any(deleted.values()) or outputs:
        store.audit(
            "retention.pruned",
            actor=svc.actor,
            details={**deleted, "outputs": outputs, "policy_runs_days": policy.runs_days},
        )
        logger.info("pruned %s and %d output version(s)", deleted, outputs)
    return PruneReport(deleted=deleted, dry_run=False, outputs=outputs)
