"""Memoization (``@fs.asset(memoize=True)``): a step whose code version and inputs are those of its
asset's latest materialization of the partition does not call the function again.

The step ends ``skipped`` with ``memoized_from`` (the reused id) and stores nothing: the steps
downstream are released as after a success and read the reused row (their lineage points at it),
and the run succeeds (a memoized skip is a success; ADR 0015). The reused row stays the latest
materialization, so readers of the asset stay fresh. "Same inputs" means the same data versions of
the same upstream (asset, partition)s as the reused materialization read (``flowstone_lineage``).
A materialization whose blocking check failed (severity error) is never reused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flowstone import context as context_mod
from flowstone import data_api, definitions, errors, services
from flowstone.io import base as io_base
from flowstone.store import records

__all__ = ["load", "reusable"]

logger = logging.getLogger("flowstone.execution")


def reusable(
    svc: services.Services,
    asset: definitions.AssetDef,
    partition_key: str,
    lineage: Sequence[tuple[int, str]],
) -> records.Materialization | None:
    """The latest materialization of (asset, partition) that this step may reuse instead of calling
    the function, or ``None`` (the asset does not memoize, or something changed)."""
    if not asset.memoize:
        return None
    store = svc.store
    latest = store.latest(asset.name, partition_key)
    if (
        latest is None
        or latest.output_ref is None
        or latest.code_version != asset.code_version
        or latest.output_deleted_at is not None
    ):
        return None
    before = {(u.asset, u.partition_key): u.id for u in store.lineage_upstream(latest.id, max_depth=1)}
    rows = store.get_materializations(sorted({*before.values(), *(i for i, _ in lineage)}))
    now = {(r.asset, r.partition_key): data_api.data_version(r) for i, _ in lineage if (r := rows.get(i))}
    then = {key: data_api.data_version(r) for key, i in before.items() if (r := rows.get(i))}
    if now != then or len(now) != len({i for i, _ in lineage}):
        return None
    if any(c.blocking for c in svc.defs.checks_of(asset.name)) and _blocked(svc, latest):
        return None
    logger.info("step %s [%s] reuses materialization #%d", asset.name, partition_key, latest.id)
    return latest


def _blocked(svc: services.Services, row: records.Materialization) -> bool:
    """Whether ``row`` failed a blocking check of severity error (its downstream was skipped)."""
    results = svc.store.checks.results(row.asset, run_id=row.run_id, limit=1000)
    return any(
        r.materialization_id == row.id and r.blocking and r.severity == "error" and not r.passed
        for r in results
    )


def load(
    svc: services.Services,
    asset: definitions.AssetDef,
    reused: records.Materialization,
    ctx: context_mod.AssetContext,
) -> object:
    """The value of the reused materialization (in-process runs return it in their result)."""
    try:
        manager = svc.io_managers[asset.io_manager]
    except KeyError:
        raise errors.IOManagerError(
            f"IO manager {asset.io_manager!r} is not configured", asset=asset.name
        ) from None
    ref = io_base.OutputRef.model_validate(reused.output_ref)
    return manager.load(
        io_base.InputContext(asset.name, ctx.partition, ctx.partition_key, ref, asset.return_type)
    )
