"""Turn a selection and a partition into a plan: the steps of a run and the edges between them.

A step is one (asset, partition). The plan is used by the synchronous runner (order, which steps to
skip after a failure) and by the queue (each step's count of unfinished upstream steps, I14).

Which partitions each asset runs for:

- an asset named in the selection runs for the requested partition (validated against its
  definition; an unpartitioned asset runs once);
- an asset added only because a selected asset reads it (``with_upstream``, or a selected asset
  that has other selected assets upstream) also runs for every partition its downstream steps read
  through their partition mappings (e.g. ``TimeWindowOffset(-1)`` adds the previous day).

Mapped upstream partitions outside the upstream definition (the day before ``start``) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from flowstone import definitions, errors, partition_keys
from flowstone.store import records

__all__ = ["Plan", "Step", "build_plan", "plan_of_steps", "step_partitions"]

StepKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Step:
    """One planned step: asset, typed partition value and its encoded key."""

    asset: str
    partition: partition_keys.PartitionValue | None
    partition_key: str

    @property
    def key(self) -> StepKey:
        """(asset, partition_key), the step's identity within a run."""
        return (self.asset, self.partition_key)


@dataclass
class Plan:
    """The steps of a run in execution order, with each step's upstream steps."""

    selection: tuple[str, ...]
    steps: list[Step]
    upstream: dict[StepKey, set[StepKey]] = field(default_factory=dict)

    def planned(self, code_versions: Mapping[str, str | None]) -> list[records.PlannedStep]:
        """The rows to insert: each step with its number of unfinished upstream steps."""
        return [
            records.PlannedStep(
                asset=s.asset,
                partition_key=s.partition_key,
                pending_upstream=len(self.upstream.get(s.key, ())),
                code_version=code_versions.get(s.asset),
            )
            for s in self.steps
        ]

    def edges(self) -> list[tuple[StepKey, StepKey]]:
        """Every step-level edge: ((upstream asset, key), (asset, key))."""
        return [(up, down) for down, ups in self.upstream.items() for up in sorted(ups)]

    def ready(self) -> list[StepKey]:
        """The steps with no upstream step in the plan: the first to run."""
        return [s.key for s in self.steps if not self.upstream.get(s.key)]


def step_partitions(
    asset: definitions.AssetDef,
    upstream: definitions.AssetDef,
    value: partition_keys.PartitionValue | None,
    *,
    now: datetime | None = None,
) -> list[partition_keys.PartitionValue | None]:
    """The partitions of ``upstream`` that step (asset, value) reads, inside the upstream definition."""
    mapping = asset.mapping_for(upstream.name)
    values = mapping.upstream_values(value, asset.partitions, upstream.partitions, now=now)
    if upstream.partitions is None:
        return values
    kept: list[partition_keys.PartitionValue | None] = []
    for v in values:
        try:
            kept.append(upstream.partitions.validate(v, asset=upstream.name))
        except errors.InvalidPartitionError:
            continue  # e.g. the previous day of the first partition: no such upstream partition
    return kept


def _requested(
    asset: definitions.AssetDef, partition: object, *, explicit: bool
) -> list[partition_keys.PartitionValue | None]:
    if asset.partitions is None:
        return [None] if explicit else []
    if partition is None:
        if explicit:
            raise errors.InvalidPartitionError(
                f"asset {asset.name!r} is partitioned by {asset.partitions.describe()}: pass partition=",
                asset=asset.name,
            )
        return []
    return [asset.partitions.validate_for_run(partition, asset=asset.name)]


def _partitions_by_asset(
    defs: definitions.Definitions,
    order: list[str],
    selected: list[str],
    requested: list[object],
    now: datetime | None,
) -> dict[str, dict[str, Step]]:
    """Walk from the sinks up: an asset's partitions are the requested ones (if selected) plus
    those its planned downstream steps read."""
    names = set(order)
    by_asset: dict[str, dict[str, Step]] = {name: {} for name in order}
    for name in reversed(order):
        asset = defs.get(name)
        children = [c for c in sorted(defs.graph.downstream(name, depth=1)) if c in names]
        has_planned_downstream = any(by_asset[c] for c in children)
        values: list[partition_keys.PartitionValue | None] = []
        if name in selected:
            for p in requested:
                values.extend(_requested(asset, p, explicit=not has_planned_downstream or p is not None))
        for child_name in children:
            child = defs.get(child_name)
            for child_step in by_asset[child_name].values():
                values.extend(step_partitions(child, asset, child_step.partition, now=now))
        for v in values:
            key = partition_keys.encode(v)
            by_asset[name].setdefault(key, Step(asset=name, partition=v, partition_key=key))
    return by_asset


def build_plan(
    defs: definitions.Definitions,
    selection: str | Iterable[str],
    partition: object = None,
    *,
    with_upstream: bool = False,
    partitions: Sequence[object] | None = None,
    now: datetime | None = None,
) -> Plan:
    """Plan the steps for ``selection`` at ``partition`` (or each of ``partitions``)."""
    selected = defs.graph.select(selection)
    names = set(selected)
    if with_upstream:
        for name in selected:
            names |= defs.graph.upstream(name)
    order = defs.graph.topological_order(names)
    requested = list(partitions) if partitions is not None else [partition]
    if any(p is not None for p in requested) and all(defs.get(n).partitions is None for n in selected):
        shown = ", ".join(repr(n) for n in selected)
        raise errors.InvalidPartitionError(
            f"{'asset' if len(selected) == 1 else 'assets'} {shown} "
            f"{'is' if len(selected) == 1 else 'are'} not partitioned: do not pass a partition",
            asset=selected[0] if len(selected) == 1 else None,
        )
    by_asset = _partitions_by_asset(defs, order, selected, requested, now)

    plan = Plan(selection=tuple(selected), steps=[])
    for name in order:
        asset = defs.get(name)
        # Deterministic order: asset topological position, then partition key.
        for key in sorted(by_asset[name]):
            step = by_asset[name][key]
            plan.steps.append(step)
            ups: set[StepKey] = set()
            for up_name in asset.upstream_names:
                if up_name not in names:
                    continue
                for v in step_partitions(asset, defs.get(up_name), step.partition, now=now):
                    up_key = (up_name, partition_keys.encode(v))
                    if up_key[1] in by_asset[up_name]:
                        ups.add(up_key)
            plan.upstream[step.key] = ups
    return plan


def plan_of_steps(
    selection: Sequence[str], steps: Sequence[StepKey], edges: Iterable[tuple[StepKey, StepKey]]
) -> Plan:
    """A plan of exactly ``steps`` (in the given order, upstream first) with those of ``edges``
    that join two of them: e.g. part of an earlier run, re-run with the edges it had."""
    keys = set(steps)
    plan = Plan(selection=tuple(selection), steps=[])
    for asset, key in steps:
        plan.steps.append(Step(asset=asset, partition=partition_keys.decode(key), partition_key=key))
        plan.upstream[(asset, key)] = set()
    for up, down in edges:
        if up in keys and down in keys:
            plan.upstream[down].add(up)
    return plan
