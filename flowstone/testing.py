"""Helpers for testing pipelines: build what FlowStone would hand an asset function, without a run.

``flowstone.build_asset_context`` is this module's :func:`build_asset_context`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from flowstone import errors, partition_keys, partitions
from flowstone.context import AssetContext, asset_logger

__all__ = ["build_asset_context"]


def build_asset_context(
    asset: str = "test_asset",
    *,
    partition: object = None,
    partition_definition: partitions.PartitionsDefinition | None = None,
    resources: Mapping[str, object] | None = None,
    run_id: str = "test-run",
    attempt: int = 1,
) -> AssetContext:
    """An :class:`AssetContext` for calling an asset function directly, e.g. in a unit test.

    With ``partition_definition`` the partition is validated and converted like the runner does
    (``"2025-01-01"`` becomes ``date(2025, 1, 1)`` for daily partitions); without it, ``partition``
    must already be a partition value. A partitioned definition needs a partition.
    """
    if partition_definition is not None:
        if partition is None:
            raise errors.InvalidPartitionError(
                f"asset {asset!r} is partitioned by {partition_definition.describe()}; pass partition=...",
                asset=asset,
            )
        value: partition_keys.PartitionValue | None = partition_definition.validate(partition, asset=asset)
    else:
        # encode() below refuses anything that is not a partition value, with a clear message.
        value = cast("partition_keys.PartitionValue | None", partition)
    return AssetContext(
        asset=asset,
        partition=value,
        partition_key=partition_keys.encode(value),
        run_id=run_id,
        resources=resources or {},
        log=asset_logger(asset),
        partition_definition=partition_definition,
        attempt=attempt,
    )
