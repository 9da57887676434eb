"""What each page shows, as plain JSON-ready data: the HTML templates and the ``/api/...`` routes
render the same dictionaries, so the JSON API is the page's content and nothing more.

Everything is read through the runtime's public parts and ``store.reports`` (the operator CLI's
queries); this module holds no SQL and imports nothing the user wrote (the definitions come from
the snapshot in the database)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from flowstone import errors, partition_keys, snapshot
from flowstone import runtime as runtime_mod
from flowstone.assets import AssetDef
from flowstone.status import StepStatus
from flowstone.store import records, reports
from flowstone.store.postgres import PostgresStore
from flowstone.ui import layout as layout_mod

__all__ = ["asset_page", "assets_page", "partition_state", "pg", "shown", "step_json", "when"]

IN_FLIGHT = {StepStatus.PENDING, StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING_APPROVAL}
FAILED = {StepStatus.FAILED, StepStatus.REJECTED}
CELL_STATES = ("succeeded", "failed", "running", "missing", "stale")
"""The states of a partition in the grid."""
MAX_CHIPS = 5000
"""Static/hourly partitions beyond this many are counted, not drawn."""


def pg(rt: runtime_mod.FlowStone) -> PostgresStore:
    """The runtime's Postgres store (the UI always opens Postgres)."""
    if not isinstance(rt.store, PostgresStore):
        raise errors.ConfigurationError("the web UI needs the Postgres store")
    return rt.store


def when(moment: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text (``None`` stays ``None``)."""
    return None if moment is None else moment.isoformat()


shown = partition_keys.display
"""A partition key as a person reads it (``2025-01-01``; ``-`` when unpartitioned)."""


def step_json(step: records.Materialization) -> dict[str, Any]:
    """One materialization (a run's step, an asset's history row)."""
    return {
        "id": step.id,
        "run_id": step.run_id,
        "asset": step.asset,
        "partition_key": step.partition_key,
        "partition": shown(step.partition_key),
        "status": str(step.status),
        "attempt": step.attempt,
        "created_at": when(step.created_at),
        "queued_at": when(step.queued_at),
        "started_at": when(step.started_at),
        "finished_at": when(step.finished_at),
        "duration_ms": step.duration_ms,
        "error": step.error,
        "metadata": step.metadata,
        "code_version": step.code_version,
        "memoized_from": step.memoized_from,
    }


def _latest_status(by_status: Mapping[str, int], *, ever_succeeded: bool = False) -> str:
    """The colour of an asset: failed if any partition's newest step failed, then in flight, then
    succeeded (also when the newest steps were skipped, e.g. by memoization, after a success);
    ``missing`` when it never ran."""
    if not by_status:
        return "missing"
    if any(by_status.get(s, 0) for s in FAILED):
        return "failed"
    if any(by_status.get(s, 0) for s in IN_FLIGHT):
        return "running"
    if by_status.get(StepStatus.SUCCEEDED, 0) or ever_succeeded:
        return "succeeded"
    return "missing"


def assets_page(
    rt: runtime_mod.FlowStone, *, group: str | None = None, q: str | None = None
) -> dict[str, Any]:
    """The asset graph (every asset, laid out), each node with its status; ``group`` and ``q`` (a
    substring of the name) mark which nodes match."""
    summaries = pg(rt).reports.assets()
    names = list(rt.defs.graph.topological_order())
    deps = {name: list(rt.defs.get(name).upstream_names) for name in names}
    drawn = layout_mod.layout(names, deps)
    needle = (q or "").strip().lower()
    assets = []
    for name in names:
        definition = rt.defs.get(name)
        summary = summaries.get(name)
        box = drawn.boxes[name]
        assets.append(
            {
                "name": name,
                "group": definition.group,
                "description": definition.description,
                "deps": deps[name],
                "partitioned": definition.partitions is not None,
                "status": _latest_status(
                    summary.by_status if summary else {},
                    ever_succeeded=bool(summary and summary.succeeded_partitions),
                ),
                "by_status": dict(summary.by_status) if summary else {},
                "last_success_at": when(summary.last_success_at if summary else None),
                "matches": (group in (None, "", definition.group)) and needle in name.lower(),
                "box": {"x": box.x, "y": box.y, "w": box.w, "h": box.h},
            }
        )
    return {
        "assets": assets,
        "groups": sorted({a["group"] for a in assets}),
        "group": group or "",
        "q": q or "",
        "edges": [{"from": a, "to": b, "path": p} for a, b, p in drawn.edges],
        "width": drawn.width,
        "height": drawn.height,
    }


def partition_state(row: reports.PartitionState, definition: AssetDef) -> str:
    """A partition's state in the grid, from its newest step: in flight -> running, failed or
    rejected -> failed, never succeeded -> missing, a success under another code version -> stale."""
    status = row.status
    if status in IN_FLIGHT:
        return "running"
    if status in FAILED:
        return "failed"
    if row.last_success_at is None:
        return "missing"
    if (
        status == StepStatus.SUCCEEDED
        and definition.code_version is not None
        and row.code_version != definition.code_version
    ):
        return "stale"
    return "succeeded"


def _grid(rt: runtime_mod.FlowStone, definition: AssetDef) -> dict[str, Any]:
    """Every partition of the asset with its state: a calendar for daily partitions (one cell per
    day, a row per year), chips for the others."""
    rows = pg(rt).reports.partition_states(definition.name)
    known = {r.partition_key: partition_state(r, definition) for r in rows}
    spec = snapshot.partitions_spec(definition.partitions) or {}
    values = definition.partitions.keys() if definition.partitions is not None else []
    places = _places(json.dumps(spec, sort_keys=True), values)
    cells: list[dict[str, Any]] = []
    counts = dict.fromkeys(CELL_STATES, 0)
    for key, label, x, y, _ in places:
        state = known.pop(key, "missing")
        counts[state] += 1
        cells.append({"key": key, "label": label, "state": state, "x": x, "y": y})
    grid: dict[str, Any] = {"kind": spec.get("kind"), "total": len(cells), "counts": counts, "years": []}
    if spec.get("kind") == "daily":
        years: dict[int, list[dict[str, Any]]] = {}
        for cell, place in zip(cells, places, strict=True):
            years.setdefault(place[4], []).append(cell)
        grid["years"] = [
            {"year": y, "cells": c, "width": 54 * CELL, "height": 7 * CELL} for y, c in sorted(years.items())
        ]
    else:
        grid["chips"] = [{k: v for k, v in c.items() if k not in ("x", "y")} for c in cells[:MAX_CHIPS]]
    grid["other_keys"] = [{"key": k, "label": shown(k), "state": s} for k, s in sorted(known.items())][:100]
    return grid


CELL = 11
"""A calendar cell's size in SVG units (10 plus a gap of 1)."""

Place = tuple[str, str, int, int, int]
"""(encoded key, text, x, y, year) of one partition in the grid."""


_GEOMETRY: dict[tuple[str, int, str, str], tuple[Place, ...]] = {}
_GEOMETRY_LOCK = threading.Lock()
GEOMETRY_CACHE = 64
"""Definitions whose grid geometry is kept (a handful of partitioned assets in practice)."""


def _places(spec: str, values: list[Any]) -> tuple[Place, ...]:
    """The grid's geometry depends only on the partition keys: computed once per definition, and
    again when an open-ended one gains partitions (the count and the last key are in the cache key)."""
    if not values:
        return ()
    if '"kind": "dynamic"' in spec:  # keys added and removed in any order: never from the cache
        return tuple(_place(value) for value in values)
    cache_key = (
        spec,
        len(values),
        partition_keys.display_value(values[0]),
        partition_keys.display_value(values[-1]),
    )
    with _GEOMETRY_LOCK:
        cached = _GEOMETRY.get(cache_key)
    if cached is not None:
        return cached
    found = [_place(value) for value in values]
    with _GEOMETRY_LOCK:
        if len(_GEOMETRY) >= GEOMETRY_CACHE:
            _GEOMETRY.clear()
        _GEOMETRY[cache_key] = tuple(found)
    return _GEOMETRY[cache_key]


def _place(value: Any) -> Place:
    x = y = year = 0
    if isinstance(value, date) and not isinstance(value, datetime):
        jan1 = date(value.year, 1, 1)
        x = (value.toordinal() - jan1.toordinal() + jan1.weekday()) // 7 * CELL
        y = value.weekday() * CELL
        year = value.year
    return (partition_keys.encode(value), partition_keys.display_value(value), x, y, year)


def asset_page(rt: runtime_mod.FlowStone, name: str, *, partition: str | None = None) -> dict[str, Any]:
    """One asset: its definition, latest materialization, history, partition grid and, for one
    partition (``partition``: its text, e.g. ``2025-01-01``), lineage one step up and down."""
    definition = rt.defs.get(name)
    store = pg(rt)
    spec = snapshot.partitions_spec(definition.partitions)
    key = None
    if definition.partitions is None:
        key = partition_keys.UNPARTITIONED
    elif partition:
        key = rt.partition_key(name, definition.partitions.parse(partition, asset=name))
    latest = store.latest(name, key) if key is not None else None
    history = store.history(name, key, limit=20) if key is not None else []
    lineage: dict[str, Any] = {"upstream": [], "downstream": []}
    if key is not None:
        value = partition_keys.decode(key)
        for direction in ("upstream", "downstream"):
            walk = getattr(rt.lineage, direction)
            lineage[direction] = [
                {
                    "asset": n.asset,
                    "partition": shown(n.partition_key),
                    "materialization_id": n.materialization_id,
                    "run_id": n.run_id,
                    "status": n.status,
                    "finished_at": when(n.finished_at),
                }
                for n in walk(name, value, depth=1)
            ]
    return {
        "name": name,
        "group": definition.group,
        "description": definition.description,
        "owners": list(definition.owners),
        "code_version": definition.code_version,
        "deps": list(definition.upstream_names),
        "downstream": sorted(d for d in rt.defs.assets if name in rt.defs.get(d).upstream_names),
        "partitions": spec,
        "partitions_text": definition.partitions.describe() if definition.partitions is not None else None,
        "partition": shown(key) if key is not None else None,
        "latest": step_json(latest) if latest is not None else None,
        "history": [step_json(h) for h in history],
        "lineage": lineage,
        "grid": _grid(rt, definition) if definition.partitions is not None else None,
    }
