"""Evaluating schedules and sensors: ``runtime.schedules`` and ``runtime.sensors``.

Workers evaluate both from one periodic FlowStone task (``flowstone:automation_tick``, every
``automation_interval_s`` seconds; Procrastinate defers each periodic run once across workers).
Each schedule and each sensor is then evaluated in its own transaction that claims its state row
with ``FOR UPDATE SKIP LOCKED`` (I18) and submits its runs through the normal transactional
submit on that same connection: the tick (or the keyed request) and its run commit together, and
a tick fires once (``flowstone_schedule_ticks`` primary key). ``tick(now=...)`` runs one
evaluation in the calling process with the time passed in (tests, the CLI).
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flowstone import data_api, definitions, errors, partition_keys, results, schedules, services
from flowstone.queue import client
from flowstone.store import automation as ops

__all__ = ["ScheduleStatus", "Schedules", "SensorStatus", "Sensors", "validate"]

logger = logging.getLogger("flowstone.automation")

MAX_TICKS_PER_EVALUATION = 100
FIRST_GRACE = timedelta(minutes=1)
"""How far back the first evaluation of a new schedule looks for a due tick."""


def _now(now: datetime | None) -> datetime:
    if now is not None and now.tzinfo is None:
        raise errors.ConfigurationError("now must be a timezone-aware datetime")
    return now or datetime.now(UTC)


def validate(defs: definitions.Definitions) -> None:
    """Check the Definitions' schedules and sensors: types, unique names, valid selections."""
    problems: builtins.list[str] = []
    seen: set[str] = set()
    for item in [*defs.schedules, *defs.sensors]:
        if not isinstance(item, schedules.Schedule | schedules.Sensor):
            problems.append(f"{item!r} is neither fs.Schedule nor a sensor")
            continue
        if item.name in seen:
            problems.append(f"two schedules/sensors are named {item.name!r}")
        seen.add(item.name)
        try:
            if not defs.graph.select(item.selection):
                problems.append(f"{item.name!r} selects no asset")
        except errors.FlowStoneError as exc:
            problems.append(f"{item.name!r}: {exc.message}")
    if problems:
        raise errors.DefinitionError(problems)


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule as ``list()`` shows it."""

    name: str
    cron: str
    timezone: str
    enabled: bool
    paused: bool
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    ticks: int


class Schedules:
    """``runtime.schedules``: pause, resume, list, and evaluate the Definitions' schedules."""

    def __init__(self, svc: services.Services) -> None:
        self._svc = svc
        self._by_name = {s.name: s for s in svc.defs.schedules if isinstance(s, schedules.Schedule)}

    def get(self, name: str) -> schedules.Schedule:
        """The schedule of this name (a dict lookup, I3)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise errors.UnknownScheduleError(
                f"there is no schedule {name!r}; schedules: {sorted(self._by_name)}"
            ) from None

    def pause(self, name: str, *, by: str | None = None) -> ScheduleStatus:
        """Stop firing ``name`` until resumed (persisted: survives restarts)."""
        return self._set_paused(name, paused=True, by=by)

    def resume(self, name: str, *, by: str | None = None) -> ScheduleStatus:
        """Fire ``name`` again from its next tick (missed ticks are not fired)."""
        return self._set_paused(name, paused=False, by=by)

    def _set_paused(self, name: str, *, paused: bool, by: str | None) -> ScheduleStatus:
        self.get(name)
        store = self._svc.postgres("schedules")
        with store.transaction("pause schedule") as conn:
            ops.schedule_state_set_paused(conn, name, paused=paused, by=by or self._svc.actor, now=None)
            if not paused:  # resuming skips what was missed while paused
                ops.schedule_state_advance(conn, name, datetime.now(UTC), None)
        return next(s for s in self.list() if s.name == name)

    def list(self, *, now: datetime | None = None) -> builtins.list[ScheduleStatus]:
        """Every schedule of the Definitions with its persisted state and next tick."""
        with self._svc.postgres("schedules").transaction("list schedules") as conn:
            rows = {r["name"]: r for r in ops.schedule_state_list(conn)}
        at = _now(now)
        result = []
        for schedule in self._by_name.values():
            row = rows.get(schedule.name, {})
            paused = bool(row.get("paused", False))
            active = schedule.enabled and not paused
            result.append(
                ScheduleStatus(
                    name=schedule.name,
                    cron=schedule.cron,
                    timezone=schedule.timezone,
                    enabled=schedule.enabled,
                    paused=paused,
                    last_tick_at=row.get("last_tick_at"),
                    next_tick_at=schedule.next_tick(max(at, row.get("last_tick_at") or at))
                    if active
                    else None,
                    ticks=int(row.get("ticks", 0)),
                )
            )
        return result

    def tick(self, *, now: datetime | None = None, only: str | None = None) -> dict[str, builtins.list[str]]:
        """Evaluate every enabled, unpaused schedule at ``now``: submit one run per due tick.
        Returns the run ids submitted, by schedule."""
        at = _now(now)
        fired: dict[str, builtins.list[str]] = {}
        for schedule in self._by_name.values():
            if only is not None and schedule.name != only:
                continue
            if not schedule.enabled:
                continue
            try:
                runs = self._evaluate(schedule, at, now)
            except Exception:  # one schedule's failure (e.g. its partition callable) stops no other
                logger.exception("schedule %s failed to fire", schedule.name)
                continue
            if runs:
                fired[schedule.name] = runs
        return fired

    def _evaluate(
        self, schedule: schedules.Schedule, at: datetime, now: datetime | None
    ) -> builtins.list[str]:
        svc = self._svc
        store = svc.postgres("schedules")
        runs: builtins.list[str] = []
        with store.transaction(f"evaluate schedule {schedule.name}") as conn:
            ops.schedule_state_ensure(conn, schedule.name, now)
            state = ops.schedule_state_claim(conn, schedule.name)
            if state is None or state["paused"]:
                return runs  # another evaluator holds it, or it is paused
            last = state["last_tick_at"]
            earliest = at - schedule.max_lateness
            # First evaluation ever: a minute of grace, not max_lateness worth of past ticks.
            after = max(last, earliest) if last is not None else at - min(schedule.max_lateness, FIRST_GRACE)
            due = schedule.ticks_between(after, at)[-MAX_TICKS_PER_EVALUATION:]
            for tick in due:
                if not ops.schedule_tick_insert(conn, schedule.name, tick, now):
                    continue  # fired before (I7-style identity: one run per tick)
                partition = schedule.partition_for(tick, svc.defs)
                handle = client.submit(
                    svc,
                    schedule.selection,
                    [partition],
                    with_upstream=False,
                    config=results.RunConfig.coerce(schedule.run_config),
                    tags={"schedule": schedule.name, "tick": tick.isoformat()},
                    conn=conn,
                )
                ops.schedule_tick_set_run(conn, schedule.name, tick, handle.run_id)
                runs.append(handle.run_id)
            ops.schedule_state_advance(conn, schedule.name, max([at, *(due or [])]), now)
        return runs


@dataclass(frozen=True)
class SensorStatus:
    """A sensor as ``list()`` shows it."""

    name: str
    interval_s: float
    cursor: str | None
    last_evaluated_at: datetime | None
    evaluations: int
    last_error: dict[str, Any] | None
    requests: int


class Sensors:
    """``runtime.sensors``: list and evaluate the Definitions' sensors."""

    def __init__(self, svc: services.Services) -> None:
        self._svc = svc
        self._by_name = {s.name: s for s in svc.defs.sensors if isinstance(s, schedules.Sensor)}

    def list(self) -> builtins.list[SensorStatus]:
        """Every sensor with its durable state."""
        with self._svc.postgres("sensors").transaction("list sensors") as conn:
            rows = {r["name"]: r for r in ops.sensor_state_list(conn)}
        return [
            SensorStatus(
                name=s.name,
                interval_s=s.interval_s,
                cursor=rows.get(s.name, {}).get("cursor"),
                last_evaluated_at=rows.get(s.name, {}).get("last_evaluated_at"),
                evaluations=int(rows.get(s.name, {}).get("evaluations", 0)),
                last_error=rows.get(s.name, {}).get("last_error"),
                requests=int(rows.get(s.name, {}).get("requests", 0)),
            )
            for s in self._by_name.values()
        ]

    def tick(self, *, now: datetime | None = None, force: bool = False) -> dict[str, builtins.list[str]]:
        """Evaluate every sensor due at ``now`` (``force``: all of them). A sensor that raises has
        its error recorded in its state; the others still run. Returns run ids by sensor."""
        at = _now(now)
        submitted: dict[str, builtins.list[str]] = {}
        for sensor in self._by_name.values():
            try:
                runs = self._evaluate(sensor, at, now, force=force)
            except errors.StoreError:
                logger.exception("sensor %s could not be evaluated", sensor.name)
                continue
            if runs:
                submitted[sensor.name] = runs
        return submitted

    def _missing(
        self, asset: str, *, now: datetime, limit: int
    ) -> builtins.list[partition_keys.PartitionValue]:
        definition = self._svc.defs.get(asset)
        if definition.partitions is None:
            raise errors.ConfigurationError(f"asset {asset!r} is not partitioned")
        values = definition.partitions.keys(now=now)
        keys = [partition_keys.encode(v) for v in values]
        done = self._svc.store.covered_keys(asset, keys)
        missing = [v for v, k in zip(values, keys, strict=True) if k not in done]
        return list(reversed(missing))[:limit]

    def _stale(
        self, asset: str, *, limit: int
    ) -> builtins.list[tuple[partition_keys.PartitionValue | None, str]]:
        """Partitions of ``asset`` stale because of newer upstream data, each with the ids of the
        latest materializations of what it read (``data_api.upstream_token``)."""
        rows = data_api.Staleness(self._svc.defs, self._svc.store)(asset, include_fresh=False)
        stale = [r for r in rows if "upstream" in r.causes and r.materialization_id is not None][:limit]
        return [
            (partition_keys.decode(r.partition_key), data_api.upstream_token(self._svc.store, r))
            for r in stale
        ]

    def _evaluate(
        self, sensor: schedules.Sensor, at: datetime, now: datetime | None, *, force: bool
    ) -> builtins.list[str]:
        svc = self._svc
        store = svc.postgres("sensors")
        runs: builtins.list[str] = []
        with store.transaction(f"evaluate sensor {sensor.name}") as conn:
            ops.sensor_state_ensure(conn, sensor.name, now)
            state = ops.sensor_state_claim(conn, sensor.name)
            if state is None:
                return runs  # another evaluator holds it
            last = state["last_evaluated_at"]
            if not force and last is not None and (at - last).total_seconds() < sensor.interval_s:
                return runs
            context = schedules.SensorContext(
                sensor=sensor.name,
                cursor=state["cursor"],
                now=at,
                last_evaluated_at=last,
                missing_partitions=self._missing,
                stale_partitions=self._stale,
            )
            try:
                with store.transaction(f"submit for sensor {sensor.name}", conn):
                    for request in sensor.evaluate(context):
                        if request.key is not None and not ops.sensor_request_insert(
                            conn, sensor.name, request.key, now
                        ):
                            continue  # requested before: a replay never submits twice
                        with data_api.adding_partitions(
                            svc.defs, store, request.add_partitions, svc.actor, conn
                        ):
                            handle = client.submit(
                                svc,
                                sensor.selection,
                                [request.partition],
                                with_upstream=False,
                                config=results.RunConfig.coerce(request.run_config),
                                tags={"sensor": sensor.name, **dict(request.tags)},
                                conn=conn,
                            )
                        if request.key is not None:
                            ops.sensor_request_set_run(conn, sensor.name, request.key, handle.run_id)
                        runs.append(handle.run_id)
            except Exception as exc:  # noqa: BLE001 - a sensor's failure is recorded, others go on
                error = (
                    exc
                    if isinstance(exc, errors.FlowStoneError)
                    else errors.ExecutionError.from_exception(exc)
                )
                logger.warning("sensor %s failed: %s", sensor.name, error)
                ops.sensor_state_record_error(conn, sensor.name, error.to_dict(), now)
                return []
            cursor = context._new_cursor if context._cursor_set else state["cursor"]
            ops.sensor_state_record(conn, sensor.name, cursor, now)
        return runs
