"""The definitions snapshot: what the database knows about a project's assets, schedules and sensors
without importing its code.

Every runtime on Postgres publishes :func:`build` of its definitions (``flowstone_definitions``, one
row per asset, and ``flowstone_definitions_state``: the hash of the whole set). Readers that must not
import user code (the CLI without ``--defs``, an approver, the web UI) rebuild a
:class:`~flowstone.definitions.Definitions` from it with :func:`definitions_from`: the same
names, dependencies, partitions, mappings, queues and gates, with functions that refuse to run.

Everything here is plain data and JSON: no SQL (the store writes and reads the rows) and no import
of anything the user wrote.
"""

from __future__ import annotations

import decimal
import enum
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import PurePath
from typing import Any, NoReturn

from flowstone import approval_types, asset_checks, dynamic_partitions, errors, schedules
from flowstone import partitions as parts
from flowstone import pools as pools_mod
from flowstone.assets import AssetDef, AssetInput, RetryPolicy
from flowstone.definitions import Definitions
from flowstone.io import base as io_base
from flowstone.partition_base import _decoded, _InvalidError

__all__ = [
    "FORMAT",
    "OpaquePartitions",
    "Snapshot",
    "build",
    "definitions_from",
    "mapping_from_spec",
    "mapping_spec",
    "partitions_from_spec",
    "partitions_spec",
]

FORMAT = 1
"""The version of the snapshot's JSON layout, stored with it."""

_DATE_KINDS: dict[str, type[parts.TimePartitions]] = {
    "daily": parts.DailyPartitions,
    "weekly": parts.WeeklyPartitions,
    "monthly": parts.MonthlyPartitions,
    "hourly": parts.HourlyPartitions,
}


@dataclass(frozen=True)
class Snapshot:
    """One project's definitions as JSON-ready data, with the hash of all of it."""

    assets: list[dict[str, Any]]
    """One spec per asset, in topological order (see :func:`asset_spec`)."""
    automation: dict[str, Any]
    """``{"schedules": [...], "sensors": [...]}``."""
    hash: str
    """sha256 of the canonical JSON of ``assets`` and ``automation`` (and :data:`FORMAT`)."""


# -- partitions and mappings ------------------------------------------------------------------------


def partitions_spec(definition: parts.PartitionsDefinition | None) -> dict[str, Any] | None:
    """A partitions definition as JSON data; ``{"kind": "custom", ...}`` for one FlowStone cannot
    rebuild (a subclass of the user's)."""
    if definition is None:
        return None
    if type(definition) is parts.StaticPartitions:
        return {"kind": "static", "keys": list(definition.static_keys)}
    if type(definition) is dynamic_partitions.DynamicPartitions:
        return {"kind": "dynamic", "name": definition.name}
    if type(definition) is parts.MultiPartitions:
        return {
            "kind": "multi",
            "dimensions": [[name, partitions_spec(sub)] for name, sub in definition.dimensions],
        }
    for kind, cls in _DATE_KINDS.items():
        if type(definition) is cls:
            assert isinstance(definition, parts.TimePartitions)  # noqa: S101 - cls is one
            return {
                "kind": kind,
                "start": definition.start.isoformat(),
                "end": None if definition.end is None else definition.end.isoformat(),
                "timezone": definition.timezone,
            }
    return {"kind": "custom", "class": type(definition).__qualname__, "describe": definition.describe()}


def partitions_from_spec(spec: Mapping[str, Any] | None) -> parts.PartitionsDefinition | None:
    """Rebuild a definition from :func:`partitions_spec`; ``None`` for none or a custom one."""
    kind = None if spec is None else spec.get("kind")
    if spec is None or kind == "custom":
        return None
    if kind == "static":
        return parts.StaticPartitions(spec["keys"])
    if kind == "dynamic":
        return dynamic_partitions.DynamicPartitions(str(spec["name"]))
    if kind == "multi":
        dims = {str(name): partitions_from_spec(sub) for name, sub in spec["dimensions"]}
        known = {k: v for k, v in dims.items() if v is not None}
        return parts.MultiPartitions(known) if len(known) == len(dims) else None
    return _time_from_spec(spec)


def _time_from_spec(spec: Mapping[str, Any]) -> parts.PartitionsDefinition | None:
    cls = _DATE_KINDS.get(str(spec.get("kind")))
    if cls is None:
        return None
    start, end, zone = spec["start"], spec.get("end"), spec["timezone"]
    if cls is parts.HourlyPartitions:
        return parts.HourlyPartitions(
            datetime.fromisoformat(start), None if end is None else datetime.fromisoformat(end), timezone=zone
        )
    date_cls: Any = cls  # the three date kinds take dates
    first = date.fromisoformat(start)
    return date_cls(first, None if end is None else date.fromisoformat(end), zone)  # type: ignore[no-any-return]


def mapping_spec(mapping: parts.PartitionMapping) -> dict[str, Any]:
    """A partition mapping as JSON data (``custom`` for the user's own)."""
    if type(mapping) is parts.IdentityMapping:
        return {"kind": "identity"}
    if type(mapping) is parts.AllPartitions:
        return {"kind": "all"}
    if type(mapping) is parts.TimeWindowOffset:
        return {"kind": "time_window_offset", "n": mapping.n}
    if type(mapping) is parts.TimeWindowRange:
        return {"kind": "time_window_range", "start": mapping.start, "end": mapping.end}
    return {"kind": "custom", "class": type(mapping).__qualname__}


def mapping_from_spec(spec: Mapping[str, Any]) -> parts.PartitionMapping | None:
    """Rebuild a mapping from :func:`mapping_spec`; ``None`` for a custom one."""
    kind = spec.get("kind")
    if kind == "identity":
        return parts.IdentityMapping()
    if kind == "all":
        return parts.AllPartitions()
    if kind == "time_window_offset":
        return parts.TimeWindowOffset(int(spec["n"]))
    if kind == "time_window_range":
        return parts.TimeWindowRange(int(spec["start"]), int(spec["end"]))
    return None


# -- assets, schedules, sensors ---------------------------------------------------------------------


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _plain(value: object) -> object:
    """Metadata as JSON that is the same in every process (the hash depends on it): what JSON has
    stays, dates and numbers-like values become their text, anything else its type's name."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, date | time | decimal.Decimal | uuid.UUID | PurePath):
        return str(value)
    return f"<{type(value).__qualname__}>"


def asset_spec(item: AssetDef) -> dict[str, Any]:
    """Everything about one asset that a reader needs, as JSON data."""
    gate = item.approval
    return {
        "name": item.name,
        "group": item.group,
        "description": item.description,
        "inputs": [
            {"name": i.name, "asset": i.asset, "mapping": mapping_spec(item.mapping_for(i.asset))}
            for i in item.inputs
        ],
        "deps": [
            {"asset": d, "mapping": mapping_spec(item.mapping_for(d))}
            for d in item.deps
            if d not in {i.asset for i in item.inputs}
        ],
        "partitions": partitions_spec(item.partitions),
        "io_manager": item.io_manager,
        "resources": sorted(item.resources),
        "retry": {
            "max_attempts": item.retry.max_attempts,
            "backoff_s": item.retry.backoff_s,
            "max_backoff_s": item.retry.max_backoff_s,
            "jitter": item.retry.jitter,
        },
        "queue": item.queue,
        "code_version": item.code_version,
        "owners": list(item.owners),
        "pools": list(item.pools),
        "priority": item.priority,
        "tags": dict(item.tags),
        "metadata": _plain(dict(item.metadata)),
        "approval": None
        if gate is None
        else {
            "message": gate.message,
            "timeout_s": _seconds(gate.timeout),
            "on_timeout": gate.on_timeout,
            "approvers": None if gate.approvers is None else list(gate.approvers),
        },
    }


def _schedule_spec(item: schedules.Schedule) -> dict[str, Any]:
    offset = item.partition.offset if isinstance(item.partition, schedules.PartitionFromTick) else None
    return {
        "name": item.name,
        "selection": item.selection if isinstance(item.selection, str) else list(item.selection),
        "cron": item.cron,
        "timezone": item.timezone,
        "partition": None
        if item.partition is None
        else ({"from_tick": offset} if offset is not None else {"custom": True}),
        "enabled": item.enabled,
        "max_lateness_s": item.max_lateness.total_seconds(),
    }


def _sensor_spec(item: schedules.Sensor) -> dict[str, Any]:
    return {
        "name": item.name,
        "selection": item.selection if isinstance(item.selection, str) else list(item.selection),
        "interval_s": item.interval_s,
    }


def _with_checks(spec: dict[str, Any], checks: Sequence[asset_checks.AssetCheckDef]) -> dict[str, Any]:
    """The asset's checks (all of them: inline and ``asset_checks``), when it has some."""
    if checks:
        spec["checks"] = [
            {"name": c.name, "blocking": c.blocking, "severity": c.severity, "description": c.description}
            for c in checks
        ]
    return spec


def build(defs: Definitions) -> Snapshot:
    """The snapshot of ``defs`` (deterministic: equal definitions give equal hashes)."""
    assets = [_with_checks(asset_spec(defs.assets[name]), defs.checks_of(name)) for name in defs.assets]
    automation = {
        "schedules": [_schedule_spec(s) for s in defs.schedules if isinstance(s, schedules.Schedule)],
        "sensors": [_sensor_spec(s) for s in defs.sensors if isinstance(s, schedules.Sensor)],
        "pools": [
            {"name": p.name, "limit": p.limit, "period_s": getattr(p, "period_s", None)}
            for p in defs.pools.values()
        ],
    }
    text = json.dumps(
        {"format": FORMAT, "assets": assets, "automation": automation}, sort_keys=True, default=str
    )
    return Snapshot(assets=assets, automation=automation, hash=hashlib.sha256(text.encode()).hexdigest())


# -- back to definitions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpaquePartitions(parts.PartitionsDefinition):
    """The partitions of an asset whose definition is a class of the project's own: known only by
    its description. Encoded keys (as stored) are accepted; listing them needs the code."""

    label: str

    def keys(self, *, now: datetime | None = None) -> list[parts.PartitionValue]:
        return []

    def describe(self) -> str:
        return f"{self.label} (a partitions class of the project; the snapshot does not list its keys)"

    def key_range(
        self, start: object, end: object, *, asset: str | None = None
    ) -> list[parts.PartitionValue]:
        raise errors.ConfigurationError(
            f"the partitions of {asset or 'this asset'} are {self.describe()}: pass --defs to use a range"
        )

    def _coerce(self, value: object) -> parts.PartitionValue:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
        raise _InvalidError("give the encoded key as stored, e.g. s:eu")

    def _parse_text(self, text: str) -> parts.PartitionValue:
        decoded = _decoded(text)
        return text if decoded is None else decoded

    def _accepted(self) -> str:
        return "an encoded partition key as stored (e.g. s:eu, d:2025-01-01)"


class _NotHere:
    """Stands in for code the snapshot cannot carry: calling it says how to get the real thing."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        raise errors.ConfigurationError(
            f"{self.what} comes from the definitions snapshot in the database, without its code: "
            "pass --defs module:attribute (or FLOWSTONE_DEFS) to run it"
        )


class _SnapshotIOManager(io_base.IOManager):
    """An IO manager known only by name: reading or writing needs the project's code."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._refuse = _NotHere(f"IO manager {key!r}")

    def store(self, ctx: io_base.OutputContext, value: object) -> io_base.OutputRef:
        self._refuse()

    def load(self, ctx: io_base.InputContext) -> object:
        self._refuse()

    def delete(self, ref: io_base.OutputRef) -> None:
        self._refuse()


def _asset_from(spec: Mapping[str, Any], opaque: Mapping[str, OpaquePartitions], flat: set[str]) -> AssetDef:
    """``opaque``: the assets whose partitions are a class of the project's own (links to or from
    them read every partition, unless both sides are the same opaque class); ``flat``: the
    unpartitioned assets."""
    name = str(spec["name"])

    def mapping(link: Mapping[str, Any]) -> parts.PartitionMapping:
        upstream = str(link["asset"])
        if upstream in flat:
            return parts.IdentityMapping()
        if name in opaque or upstream in opaque:
            same = name in opaque and opaque.get(upstream) == opaque[name]
            return parts.IdentityMapping() if same else parts.AllPartitions()
        rebuilt = mapping_from_spec(link.get("mapping", {}))
        return parts.AllPartitions() if rebuilt is None else rebuilt

    links = [*spec.get("inputs", []), *spec.get("deps", [])]
    mappings = {str(link["asset"]): mapping(link) for link in links}
    gate = spec.get("approval")
    retry = spec.get("retry") or {}
    timeout_s = gate.get("timeout_s") if gate else None
    return AssetDef(
        name=name,
        fn=_NotHere(f"asset {name!r}"),
        inputs=tuple(
            AssetInput(name=str(i["name"]), asset=str(i["asset"]), mapping=mappings[str(i["asset"])])
            for i in spec.get("inputs", [])
        ),
        deps=tuple(str(d["asset"]) for d in spec.get("deps", [])),
        partitions=opaque.get(name) or partitions_from_spec(spec.get("partitions")),
        io_manager=str(spec.get("io_manager") or "default"),
        resources=frozenset(str(r) for r in spec.get("resources", [])),
        retry=RetryPolicy(**retry) if retry else RetryPolicy(),
        queue=spec.get("queue"),
        code_version=spec.get("code_version"),
        description=spec.get("description"),
        metadata=dict(spec.get("metadata") or {}),
        tags={str(k): str(v) for k, v in (spec.get("tags") or {}).items()},
        group=str(spec.get("group") or "default"),
        owners=tuple(str(o) for o in spec.get("owners", [])),
        pools=tuple(str(p) for p in spec.get("pools", [])),
        priority=int(spec.get("priority", 0)),
        checks=tuple(
            asset_checks.AssetCheckDef(
                name=str(c["name"]),
                fn=_NotHere(f"check {c['name']!r} of asset {name!r}"),
                asset=name,
                blocking=bool(c.get("blocking")),
                severity="warning" if c.get("severity") == "warning" else "error",
                description=c.get("description"),
            )
            for c in spec.get("checks", [])
        ),
        partition_mappings={k: v for k, v in mappings.items() if not isinstance(v, parts.IdentityMapping)},
        approval=None
        if not gate
        else approval_types.ApprovalGate(
            message=str(gate["message"]),
            timeout=None if timeout_s is None else timedelta(seconds=float(timeout_s)),
            on_timeout=gate.get("on_timeout", "reject"),
            approvers=gate.get("approvers"),
        ),
    )


def _schedule_from(spec: Mapping[str, Any]) -> schedules.Schedule:
    partition = spec.get("partition")
    return schedules.Schedule(
        name=str(spec["name"]),
        selection=spec["selection"],
        cron=str(spec["cron"]),
        timezone=str(spec["timezone"]),
        partition=None
        if partition is None
        else (
            schedules.PartitionFromTick(int(partition["from_tick"]))
            if "from_tick" in partition
            else _NotHere(f"the partition function of schedule {spec['name']!r}")
        ),
        enabled=bool(spec.get("enabled", True)),
        max_lateness=timedelta(seconds=float(spec.get("max_lateness_s", 600))),
    )


def definitions_from(assets: Sequence[Mapping[str, Any]], automation: Mapping[str, Any]) -> Definitions:
    """Definitions rebuilt from a snapshot: names, dependencies, partitions and gates as published;
    functions, sensors, IO managers and resources that refuse to run. A partitions definition of
    the user's own class comes back as :class:`OpaquePartitions`, and a mapping of the user's own
    class (or one between such an asset and another) as
    :class:`~flowstone.partitions.AllPartitions`."""
    opaque = {
        str(spec["name"]): OpaquePartitions(str(spec["partitions"].get("describe") or "custom partitions"))
        for spec in assets
        if spec.get("partitions") is not None and partitions_from_spec(spec["partitions"]) is None
    }
    flat = {str(spec["name"]) for spec in assets if spec.get("partitions") is None}
    items = [_asset_from(spec, opaque, flat) for spec in assets]
    io_managers: dict[str, io_base.IOManager] = {
        key: _SnapshotIOManager(key) for key in {a.io_manager for a in items} if key != "default"
    }
    resources: dict[str, object] = {r: _NotHere(f"resource {r!r}") for a in items for r in a.resources}
    return Definitions(
        assets=items,
        resources=resources,
        io_managers=io_managers,
        schedules=[_schedule_from(s) for s in automation.get("schedules", [])],
        sensors=[
            schedules.Sensor(
                name=str(s["name"]),
                selection=s["selection"],
                fn=_NotHere(f"sensor {s['name']!r}"),
                interval_s=float(s["interval_s"]),
            )
            for s in automation.get("sensors", [])
        ],
        pools=[
            pools_mod.Pool(str(p["name"]), int(p["limit"]))
            if p.get("period_s") is None
            else pools_mod.RateLimit(str(p["name"]), int(p["limit"]), float(p["period_s"]))
            for p in automation.get("pools", [])
        ],
    )
