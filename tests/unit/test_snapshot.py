"""The definitions snapshot: what it keeps, that it rebuilds equal definitions, and what it cannot
carry (code) refuses to run with a clear message."""

from __future__ import annotations

import json

import pytest

import flowstone as fs
from flowstone import errors, snapshot
from flowstone import partitions as parts


class Custom(parts.StaticPartitions):
    """A user's own partitions class: the snapshot cannot rebuild it."""


def _defs() -> fs.Definitions:
    @fs.asset(partitions=fs.DailyPartitions(start="2025-01-01", timezone="Europe/Paris"), group="raw")
    def daily(context: fs.AssetContext) -> int:
        return 1

    @fs.asset(
        partitions=fs.DailyPartitions(start="2025-01-01", timezone="Europe/Paris"),
        partition_mapping={"daily": fs.TimeWindowOffset(-1)},
        owners=["team:data", "alice@example.com"],
        tags={"tier": "gold"},
        code_version="3",
        queue="heavy",
    )
    def shifted(daily: int, scale: int = 2) -> int:
        """Yesterday, scaled."""
        return daily * scale

    @fs.asset(
        partitions=fs.StaticPartitions(["eu", 7]),
        approval=fs.ApprovalGate(message="ship it?", approvers=["bob"], on_timeout="approve"),
        retry=fs.RetryPolicy(max_attempts=3, backoff_s=2.0),
        metadata={"link": "https://example.com", "rows": 3, "odd": object()},
    )
    def regional() -> int:
        return 1

    @fs.asset(
        deps=["regional"],
        partition_mapping={"regional": fs.AllPartitions()},
        partitions=fs.MultiPartitions(
            {"region": fs.StaticPartitions(["x", "y"]), "day": fs.WeeklyPartitions(start="2025-01-06")}
        ),
    )
    def multi() -> int:
        return 1

    @fs.asset(partitions=fs.HourlyPartitions(start="2025-03-30T00:00", timezone="Europe/Berlin"))
    def hourly() -> int:
        return 1

    @fs.asset(partitions=fs.MonthlyPartitions(start="2025-01-01", end="2025-12-01"))
    def monthly() -> int:
        return 1

    @fs.asset(partitions=Custom(["a"]))
    def custom() -> int:
        return 1

    @fs.asset(partitions=Custom(["a"]))
    def after_custom(custom: int) -> int:
        return custom

    return fs.Definitions(
        [daily, shifted, regional, multi, hourly, monthly, custom, after_custom],
        schedules=[fs.Schedule("nightly", "shifted", cron="0 3 * * *", timezone="Europe/Paris")],
        sensors=[fs.AutomationCondition.on_missing("daily", interval_s=120)],
    )


def test_a_snapshot_rebuilds_definitions_with_the_same_hash():
    defs = _defs()
    first = snapshot.build(defs)
    again = snapshot.build(_defs())
    assert first.hash == again.hash  # deterministic
    rebuilt = snapshot.definitions_from(first.assets, first.automation)
    # Rebuilt definitions publish the same snapshot, except what code alone knows (custom classes)
    specs = {s["name"]: s for s in snapshot.build(rebuilt).assets}
    for spec in first.assets:
        if spec["name"] in {"custom", "after_custom"}:
            continue
        assert specs[spec["name"]] == spec, spec["name"]
    assert list(rebuilt) == list(defs)
    assert json.loads(json.dumps(first.assets)) == first.assets  # plain JSON


def test_a_snapshot_keeps_partitions_mappings_gates_and_labels():
    rebuilt = snapshot.definitions_from(*_spec_parts())
    shifted = rebuilt.get("shifted")
    assert shifted.partitions == fs.DailyPartitions(start="2025-01-01", timezone="Europe/Paris")
    assert shifted.mapping_for("daily") == fs.TimeWindowOffset(-1)
    assert [i.name for i in shifted.inputs] == ["daily"]  # `scale` has a default: not an upstream
    assert (shifted.owners, shifted.group, shifted.queue) == (
        ("team:data", "alice@example.com"),
        "default",
        "heavy",
    )
    assert shifted.description == "Yesterday, scaled."
    assert rebuilt.get("daily").group == "raw"
    regional = rebuilt.get("regional")
    assert regional.partitions == fs.StaticPartitions(["eu", 7])
    assert regional.approval is not None
    assert (regional.approval.approvers, regional.approval.on_timeout) == (["bob"], "approve")
    assert regional.retry == fs.RetryPolicy(max_attempts=3, backoff_s=2.0)
    assert regional.metadata["rows"] == 3
    assert regional.metadata["odd"] == "<object>"  # not JSON: its type, the same in every process
    assert rebuilt.get("multi").mapping_for("regional") == fs.AllPartitions()
    assert rebuilt.get("hourly").partitions == fs.HourlyPartitions(
        start="2025-03-30T00:00", timezone="Europe/Berlin"
    )
    assert rebuilt.get("monthly").partitions == fs.MonthlyPartitions(start="2025-01-01", end="2025-12-01")
    (schedule,) = rebuilt.schedules
    assert isinstance(schedule, fs.Schedule)
    assert (schedule.name, schedule.cron, schedule.timezone) == ("nightly", "0 3 * * *", "Europe/Paris")
    (sensor,) = rebuilt.sensors
    assert isinstance(sensor, fs.Sensor)
    assert (sensor.name, sensor.interval_s) == ("daily_on_missing", 120)


def _spec_parts() -> tuple[list[dict[str, object]], dict[str, object]]:
    snap = snapshot.build(_defs())
    return snap.assets, snap.automation


def test_what_the_snapshot_cannot_carry_refuses_to_run_and_says_why():
    rebuilt = snapshot.definitions_from(*_spec_parts())
    with pytest.raises(errors.ConfigurationError, match="pass --defs"):
        rebuilt.get("daily")()
    (sensor,) = rebuilt.sensors
    assert isinstance(sensor, fs.Sensor)
    with pytest.raises(errors.ConfigurationError, match="sensor 'daily_on_missing'"):
        sensor.fn(None)  # type: ignore[arg-type]
    # A partitions class of the user's own: known by its description; keys need the code.
    opaque = rebuilt.get("custom").partitions
    assert isinstance(opaque, snapshot.OpaquePartitions)
    assert "eu" not in opaque.describe()
    assert opaque.keys() == []
    assert opaque.parse("s:a") == "a"
    with pytest.raises(errors.ConfigurationError, match="pass --defs"):
        opaque.key_range("a", "a", asset="custom")
    assert rebuilt.get("after_custom").mapping_for("custom") == fs.IdentityMapping()  # same class
    custom_spec = next(s for s in snapshot.build(_defs()).assets if s["name"] == "custom")
    assert custom_spec["partitions"]["kind"] == "custom"


def test_group_and_owners_are_checked():
    with pytest.raises(errors.DefinitionError, match="group 'no spaces' is not valid"):

        @fs.asset(group="no spaces")
        def a() -> int:
            return 1

    with pytest.raises(errors.DefinitionError, match="owners are non-empty strings"):

        @fs.asset(owners=[""])
        def b() -> int:
            return 1
