"""Schedules and sensors: what starts runs without a person (definitions; evaluation lives in
:mod:`flowstone.automation`).

A :class:`Schedule` fires on a cron in a timezone: each tick submits one run through the normal
transactional submit, tagged with the schedule's name and the tick time. Cron fields are read as
wall-clock time in the timezone: a tick that falls in a DST gap fires at the same wall time after
the gap (02:30 on the spring-forward day fires at 03:30), a tick in a repeated hour fires once, at
its first occurrence.

A :func:`sensor` is a function evaluated every ``interval_s`` seconds with a durable cursor; it
returns :class:`RunRequest` objects. A request's ``key`` is unique per sensor: a replay after a
crash never submits it twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

from flowstone import errors, partition_keys
from flowstone import time_partitions as time_parts

if TYPE_CHECKING:
    from flowstone import definitions

__all__ = [
    "AutomationCondition",
    "PartitionFromTick",
    "RunRequest",
    "Schedule",
    "Sensor",
    "SensorContext",
    "sensor",
]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise errors.DefinitionError([f"{kind} name {name!r} is not valid: use letters, digits and '_'"])


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.DefinitionError([f"unknown timezone {name!r}"]) from None


@dataclass(frozen=True)
class PartitionFromTick:
    """The partition of a scheduled run: the time partition containing the tick, moved by
    ``offset`` periods (``-1``: the period that just ended, e.g. yesterday for a daily asset)."""

    offset: int = -1

    def __call__(self, tick: datetime, definition: object) -> partition_keys.PartitionValue:
        """The partition for ``tick`` in the time partition ``definition``."""
        if not isinstance(definition, time_parts.TimePartitions):
            raise errors.DefinitionError(
                ["PartitionFromTick needs the selected assets to share time partitions (daily, hourly, ...)"]
            )
        return definition.offset(definition.partition_containing(tick), self.offset)


PartitionFn = Callable[[datetime], object]


@dataclass(frozen=True)
class Schedule:
    """A cron schedule that submits ``selection``; ``partition`` is a :class:`PartitionFromTick`,
    a callable ``tick -> partition``, or ``None`` (unpartitioned)."""

    name: str
    selection: str | Sequence[str]
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    partition: PartitionFromTick | PartitionFn | None = None
    run_config: Mapping[str, Any] | None = None
    enabled: bool = True
    max_lateness: timedelta = timedelta(minutes=10)
    """Ticks older than this when first seen (e.g. after downtime) are skipped, not fired late."""

    def __post_init__(self) -> None:
        _check_name("schedule", self.name)
        if not croniter.is_valid(self.cron):
            raise errors.DefinitionError(
                [f"schedule {self.name!r}: {self.cron!r} is not a valid cron expression"]
            )
        _zone(self.timezone)

    @property
    def zone(self) -> tzinfo:
        """The schedule's timezone."""
        return _zone(self.timezone)

    def ticks_between(self, after: datetime, until: datetime) -> list[datetime]:
        """The tick instants ``t`` with ``after < t <= until`` (aware datetimes, in the timezone)."""
        if after.tzinfo is None or until.tzinfo is None:
            raise errors.ConfigurationError("ticks_between needs timezone-aware datetimes")
        zone = self.zone
        # Iterate wall-clock times (naive, local) so that cron fields mean local time; localize each
        # with fold=0: a gap time moves forward by the gap, a repeated time fires at its first
        # occurrence only.
        start_local = after.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
        itr = croniter(self.cron, start_local)
        ticks: list[datetime] = []
        seen: set[datetime] = set()
        while True:
            wall: datetime = itr.get_next(datetime)
            tick = (
                wall.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)
            )  # normalised (gap: after it)
            if tick > until:
                break
            if tick <= after or tick in seen:
                continue
            seen.add(tick)
            ticks.append(tick)
        return ticks

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``."""
        horizon = after + timedelta(days=800)
        found = self.ticks_between(after, horizon)
        if not found:
            raise errors.ConfigurationError(f"schedule {self.name!r} has no tick within 800 days")
        return found[0]

    def partition_for(
        self, tick: datetime, defs: definitions.Definitions
    ) -> partition_keys.PartitionValue | None:
        """The partition of the run of ``tick``."""
        if self.partition is None:
            return None
        if isinstance(self.partition, PartitionFromTick):
            names = defs.graph.select(self.selection)
            found = {defs.get(n).partitions for n in names if defs.get(n).partitions is not None}
            if len(found) != 1:
                raise errors.DefinitionError(
                    [
                        f"schedule {self.name!r}: PartitionFromTick needs exactly one partition definition "
                        f"among the selected assets, found {len(found)}"
                    ]
                )
            return self.partition(tick, found.pop())
        # A user callable: the value is validated against the asset by submit().
        return self.partition(tick)  # type: ignore[return-value]


@dataclass(frozen=True)
class RunRequest:
    """A run a sensor asks for. ``key`` (unique per sensor) makes it idempotent. ``add_partitions``
    (``{"tenants": ["acme"]}``) adds keys to dynamic partitions in the transaction that submits the
    run, before it is planned."""

    partition: object = None
    run_config: Mapping[str, Any] | None = None
    key: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    add_partitions: Mapping[str, Sequence[str]] = field(default_factory=dict)


class MissingPartitions(Protocol):
    """What a sensor context can answer about an asset's partitions."""

    def __call__(self, asset: str, *, now: datetime, limit: int) -> list[partition_keys.PartitionValue]: ...


class StalePartitions(Protocol):
    """What a sensor context can answer about an asset's partitions stale because of newer upstream
    data: each partition with a token naming the upstream materializations that made it stale."""

    def __call__(
        self, asset: str, *, limit: int
    ) -> list[tuple[partition_keys.PartitionValue | None, str]]: ...


@dataclass
class SensorContext:
    """What a sensor function sees: its durable cursor, the evaluation time, helpers."""

    sensor: str
    cursor: str | None
    now: datetime
    last_evaluated_at: datetime | None
    missing_partitions: MissingPartitions
    stale_partitions: StalePartitions | None = None
    _new_cursor: str | None = None
    _cursor_set: bool = False

    def set_cursor(self, value: str | None) -> None:
        """Store ``value`` as the cursor, committed with the runs this evaluation submits."""
        if value is not None and not isinstance(value, str):
            raise errors.ConfigurationError(f"a sensor cursor is a string, not {type(value).__name__}")
        self._new_cursor = value
        self._cursor_set = True


SensorFn = Callable[[SensorContext], "RunRequest | Iterable[RunRequest] | None"]


@dataclass(frozen=True)
class Sensor:
    """A sensor: a function evaluated every ``interval_s`` seconds that returns run requests for
    ``selection``."""

    name: str
    selection: str | Sequence[str]
    fn: SensorFn
    interval_s: float = 30.0

    def __post_init__(self) -> None:
        _check_name("sensor", self.name)
        if self.interval_s <= 0:
            raise errors.DefinitionError([f"sensor {self.name!r}: interval_s must be positive"])

    def evaluate(self, context: SensorContext) -> list[RunRequest]:
        """Call the function and normalise what it returns to a list of requests."""
        result = self.fn(context)
        if result is None:
            return []
        requests = [result] if isinstance(result, RunRequest) else list(result)
        for request in requests:
            if not isinstance(request, RunRequest):
                raise errors.ConfigurationError(
                    f"sensor {self.name!r} returned {type(request).__name__}, not fs.RunRequest"
                )
        return requests


def sensor(
    selection: str | Sequence[str], *, interval_s: float = 30.0, name: str | None = None
) -> Callable[[SensorFn], Sensor]:
    """Declare a sensor: ``@fs.sensor("events", interval_s=60)`` on ``fn(context) -> requests``."""

    def decorate(fn: SensorFn) -> Sensor:
        return Sensor(name=name or fn.__name__, selection=selection, fn=fn, interval_s=interval_s)

    return decorate


class AutomationCondition:
    """Ready-made sensors."""

    @staticmethod
    def on_missing(
        asset: str, *, max_per_evaluation: int = 100, interval_s: float = 60.0, name: str | None = None
    ) -> Sensor:
        """A sensor that submits the missing partitions of a time-partitioned ``asset`` up to now
        (newest first, at most ``max_per_evaluation`` per evaluation). Each partition is requested
        once (key ``missing:<partition key>``); a failed one is not requested again automatically."""

        def evaluate(context: SensorContext) -> list[RunRequest]:
            missing = context.missing_partitions(asset, now=context.now, limit=max_per_evaluation)
            return [RunRequest(partition=p, key=f"missing:{partition_keys.encode(p)}") for p in missing]

        return Sensor(name=name or f"{asset}_on_missing", selection=asset, fn=evaluate, interval_s=interval_s)

    @staticmethod
    def on_upstream_updated(
        asset: str, *, max_per_evaluation: int = 100, interval_s: float = 30.0, name: str | None = None
    ) -> Sensor:
        """An eager sensor: submits the partitions of ``asset`` whose upstream has a newer data
        version than the one they read (``runtime.staleness``), at most ``max_per_evaluation`` per
        evaluation, each at most once per set of upstream materializations (key
        ``upstream:<partition key>:<their ids>``). Needs the Postgres store, like every sensor."""

        def evaluate(context: SensorContext) -> list[RunRequest]:
            if context.stale_partitions is None:
                raise errors.ConfigurationError("this sensor context cannot tell stale partitions")
            stale = context.stale_partitions(asset, limit=max_per_evaluation)
            return [RunRequest(partition=p, key=f"upstream:{partition_keys.encode(p)}:{t}") for p, t in stale]

        return Sensor(
            name=name or f"{asset}_on_upstream_updated", selection=asset, fn=evaluate, interval_s=interval_s
        )
