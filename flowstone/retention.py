"""Retention of old output versions: ``runtime.gc(keep_last)`` and ``flowstone gc``.

Deletes the output versions no longer referenced by the latest ``keep_last`` succeeded
materializations of each asset and partition (Postgres and filesystem IO managers). The version
``latest()`` returns is never touched; runs still in flight are left alone.
"""

from __future__ import annotations

from flowstone import services
from flowstone.io import base as io_base
from flowstone.io.postgres import PostgresIOManager
from flowstone.results import GcReport
from flowstone.status import StepStatus

__all__ = ["gc"]


def gc(svc: services.Services, keep_last: int = 1, *, dry_run: bool = False) -> GcReport:
    """Delete (or with ``dry_run`` count) the output versions retention no longer needs."""
    store = svc.store
    candidates = store.gc_candidates(keep_last)
    deleted: dict[str, int] = {}
    skipped: list[str] = []
    postgres_ids: list[int] = []
    collected: list[int] = []
    for candidate in candidates:
        key = str(candidate.output_ref.get("manager", ""))
        manager = svc.io_managers.get(key)  # a dict lookup of a stored name (I3)
        if manager is None:
            skipped.append(f"#{candidate.materialization_id}: IO manager {key!r} is not configured")
            continue
        if dry_run:
            deleted[key] = deleted.get(key, 0) + 1
        elif isinstance(manager, PostgresIOManager) and manager.mode == "rows":
            # A rows table holds only the latest output of a partition: older versions were
            # replaced when the newer one committed. Record them as collected.
            collected.append(candidate.materialization_id)
            deleted[key] = deleted.get(key, 0) + 1
        elif isinstance(manager, PostgresIOManager):
            postgres_ids.append(candidate.materialization_id)
        else:
            manager.delete(io_base.OutputRef.model_validate(candidate.output_ref))
            collected.append(candidate.materialization_id)
            deleted[key] = deleted.get(key, 0) + 1
    if postgres_ids:
        removed = set(svc.postgres("deleting Postgres outputs").outputs.delete_stored(postgres_ids))
        collected.extend(sorted(removed))
        for candidate in candidates:
            if candidate.materialization_id in removed:
                key = str(candidate.output_ref["manager"])
                deleted[key] = deleted.get(key, 0) + 1
    store.mark_outputs_deleted(collected)  # one statement for the whole pass
    return GcReport(
        planned=len(candidates),
        deleted=deleted,
        skipped=skipped,
        orphans=collect_orphans(svc, dry_run=dry_run),
    )


def collect_orphans(svc: services.Services, *, dry_run: bool = False) -> dict[str, int]:
    """Delete the versions that no committed row references: written by an attempt that never
    recorded its success (a crash, a lost connection, a reclaimed step). Only versions of ended
    materializations of this database are touched: an active step may still commit its version,
    and a version whose row this database does not know may belong to someone else."""
    found: dict[str, int] = {}
    for key, manager in svc.io_managers.items():
        for asset in svc.defs:
            versions = list(manager.stored_versions(asset, key))
            if not versions:
                continue
            rows = svc.store.get_materializations(sorted({mid for mid, _ in versions}))
            for mid, ref in versions:
                row = rows.get(mid)
                if row is None or not row.terminal or row.asset != asset:
                    continue
                committed = row.output_ref if row.status == StepStatus.SUCCEEDED else None
                if (
                    committed
                    and row.output_deleted_at is None
                    and str(committed.get("version")) == ref.version
                ):
                    continue
                if not dry_run:
                    manager.delete(ref)
                found[key] = found.get(key, 0) + 1
    return found
