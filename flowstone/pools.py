"""Concurrency pools and step priorities, as declared in code.

``fs.Pool("warehouse", limit=4)`` in ``Definitions(pools=[...])``; ``@fs.asset(pool="warehouse")``
(or several) makes each step of the asset hold a slot of the pool while it runs, across every
worker of every machine: Postgres counts the slots (migration ``0008_pools``). ``pool_key`` gives
each key its own limit (e.g. per tenant): a function of a :class:`PoolContext` returning a string.
``priority`` (asset and ``submit(..., priority=)``) orders the queue: higher runs first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from flowstone import errors, partition_keys

__all__ = ["MAX_PRIORITY", "POOL_NAME", "Pool", "PoolContext", "PoolKey"]

POOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
"""What a pool's name may be (the CHECK of ``flowstone_pools.pool``)."""
MAX_PRIORITY = 999
"""Step priorities are -999..999: FlowStone's maintenance jobs (1000) stay ahead of every step."""


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool of ``limit`` slots (per key); an operator can change the limit at run time with
    ``flowstone pools set NAME LIMIT``."""

    name: str
    limit: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or POOL_NAME.fullmatch(self.name) is None:
            raise errors.DefinitionError(
                [f"pool name {self.name!r} is not valid: letters, digits, '_', '.', '-', at most 64"]
            )
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0:
            raise errors.DefinitionError([f"pool {self.name!r}: limit must be a whole number >= 0"])


@dataclass(frozen=True, slots=True)
class PoolContext:
    """What a ``pool_key`` function sees: the step's asset, partition and run."""

    asset: str
    partition: partition_keys.PartitionValue | None
    partition_key: str
    run_id: str


PoolKey = Callable[[PoolContext], str]
"""A function giving a step's pool key (e.g. ``lambda ctx: ctx.partition[1]`` for a region)."""


def check_priority(priority: object, where: str) -> int:
    """``priority`` as an int in -999..999, or a clear error naming ``where``."""
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > MAX_PRIORITY:
        raise errors.ConfigurationError(
            f"{where}: priority must be a whole number from -999 to 999, got {priority!r}"
        )
    return priority
