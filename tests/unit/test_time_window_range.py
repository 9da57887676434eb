"""TimeWindowRange: a rolling window of upstream time partitions (issue 18)."""

from __future__ import annotations

from datetime import date

import pytest

import flowstone as fs
from flowstone import errors, snapshot

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-10")


def test_window_reads_the_periods_in_range_within_the_bounds() -> None:
    week = fs.TimeWindowRange(-6, 0)
    assert week.is_multi()
    assert week.upstream_values(date(2025, 1, 3), DAYS, DAYS) == [
        date(2025, 1, 1),
        date(2025, 1, 2),
        date(2025, 1, 3),
    ]
    assert week.upstream_values(date(2025, 1, 10), DAYS, DAYS) == [date(2025, 1, d) for d in range(4, 11)]
    ahead = fs.TimeWindowRange(1, 2)
    assert ahead.upstream_values(date(2025, 1, 9), DAYS, DAYS) == [date(2025, 1, 10)]


@pytest.mark.parametrize(("start", "end"), [(1, 0), (-10_000, 0), (True, 0), (0, 1.5)])
def test_bad_windows_are_refused(start: object, end: object) -> None:
    with pytest.raises(errors.DefinitionError, match="TimeWindowRange"):
        fs.TimeWindowRange(start, end)  # type: ignore[arg-type]


def test_window_needs_equal_time_partitions() -> None:
    with pytest.raises(errors.InvalidPartitionError, match="needs time partitions"):
        fs.TimeWindowRange(-1).upstream_values("a", fs.StaticPartitions(["a"]), fs.StaticPartitions(["a"]))


def test_window_survives_the_definitions_snapshot() -> None:
    spec = snapshot.mapping_spec(fs.TimeWindowRange(-6, 0))
    assert spec == {"kind": "time_window_range", "start": -6, "end": 0}
    assert snapshot.mapping_from_spec(spec) == fs.TimeWindowRange(-6, 0)
