"""What a step reads: the upstream partitions of each input, the exact materializations found for
them, and loading their values through their IO managers (step 3 of :mod:`flowstone.execution`)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from flowstone import definitions, errors, events, partition_keys, planning, telemetry
from flowstone.io import base as io_base
from flowstone.status import StepStatus
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["input_row", "load_inputs", "load_latest", "manager", "wanted"]

Wanted = dict[str, list[tuple[partition_keys.PartitionValue | None, str]]]


def manager(io_managers: Mapping[str, io_base.IOManager], key: str, asset: str) -> io_base.IOManager:
    """The IO manager ``key`` (an asset's), or a non-retryable error naming it."""
    try:
        return io_managers[key]
    except KeyError:
        raise errors.IOManagerError(
            f"IO manager {key!r} is not configured", asset=asset, retryable=False
        ) from None


def wanted(
    defs: definitions.Definitions,
    asset: definitions.AssetDef,
    partition: partition_keys.PartitionValue | None,
) -> Wanted:
    """Per input: the upstream partitions it reads, with their keys."""
    found: Wanted = {}
    for inp in asset.inputs:
        values = planning.step_partitions(asset, defs.get(inp.asset), partition)
        found[inp.name] = [(v, partition_keys.encode(v)) for v in values]
    return found


def load_inputs(
    defs: definitions.Definitions,
    io_managers: Mapping[str, io_base.IOManager],
    step: records.Materialization,
    asset: definitions.AssetDef,
    *,
    partition: partition_keys.PartitionValue | None,
    found: store_base.Found,
) -> tuple[dict[str, object], list[tuple[int, str]]]:
    """The function's keyword arguments and the lineage edges (upstream id, input name)."""
    reads = wanted(defs, asset, partition)
    kwargs: dict[str, object] = {}
    lineage: list[tuple[int, str]] = []
    for inp in asset.inputs:
        loaded: dict[object, object] = {}
        upstream = defs.get(inp.asset)
        io = manager(io_managers, upstream.io_manager, upstream.name)
        # Several partitions read as one frame (Parquet, DuckDB) instead of a dict of them.
        combined = inp.mapping.is_multi() and io.loads_combined(inp.type_hint)
        contexts: list[io_base.InputContext] = []
        for value, key in reads[inp.name]:
            row = input_row(found.get((inp.asset, key)), inp.asset, key)
            in_ctx = io_base.InputContext(
                asset=inp.asset,
                partition=value,
                partition_key=key,
                ref=io_base.OutputRef.model_validate(row.output_ref),
                type_hint=None if inp.mapping.is_multi() and not combined else inp.type_hint,
            )
            lineage.append((row.id, inp.name))
            if combined:
                contexts.append(in_ctx)
                continue
            started = time.perf_counter()
            with telemetry.io_span("flowstone.io.load", asset=inp.asset, partition=key, input=inp.name):
                loaded[value] = io.load(in_ctx)
            events.emit(
                "io.loaded",
                run_id=step.run_id,
                asset=step.asset,
                partition=step.partition_key,
                attempt=step.attempt,
                duration_ms=(time.perf_counter() - started) * 1000,
                input=inp.name,
                upstream_asset=inp.asset,
                upstream_partition=key,
                upstream_materialization_id=row.id,
                io_manager=upstream.io_manager,
            )
        if combined:
            with telemetry.io_span("flowstone.io.load", asset=inp.asset, partition="*", input=inp.name):
                kwargs[inp.name] = io.load_combined(contexts, inp.type_hint)
        elif inp.mapping.is_multi():
            kwargs[inp.name] = loaded
        elif len(loaded) == 1:
            kwargs[inp.name] = next(iter(loaded.values()))
        else:
            raise errors.DependencyNotReadyError(
                f"input {inp.name!r} has no upstream partition of {inp.asset!r} to read for "
                f"partition {step.partition_key}",
                retryable=False,
            )
    return kwargs, lineage


def input_row(
    found: tuple[records.Materialization, bool] | None, upstream: str, key: str
) -> records.Materialization:
    """The upstream row an input reads, or why it cannot be read."""
    if found is None:
        raise errors.DependencyNotReadyError(
            f"upstream {upstream!r} [{key}] has no succeeded materialization to read; "
            f"materialize it first (or use with_upstream=True)",
            retryable=False,
        )
    row, in_run = found
    if row.output_deleted_at is not None:
        raise errors.DependencyNotReadyError(
            f"upstream {upstream!r} [{key}] #{row.id}: its output was deleted by gc at "
            f"{row.output_deleted_at:%Y-%m-%d %H:%M:%S}; materialize it again",
            retryable=False,
        )
    if row.status != StepStatus.SUCCEEDED or row.output_ref is None:
        where = "in this run" if in_run else "latest"
        raise errors.DependencyNotReadyError(
            f"upstream {upstream!r} [{key}] is {row.status} {where}; it must succeed first",
            retryable=False,
        )
    return row


def load_latest(
    asset: definitions.AssetDef,
    row: records.Materialization | None,
    key: str,
    io_managers: Mapping[str, io_base.IOManager],
) -> object:
    """The value of ``row``, the latest succeeded materialization of (asset, key), read through
    the IO manager that wrote it (``runtime.load``)."""
    if row is not None and row.output_deleted_at is not None:  # pragma: no cover - gc keeps the latest
        raise errors.DependencyNotReadyError(
            f"{asset.name} [{key}]: its output was deleted by gc at {row.output_deleted_at}",
            asset=asset.name,
            partition=key,
        )
    if row is None or row.output_ref is None:
        raise errors.DependencyNotReadyError(
            f"{asset.name} [{key}] has no succeeded materialization", asset=asset.name, partition=key
        )
    ref = io_base.OutputRef.model_validate(row.output_ref)
    io = io_managers.get(ref.manager)
    if io is None:
        raise errors.IOManagerError(
            f"output of {asset.name} [{key}] was written by IO manager {ref.manager!r}, which is not "
            "configured",
            asset=asset.name,
            partition=key,
            retryable=False,
        )
    return io.load(
        io_base.InputContext(
            asset=asset.name, partition=row.partition, partition_key=key, ref=ref, type_hint=asset.return_type
        )
    )
