"""Memoization (``@fs.asset(memoize=True)``): a step whose code version and inputs are those of its
asset's latest materialization of the partition does not call the function again.

The step still ends ``succeeded``, so the fan-in and everything downstream work as for any success:
its value is loaded from the reused materialization and stored again as the step's own version
(an output is never shared between two rows, so ``gc`` of the old one cannot break the new one),
with the metadata ``memoized_from`` (the reused id) and the reused ``data_version``, so that readers
of the asset do not become stale. "Same inputs" means the same data versions of the same upstream
(asset, partition)s as the reused materialization read (``flowstone_lineage``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flowstone import context as context_mod
from flowstone import data_api, definitions, errors, services
from flowstone.io import base as io_base
from flowstone.store import records

__all__ = ["call"]

logger = logging.getLogger("flowstone.execution")


def call(
    svc: services.Services,
    asset: definitions.AssetDef,
    kwargs: dict[str, Any],
    lineage: Sequence[tuple[int, str]],
    ctx: context_mod.AssetContext,
) -> object:
    """Call the asset function, unless the asset memoizes and its latest materialization of this
    partition can be reused."""
    reused = _reusable(svc, asset, ctx.partition_key, lineage) if asset.memoize else None
    if reused is None or reused.output_ref is None:
        return asset.fn(**kwargs)
    try:
        manager = svc.io_managers[asset.io_manager]
    except KeyError:
        raise errors.IOManagerError(
            f"IO manager {asset.io_manager!r} is not configured", asset=asset.name
        ) from None
    ref = io_base.OutputRef.model_validate(reused.output_ref)
    value = manager.load(
        io_base.InputContext(asset.name, ctx.partition, ctx.partition_key, ref, asset.return_type)
    )
    ctx.add_metadata(memoized_from=reused.id, data_version=data_api.data_version(reused))
    logger.info("step %s [%s] reuses materialization #%d", asset.name, ctx.partition_key, reused.id)
    return value


def _reusable(
    svc: services.Services,
    asset: definitions.AssetDef,
    partition_key: str,
    lineage: Sequence[tuple[int, str]],
) -> records.Materialization | None:
    store = svc.store
    latest = store.latest(asset.name, partition_key)
    if latest is None or latest.code_version != asset.code_version or latest.output_deleted_at is not None:
        return None
    before = {(u.asset, u.partition_key): u.id for u in store.lineage_upstream(latest.id, max_depth=1)}
    rows = store.get_materializations(sorted({*before.values(), *(i for i, _ in lineage)}))
    now = {(r.asset, r.partition_key): data_api.data_version(r) for i, _ in lineage if (r := rows.get(i))}
    then = {key: data_api.data_version(r) for key, i in before.items() if (r := rows.get(i))}
    return latest if now == then and len(now) == len({i for i, _ in lineage}) else None
