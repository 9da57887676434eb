"""Lineage queries: which exact materializations a materialization read, and who read it.

Results are plain strings, ids and typed partition values decoded by the codec; nothing is built
from stored names (I3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flowstone import definitions, errors, partition_keys
from flowstone.graph import AssetGraph
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["MAX_DEPTH", "ImpactRow", "Lineage", "LineageNode"]

MAX_DEPTH = 100
"""The depth cap of a walk when ``depth=None`` (the walk also never revisits a row)."""


@dataclass(frozen=True, slots=True)
class LineageNode:
    """A materialization reached by a lineage walk, ``depth`` steps away from the start."""

    depth: int
    asset: str
    partition: partition_keys.PartitionValue | None
    partition_key: str
    materialization_id: int
    run_id: str
    status: str
    finished_at: datetime | None
    via_materialization_id: int
    input_name: str
    also_via_materialization_ids: tuple[int, ...] = ()
    """The other materializations of the walk it is joined to: in a diamond, the node is listed
    once (under ``via_materialization_id``) and its other edges are here."""


@dataclass(frozen=True, slots=True)
class ImpactRow:
    """An asset downstream of the start (by the graph) and the status of its latest materialization
    for the same partition (``latest_status`` is ``None`` when it was never materialized)."""

    depth: int
    asset: str
    partition_key: str
    latest_materialization_id: int | None
    latest_status: str | None
    read_start: bool
    """Whether that latest materialization read the start's current latest version."""


def _node(row: records.LineageRow) -> LineageNode:
    return LineageNode(
        depth=row.depth,
        asset=row.asset,
        partition=row.partition,
        partition_key=row.partition_key,
        materialization_id=row.id,
        run_id=row.run_id,
        status=row.status.value,  # plain strings in query results (I3), not the enum
        finished_at=row.finished_at,
        via_materialization_id=row.via_id,
        input_name=row.input_name,
        also_via_materialization_ids=row.also_via,
    )


class Lineage:
    """``runtime.lineage``: walks from the latest succeeded materialization of (asset, partition)."""

    def __init__(self, defs: definitions.Definitions, store: store_base.Store) -> None:
        self._defs = defs
        self._store = store

    def _start(self, asset: str, partition: object) -> records.Materialization | None:
        return self._store.latest(asset, self._key(asset, partition))

    def _key(self, asset: str, partition: object) -> str:
        definition = self._defs.get(asset)
        if definition.partitions is None:
            key = partition_keys.UNPARTITIONED
        elif partition is None:
            raise errors.InvalidPartitionError(
                f"asset {asset!r} is partitioned by {definition.partitions.describe()}: pass partition=",
                asset=asset,
            )
        else:
            key = partition_keys.encode(definition.partitions.validate(partition, asset=asset))
        return key

    @staticmethod
    def _depth(depth: int | None) -> int:
        if depth is None:
            return MAX_DEPTH
        if depth < 1:
            raise errors.FlowStoneError(f"depth must be at least 1, got {depth}")
        return min(depth, MAX_DEPTH)

    def upstream(self, asset: str, partition: object = None, depth: int | None = None) -> list[LineageNode]:
        """What the latest materialization of (asset, partition) read, transitively: each row once,
        at its nearest depth."""
        max_depth = self._depth(depth)
        start = self._start(asset, partition)
        if start is None:
            return []
        return [_node(r) for r in self._store.lineage_upstream(start.id, max_depth=max_depth)]

    def downstream(self, asset: str, partition: object = None, depth: int | None = None) -> list[LineageNode]:
        """Which materializations read the latest materialization of (asset, partition),
        transitively: each row once, at its nearest depth."""
        max_depth = self._depth(depth)
        start = self._start(asset, partition)
        if start is None:
            return []
        return [_node(r) for r in self._store.lineage_downstream(start.id, max_depth=max_depth)]

    def impact(self, asset: str, partition: object = None) -> list[ImpactRow]:
        """Every asset downstream of ``asset`` in the graph, with its latest status for the same
        partition (unpartitioned assets: their single key) and whether it read the current version."""
        start_key = self._key(asset, partition)
        start = self._store.latest(asset, start_key)
        rows: list[ImpactRow] = []
        graph = self._defs.graph
        for name in graph.topological_order(graph.downstream(asset)):
            definition = self._defs.get(name)
            depth = _distance(graph, asset, name)
            targets: list[tuple[str, records.Materialization | None]]
            if definition.partitions is None:
                u = partition_keys.UNPARTITIONED
                targets = [(u, self._store.latest(name, u))]
            elif start_key != partition_keys.UNPARTITIONED:
                targets = [(start_key, self._store.latest(name, start_key))]
            else:  # an unpartitioned start feeds every partition of a partitioned asset
                targets = [(m.partition_key, m) for m in self._store.latest_all(name)]
            for key, latest in targets:
                read_start = False
                if latest is not None and start is not None:
                    read = self._store.lineage_upstream(latest.id, max_depth=MAX_DEPTH)
                    read_start = any(r.id == start.id for r in read)
                rows.append(
                    ImpactRow(
                        depth=depth,
                        asset=name,
                        partition_key=key,
                        latest_materialization_id=latest.id if latest else None,
                        latest_status=latest.status.value if latest else None,
                        read_start=read_start,
                    )
                )
        return rows


def _distance(graph: AssetGraph, source: str, target: str) -> int:
    """Shortest number of edges from ``source`` down to ``target``."""
    depth = 1
    frontier = graph.downstream(source, depth=1)
    seen = set(frontier)
    while target not in frontier:
        nxt = set()
        for node in frontier:
            nxt |= graph.downstream(node, depth=1)
        frontier = nxt - seen
        seen |= frontier
        depth += 1
        if not frontier:
            return depth
    return depth
