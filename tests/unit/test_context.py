"""AssetContext: partition facts, time windows, resources and metadata."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from flowstone import errors, partition_keys
from flowstone.context import AssetContext, asset_logger
from flowstone.partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    StaticPartitions,
    TimeWindow,
)
from flowstone.testing import build_asset_context

DAILY = DailyPartitions(start="2025-01-01")


def test_unpartitioned_context():
    ctx = build_asset_context("numbers", resources={"db": "conn"})
    assert ctx.asset == "numbers"
    assert ctx.partition is None
    assert ctx.partition_key == partition_keys.UNPARTITIONED
    assert ctx.run_id == "test-run"
    assert ctx.attempt == 1
    assert ctx.metadata == {}
    assert ctx.partition_definition is None
    assert ctx.resources == {"db": "conn"}
    assert ctx.log is logging.getLogger("flowstone.asset.numbers")
    assert ctx.log.parent is not None
    assert asset_logger("numbers") is ctx.log


def test_resources_are_read_only_and_copied():
    given = {"db": "conn"}
    ctx = build_asset_context("numbers", resources=given)
    given["api"] = "late"
    assert "api" not in ctx.resources
    with pytest.raises(TypeError):
        ctx.resources["db"] = "other"


def test_partition_is_validated_by_the_definition():
    ctx = build_asset_context("events", partition="2025-01-02", partition_definition=DAILY)
    assert ctx.partition == date(2025, 1, 2)
    assert type(ctx.partition) is date
    assert ctx.partition_key == "d:2025-01-02"
    with pytest.raises(errors.InvalidPartitionError) as info:
        build_asset_context("events", partition="yesterday", partition_definition=DAILY)
    assert info.value.asset == "events"
    with pytest.raises(errors.InvalidPartitionError) as info:
        build_asset_context("events", partition_definition=DAILY)
    assert info.value.message == (
        "asset 'events' is partitioned by daily dates from 2025-01-01 (UTC); pass partition=..."
    )


def test_partition_without_definition_must_be_a_partition_value():
    ctx = build_asset_context("t", partition=("a|b", 3))
    assert ctx.partition_key == partition_keys.encode(("a|b", 3))
    with pytest.raises(errors.InvalidPartitionError):
        build_asset_context("t", partition=1.5)


def test_partition_key_must_encode_the_partition():
    with pytest.raises(errors.InvalidPartitionError) as info:
        AssetContext(
            asset="events",
            partition=date(2025, 1, 2),
            partition_key="d:2025-01-03",
            run_id="r1",
            resources={},
            log=asset_logger("events"),
            partition_definition=DAILY,
        )
    assert info.value.message == (
        "partition_key 'd:2025-01-03' does not encode partition datetime.date(2025, 1, 2) "
        "(expected 'd:2025-01-02')"
    )
    assert info.value.run_id == "r1"


def test_partition_time_window_of_time_partitions():
    ctx = build_asset_context("events", partition=date(2025, 3, 1), partition_definition=DAILY)
    window = ctx.partition_time_window
    assert window == TimeWindow(start=datetime(2025, 3, 1, tzinfo=UTC), end=datetime(2025, 3, 2, tzinfo=UTC))
    monthly = MonthlyPartitions(start="2025-01-01")
    ctx = build_asset_context("m", partition=date(2025, 2, 1), partition_definition=monthly)
    assert ctx.partition_time_window.end == datetime(2025, 3, 1, tzinfo=UTC)
    hourly = HourlyPartitions(start="2025-01-01T00:00", timezone="Europe/Berlin")
    value = hourly.keys(now=datetime(2025, 1, 1, 2, tzinfo=UTC))[0]
    ctx = build_asset_context("h", partition=value, partition_definition=hourly)
    assert ctx.partition_time_window.end - ctx.partition_time_window.start == (
        datetime(2025, 1, 1, 1, tzinfo=UTC) - datetime(2025, 1, 1, tzinfo=UTC)
    )


def test_partition_time_window_needs_time_partitions():
    static = StaticPartitions(["eu", "us"])
    ctx = build_asset_context("regions", partition="eu", partition_definition=static)
    with pytest.raises(errors.InvalidPartitionError) as info:
        _ = ctx.partition_time_window
    assert info.value.message == (
        f"asset 'regions' is partitioned by {static.describe()}, not by time, so it has no "
        "partition time window; use context.partition instead"
    )
    assert info.value.partition == "s:eu"
    ctx = build_asset_context("plain")
    with pytest.raises(errors.InvalidPartitionError) as info:
        _ = ctx.partition_time_window
    assert info.value.message == ("asset 'plain' is not partitioned, so it has no partition time window")


def test_add_metadata_collects_json_values():
    ctx = build_asset_context("events", run_id="r9")
    ctx.add_metadata(rows=3, source="api")
    ctx.add_metadata({"row count": 3, "cost": Decimal("1.50")}, rows=4)
    ctx.add_metadata()
    assert ctx.metadata == {"rows": 4, "source": "api", "row count": 3, "cost": Decimal("1.50")}


def test_add_metadata_refuses_what_cannot_be_stored_at_the_call():
    ctx = build_asset_context("events", run_id="r9")
    with pytest.raises(errors.OutputNotSerializableError) as info:
        ctx.add_metadata(rows=1, handle=object())
    assert info.value.message.startswith("metadata 'handle' cannot be stored as JSON: ")
    assert "object" in info.value.message
    assert (info.value.asset, info.value.run_id) == ("events", "r9")
    assert info.value.partition == partition_keys.UNPARTITIONED
    with pytest.raises(errors.OutputNotSerializableError) as info:
        ctx.add_metadata({1: "x"})
    assert info.value.message == "metadata keys are strings, not int (1)"
    with pytest.raises(errors.OutputNotSerializableError):
        ctx.add_metadata(ratio=float("nan"))
    assert ctx.metadata == {}  # nothing was added by the refused calls
