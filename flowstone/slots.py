"""Pool slots for claimed steps (see :mod:`flowstone.pools` and migration ``0008_pools``).

After the claim of an asset with pools, each step takes a slot of each of its pools (per key) in
one round trip. In a queued run a step that finds a pool full goes back to ``queued`` without a
job and waits; the release of a slot (a trigger, in the transaction that ends the holder) defers
its job: the worker's thread is free meanwhile. In an in-process run the step asks again with
backoff. The memory store runs steps without pools (they are enforced by Postgres).
"""

from __future__ import annotations

import logging
import time

from flowstone import definitions, errors, partition_keys, pools, services
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["take"]

logger = logging.getLogger("flowstone.execution")

MAX_KEY_LENGTH = 200


def _slots(asset: definitions.AssetDef, step: records.Materialization) -> list[tuple[str, str]]:
    key = ""
    if asset.pool_key is not None:
        ctx = pools.PoolContext(
            asset=asset.name,
            partition=partition_keys.decode(step.partition_key),
            partition_key=step.partition_key,
            run_id=step.run_id,
        )
        key = asset.pool_key(ctx)
        if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
            raise errors.ConfigurationError(
                f"pool_key of asset {asset.name!r} returned {key!r}: a pool key is a string of at most "
                f"{MAX_KEY_LENGTH} characters",
                asset=asset.name,
                partition=step.partition_key,
            )
    return [(pool, key) for pool in asset.pools]


def take(
    svc: services.Services, asset: definitions.AssetDef, claim: store_base.Claim, *, queued: bool
) -> store_base.Claim:
    """The claim without the steps that wait for a slot (queued runs); in-process, the steps wait
    here until they hold their slots."""
    if svc.store.kind != "postgres":
        return claim
    store = svc.postgres("pools")
    jobs = svc.job_queue() if queued else None
    run_priority = int(claim.run_config.get("priority", 0)) if claim.run_config else 0
    kept = []
    for step in claim.steps:
        slots = _slots(asset, step)
        queue = jobs.queue_of(asset.name) if jobs is not None else "flowstone"
        priority = max(-pools.MAX_PRIORITY, min(pools.MAX_PRIORITY, asset.priority + run_priority))
        delay = 0.05
        while True:
            full = store.pools.acquire(step.id, slots, queue=queue, priority=priority, wait=queued)
            if full is None:
                kept.append(step)
                break
            if queued:
                logger.info("step %s [%s] waits for a slot of pool %r", step.asset, step.partition_key, full)
                break
            time.sleep(delay)  # in-process: ask again
            delay = min(delay * 2, 1.0)
    return store_base.Claim(kept, claim.inputs, claim.run_kind, claim.run_config)
