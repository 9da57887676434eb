"""Partition definitions and mappings: keys, validation, parsing, ranges, windows, DST."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowstone import errors
from flowstone.partition_keys import decode, encode
from flowstone.partitions import (
    AllPartitions,
    DailyPartitions,
    HourlyPartitions,
    IdentityMapping,
    MonthlyPartitions,
    MultiPartitions,
    PartitionMapping,
    PartitionsDefinition,
    StaticPartitions,
    TimePartitions,
    TimeWindow,
    TimeWindowOffset,
    WeeklyPartitions,
)

BERLIN = ZoneInfo("Europe/Berlin")
CET, CEST = timedelta(hours=1), timedelta(hours=2)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def naive(*fields: int) -> datetime:
    return datetime(*fields)  # noqa: DTZ001 - naive wall times are an accepted input


# --- static -----------------------------------------------------------------------------------


class Region(StrEnum):
    EU = "eu"


class Level(IntEnum):
    TWO = 2


def test_static_keys_validate_and_normalise() -> None:
    parts = StaticPartitions(["eu", "us", 2])
    assert parts.keys() == ["eu", "us", 2]
    assert parts.validate("us") == "us"
    assert parts.validate(2) == 2
    # Enums are accepted and stored as their plain value, so the key decodes to the same type.
    assert type(parts.validate(Region.EU)) is str
    assert type(parts.validate(Level.TWO)) is int
    assert StaticPartitions([Region.EU]).static_keys == ("eu",)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("eur", "did you mean 'eu'"),
        ("2", "not one of the static keys"),
        (True, "not a bool"),
        (2.0, "not a float"),
        (None, "not a NoneType"),
    ],
)
def test_static_validate_errors_name_asset_and_accepted_form(value: Any, reason: str) -> None:
    with pytest.raises(errors.InvalidPartitionError) as info:
        StaticPartitions(["eu", "us", 2]).validate(value, asset="sales")
    error = info.value
    assert error.asset == "sales"
    assert "asset 'sales'" in error.message
    assert reason in error.message
    assert "Accepted: one of the static keys" in error.message
    assert "static keys 'eu', 'us', 2" in error.message


def test_static_parse_reads_text_ints_and_encoded_keys() -> None:
    parts = StaticPartitions(["eu", 7, "a|b", "s:x"])
    assert parts.parse("eu") == "eu"
    assert parts.parse("7") == 7
    assert parts.parse("i:7") == 7
    assert parts.parse("s:eu") == "eu"
    assert parts.parse("a|b") == "a|b"
    assert parts.parse("s:x") == "s:x"  # the key itself; "x" is no key
    with pytest.raises(errors.InvalidPartitionError, match="not one of the static keys"):
        parts.parse("07")


def test_static_parse_refuses_ambiguous_text_and_says_how_to_choose() -> None:
    parts = StaticPartitions([1, "1"])
    with pytest.raises(errors.InvalidPartitionError, match="matches several keys") as info:
        parts.parse("1", asset="x")
    assert "write 's:1'" in info.value.message
    assert "write 'i:1'" in info.value.message
    assert parts.parse("s:1") == "1"
    assert type(parts.parse("i:1")) is int


def test_static_key_range_is_inclusive_in_declared_order() -> None:
    parts = StaticPartitions(["c", "a", "b", "d"])
    assert parts.key_range("a", "d") == ["a", "b", "d"]
    assert parts.key_range("a", "a") == ["a"]
    with pytest.raises(errors.InvalidPartitionError, match="comes before the start"):
        parts.key_range("d", "a", asset="x")


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ([], "at least one key"),
        (["a", "a"], "appears more than once"),
        ([2, Level.TWO], "appears more than once"),
        ([True], "not a str or int"),
        ([1.5], "not a str or int"),
        (["a\x00"], "cannot be stored"),
        ("abc", "needs a list of keys"),
    ],
)
def test_static_definition_errors(keys: Any, problem: str) -> None:
    with pytest.raises(errors.DefinitionError, match=problem):
        StaticPartitions(keys)


def test_static_keeps_str_and_int_apart() -> None:
    parts = StaticPartitions(["1", 1])
    assert parts.keys() == ["1", 1]
    assert [encode(k) for k in parts.keys(now=None)] == ["s:1", "i:1"]


# --- daily, weekly, monthly ---------------------------------------------------------------------


def test_daily_keys_are_the_complete_days_up_to_now() -> None:
    parts = DailyPartitions("2025-01-01")
    assert parts.keys(now=utc(2025, 1, 1, 12)) == []  # the first day is not over yet
    assert parts.keys(now=utc(2025, 1, 2)) == [date(2025, 1, 1)]
    assert parts.keys(now=utc(2025, 1, 3, 23, 59)) == [date(2025, 1, 1), date(2025, 1, 2)]
    assert parts.keys(now=utc(2024, 6, 1)) == []


def test_daily_keys_stop_at_the_inclusive_end() -> None:
    parts = DailyPartitions(date(2025, 1, 1), end=date(2025, 1, 3))
    assert parts.keys(now=utc(2030, 1, 1)) == [date(2025, 1, 1), date(2025, 1, 2), date(2025, 1, 3)]
    assert parts.describe() == "daily dates from 2025-01-01 to 2025-01-03 inclusive (UTC)"


def test_daily_keys_follow_the_timezone() -> None:
    # 23:30 UTC on Jan 1 is 00:30 on Jan 2 in Berlin: Jan 1 is over there, not yet in UTC.
    now = utc(2025, 1, 1, 23, 30)
    assert DailyPartitions("2025-01-01", timezone="Europe/Berlin").keys(now=now) == [date(2025, 1, 1)]
    assert DailyPartitions("2025-01-01").keys(now=now) == []


def test_keys_default_now_is_the_current_time() -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    parts = DailyPartitions(yesterday - timedelta(days=1))
    assert parts.keys() == [yesterday - timedelta(days=1), yesterday]


def test_keys_refuse_a_naive_now() -> None:
    with pytest.raises(errors.InvalidPartitionError, match="aware datetime"):
        DailyPartitions("2025-01-01").keys(now=naive(2025, 2, 1))


def test_daily_validate_accepts_dates_and_text_and_refuses_the_rest() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-12-31")
    assert parts.validate(date(2025, 3, 1)) == date(2025, 3, 1)
    assert parts.validate("2025-03-01") == date(2025, 3, 1)
    assert parts.validate("d:2025-03-01") == date(2025, 3, 1)
    assert parts.parse("2025-03-01") == date(2025, 3, 1)
    assert parts.parse("d:2025-03-01") == date(2025, 3, 1)
    assert parts.validate(date(2026, 1, 1) - timedelta(days=1)) == date(2025, 12, 31)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (date(2024, 12, 31), "before the first partition 2025-01-01"),
        (date(2026, 1, 1), "after the last partition 2025-12-31"),
        (naive(2025, 3, 1), "expected a date, got a datetime"),
        ("2025-03-01T00:00", "not a date like 2025-01-01"),
        ("tomorrow", "not a date like 2025-01-01"),
        ("2025-02-30", "not a date like 2025-01-01"),
        (20250301, "expected a date, got an int"),
        ("s:2025-03-01", "not a date"),
    ],
)
def test_daily_validate_errors(value: Any, reason: str) -> None:
    parts = DailyPartitions("2025-01-01", end="2025-12-31")
    with pytest.raises(errors.InvalidPartitionError) as info:
        parts.validate(value, asset="events")
    message = info.value.message
    assert reason in message
    shown = value.isoformat() if isinstance(value, date | datetime) else repr(value)  # dates as ISO
    assert message.startswith(f"invalid partition {shown} for asset 'events'")
    assert "Accepted: a date such as '2025-01-01'" in message
    assert "datetime.date(" not in message
    assert "daily dates from 2025-01-01 to 2025-12-31 inclusive (UTC)" in message
    assert info.value.asset == "events"


def test_parse_refuses_non_text() -> None:
    with pytest.raises(errors.InvalidPartitionError, match="expected text"):
        DailyPartitions("2025-01-01").parse(date(2025, 1, 1), asset="x")  # type: ignore[arg-type]


def test_daily_windows_are_calendar_days_across_dst() -> None:
    parts = DailyPartitions("2025-01-01", timezone="Europe/Berlin")
    spring = parts.time_window(date(2025, 3, 30))
    assert spring.start == datetime(2025, 3, 30, tzinfo=timezone(CET))
    assert spring.end == datetime(2025, 3, 31, tzinfo=timezone(CEST))
    assert spring.end - spring.start == timedelta(hours=23)
    autumn = parts.time_window("2025-10-26")
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert autumn.start.isoformat() == "2025-10-26T00:00:00+02:00"
    assert autumn.start.tzname() == "CEST"


def test_daily_window_when_midnight_does_not_exist() -> None:
    # Sao Paulo skipped from 00:00 to 01:00 on 2018-11-04: the day starts at 01:00 local.
    parts = DailyPartitions("2018-11-01", timezone="America/Sao_Paulo")
    window = parts.time_window(date(2018, 11, 4))
    assert window.start.isoformat() == "2018-11-04T01:00:00-02:00"
    assert window.end - window.start == timedelta(hours=23)
    assert parts.time_window(date(2018, 11, 3)).end == window.start


def test_time_window_contains() -> None:
    window = DailyPartitions("2025-01-01").time_window(date(2025, 1, 1))
    assert isinstance(window, TimeWindow)
    assert utc(2025, 1, 1) in window
    assert utc(2025, 1, 1, 23, 59) in window
    assert utc(2025, 1, 2) not in window
    assert naive(2025, 1, 1, 12) not in window
    assert "2025-01-01" not in window


def test_daily_key_range_and_offset() -> None:
    parts = DailyPartitions("2025-01-01", end="2025-01-31")
    assert parts.key_range("2025-01-30", date(2025, 1, 31)) == [date(2025, 1, 30), date(2025, 1, 31)]
    assert len(parts.key_range("2025-01-01", "2025-01-31")) == 31
    with pytest.raises(errors.InvalidPartitionError, match="end comes before the start"):
        parts.key_range("2025-01-05", "2025-01-04")
    with pytest.raises(errors.InvalidPartitionError, match="after the last partition"):
        parts.key_range("2025-01-05", "2025-02-04", asset="x")
    assert parts.offset(date(2025, 1, 1), -1) == date(2024, 12, 31)  # outside: the caller decides
    assert parts.offset("2025-01-31", 1) == date(2025, 2, 1)
    assert parts.offset(date(2025, 1, 10), 0) == date(2025, 1, 10)
    with pytest.raises(errors.InvalidPartitionError, match="must be an int"):
        parts.offset(date(2025, 1, 10), True)
    with pytest.raises(errors.InvalidPartitionError, match="outside the supported date range"):
        parts.offset(date(9999, 12, 31), 1)


def test_weekly_partitions_are_mondays() -> None:
    parts = WeeklyPartitions("2025-01-06")
    assert parts == WeeklyPartitions("2025-W02") == WeeklyPartitions(date(2025, 1, 6))
    assert parts.keys(now=utc(2025, 1, 27)) == [date(2025, 1, 6), date(2025, 1, 13), date(2025, 1, 20)]
    assert parts.keys(now=utc(2025, 1, 26, 23)) == [date(2025, 1, 6), date(2025, 1, 13)]
    assert parts.validate("2025-W03-1") == date(2025, 1, 13)
    with pytest.raises(errors.InvalidPartitionError, match="its period starts on 2025-01-13"):
        parts.validate(date(2025, 1, 15), asset="w")
    window = parts.time_window(date(2025, 1, 6))
    assert (window.start, window.end) == (utc(2025, 1, 6), utc(2025, 1, 13))
    assert parts.offset(date(2025, 1, 6), -1) == date(2024, 12, 30)
    with pytest.raises(errors.DefinitionError, match="is not the Monday of a week"):
        WeeklyPartitions("2025-01-07")


def test_monthly_partitions_are_first_days() -> None:
    parts = MonthlyPartitions("2024-11", end="2025-02-01")
    assert parts.start == date(2024, 11, 1)
    assert parts.keys(now=utc(2030, 1, 1)) == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    assert parts.keys(now=utc(2025, 1, 31)) == [date(2024, 11, 1), date(2024, 12, 1)]
    assert parts.parse("2025-01") == date(2025, 1, 1)
    assert parts.offset("2024-12", 2) == date(2025, 2, 1)
    assert parts.offset(date(2025, 1, 1), -13) == date(2023, 12, 1)
    window = parts.time_window(date(2024, 2, 1))  # outside the range, still a month
    assert window.end - window.start == timedelta(days=29)
    with pytest.raises(errors.InvalidPartitionError, match="not the first day of a month"):
        parts.validate(date(2025, 1, 2))
    with pytest.raises(errors.InvalidPartitionError, match="not a date"):
        DailyPartitions("2025-01-01").parse("2025-01")  # "YYYY-MM" is for months only
    with pytest.raises(errors.InvalidPartitionError, match="outside the supported date range"):
        parts.offset(date(9999, 12, 1), 1)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: DailyPartitions("2025-01-01", timezone="Mars/Olympus"), "unknown timezone"),
        (lambda: DailyPartitions("2025-01-01", timezone="../../etc/passwd"), "unknown timezone"),
        (lambda: DailyPartitions("2025-01-01", timezone=""), "unknown timezone"),
        (lambda: DailyPartitions("2025-01-01", timezone=1), "unknown timezone"),
        (lambda: DailyPartitions("2025-01-02", end="2025-01-01"), "end comes before the start"),
        (lambda: DailyPartitions("January"), "not a date"),
        (lambda: DailyPartitions(naive(2025, 1, 1)), "expected a date, got a datetime"),
        (lambda: MonthlyPartitions("2025-01-15"), "not the first day of a month"),
        (lambda: HourlyPartitions("2025-01-01T00:30"), "not on the hour"),
        (lambda: HourlyPartitions("2025-03-30T02:00", timezone="Europe/Berlin"), "does not exist"),
        (lambda: HourlyPartitions("2025-01-01", end="2024-12-31T23:00"), "end comes before the start"),
        (lambda: HourlyPartitions("2025-01-01", end="2025-01-01T05:30"), "not on the hour"),
        (lambda: HourlyPartitions(date(2025, 1, 1)), "expected a datetime, got a date"),
        (lambda: TimeWindowOffset(True), "needs an int"),
        (lambda: MultiPartitions({}), "non-empty mapping"),
        (lambda: MultiPartitions({"a": "daily"}), "dimension 'a'"),
        (lambda: MultiPartitions({"": StaticPartitions(["x"])}), "dimension ''"),
    ],
)
def test_definition_errors(make: Any, problem: str) -> None:
    with pytest.raises(errors.DefinitionError, match=problem):
        make()


def test_definitions_are_equal_and_hashable_by_parameters() -> None:
    assert DailyPartitions("2025-01-01") == DailyPartitions(date(2025, 1, 1), timezone="UTC")
    assert hash(DailyPartitions("2025-01-01")) == hash(DailyPartitions(date(2025, 1, 1)))
    assert DailyPartitions("2025-01-01") != DailyPartitions("2025-01-01", timezone="Europe/Berlin")
    assert DailyPartitions("2025-01-01") != DailyPartitions("2025-01-01", end="2025-12-31")
    assert DailyPartitions("2025-01-06") != WeeklyPartitions("2025-01-06")
    assert HourlyPartitions("2025-01-01T01:00", timezone="Europe/Berlin") == HourlyPartitions(
        utc(2025, 1, 1), timezone="Europe/Berlin"
    )
    assert StaticPartitions(["a", "b"]) == StaticPartitions(("a", "b"))
    assert StaticPartitions(["a", "b"]) != StaticPartitions(["b", "a"])
    assert StaticPartitions(["1"]) != StaticPartitions([1])
    assert len({DailyPartitions("2025-01-01"), DailyPartitions("2025-01-01"), StaticPartitions(["a"])}) == 2
    assert repr(StaticPartitions(["a", 1])) == "StaticPartitions(['a', 1])"
    assert "timezone='UTC'" in repr(DailyPartitions("2025-01-01"))


# --- hourly -----------------------------------------------------------------------------------


def test_hourly_autumn_day_in_berlin_has_25_distinct_partitions() -> None:
    parts = HourlyPartitions("2025-10-26T00:00", timezone="Europe/Berlin")
    keys = parts.keys(now=utc(2025, 10, 26, 23))  # local midnight of the 27th
    assert len(keys) == 25
    assert len(set(keys)) == 25  # values stay distinct as dict keys (fixed offsets, see docs)
    assert len({encode(k) for k in keys}) == 25
    local = [k.isoformat() for k in keys if isinstance(k, datetime)]
    assert local[2:5] == [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


def test_hourly_spring_day_in_berlin_has_23_partitions() -> None:
    parts = HourlyPartitions("2025-03-30T00:00", timezone="Europe/Berlin")
    keys = parts.keys(now=utc(2025, 3, 30, 22))
    assert len(keys) == 23
    hours = [k.hour for k in keys if isinstance(k, datetime)]
    assert 2 not in hours
    assert hours[:3] == [0, 1, 3]


def test_hourly_wall_times_that_repeat_or_do_not_exist_are_refused() -> None:
    parts = HourlyPartitions("2025-01-01T00:00", timezone="Europe/Berlin")
    with pytest.raises(errors.InvalidPartitionError, match="happens twice") as info:
        parts.parse("2025-10-26T02:00", asset="meter")
    assert "2025-10-26T02:00:00+02:00 or 2025-10-26T02:00:00+01:00" in info.value.message
    assert "asset 'meter'" in info.value.message
    with pytest.raises(errors.InvalidPartitionError, match="does not exist"):
        parts.validate(naive(2025, 3, 30, 2))
    first = parts.parse("2025-10-26T02:00+02:00")
    second = parts.parse("2025-10-26T02:00+01:00")
    assert isinstance(first, datetime)
    assert first != second
    assert second - first == timedelta(hours=1)
    assert parts.validate(naive(2025, 10, 26, 3)) == utc(2025, 10, 26, 2)


def test_hourly_accepts_any_aware_datetime_and_shows_it_locally() -> None:
    parts = HourlyPartitions("2025-01-01T00:00", timezone="Europe/Berlin")
    value = parts.validate(datetime(2025, 7, 1, 20, tzinfo=ZoneInfo("Asia/Tokyo")))
    assert isinstance(value, datetime)
    assert value.isoformat() == "2025-07-01T13:00:00+02:00"
    assert value.tzname() == "CEST"
    assert value == utc(2025, 7, 1, 11)
    assert parts.validate(encode(value)) == value  # the SQL key is accepted as text
    assert parts.parse("t:2025-07-01T11:00:00+00:00") == value
    with pytest.raises(errors.InvalidPartitionError, match="not on the hour"):
        parts.validate(utc(2025, 7, 1, 11, 30))
    with pytest.raises(errors.InvalidPartitionError, match="before the first partition"):
        parts.validate(utc(2024, 12, 31, 22))
    with pytest.raises(errors.InvalidPartitionError, match="expected a datetime, got a date"):
        parts.validate(date(2025, 7, 1))


def test_hourly_in_a_half_hour_zone() -> None:
    parts = HourlyPartitions("2025-01-01T00:00", timezone="Asia/Kolkata")
    keys = parts.keys(now=utc(2024, 12, 31, 20, 30))
    assert [k.isoformat() for k in keys if isinstance(k, datetime)] == [
        "2025-01-01T00:00:00+05:30",
        "2025-01-01T01:00:00+05:30",
    ]
    assert parts.validate("2025-01-01T01:00") == utc(2024, 12, 31, 19, 30)


def test_hourly_window_offset_and_range_across_dst() -> None:
    parts = HourlyPartitions("2025-10-26T00:00", end="2025-10-26T04:00", timezone="Europe/Berlin")
    before = parts.validate("2025-10-26T02:00+02:00")
    after = parts.offset(before, 1)
    assert isinstance(after, datetime)
    assert after.isoformat() == "2025-10-26T02:00:00+01:00"
    assert parts.offset(after, -2) == parts.validate("2025-10-26T01:00")
    window = parts.time_window(after)
    assert window.start == after
    assert window.end - window.start == timedelta(hours=1)
    assert len(parts.key_range("2025-10-26T00:00", "2025-10-26T04:00")) == 6
    assert len(parts.keys(now=utc(2030, 1, 1))) == 6
    assert parts.describe() == (
        "hourly times from 2025-10-26T00:00:00+02:00 to 2025-10-26T04:00:00+01:00 inclusive (Europe/Berlin)"
    )


def test_hourly_utc_values_use_the_utc_singleton() -> None:
    value = HourlyPartitions("2025-01-01").validate("2025-01-01T05:00")
    assert isinstance(value, datetime)
    assert value.tzinfo is UTC


@settings(max_examples=60, deadline=None)
@example(zone="Europe/Berlin", start=naive(2025, 10, 26), hours=6)  # 25-hour day
@example(zone="Europe/Berlin", start=naive(2025, 3, 30, 1), hours=3)  # 23-hour day
@example(zone="Europe/Berlin", start=naive(2025, 10, 26, 2), hours=1)  # repeated hour
@example(zone="Europe/Berlin", start=naive(2025, 3, 30, 2), hours=1)  # skipped hour
# A repeated hour given with fold=1 (hypothesis generates folds): still refused, never guessed.
@example(zone="Pacific/Chatham", start=naive(2016, 4, 3, 3).replace(fold=1), hours=0)
@given(
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]),
    start=st.datetimes(min_value=naive(2000, 1, 1), max_value=naive(2030, 1, 1)),
    hours=st.integers(0, 80),
)
def test_hourly_keys_are_consecutive_hours_that_round_trip(zone: str, start: datetime, hours: int) -> None:
    wall = start.replace(minute=0, second=0, microsecond=0)
    tz = ZoneInfo(zone)
    # Both folds explicitly: ``start`` may carry fold=1, which replace() would keep for both.
    if wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset():
        # The wall time repeats or does not exist there: refused, never guessed.
        with pytest.raises(errors.DefinitionError, match=r"happens twice|does not exist"):
            HourlyPartitions(wall, timezone=zone)
        return
    parts = HourlyPartitions(wall, timezone=zone)
    start_utc = parts.start.astimezone(UTC)
    keys = parts.keys(now=start_utc + timedelta(hours=hours, minutes=30))
    assert len(keys) == hours
    instants = [k for k in keys if isinstance(k, datetime)]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(instants))
    assert len(set(keys)) == len({encode(k) for k in keys}) == hours
    for key in keys:
        assert parts.validate(decode(encode(key))) == key
        assert parts.parse(encode(key)) == key


# --- multi ------------------------------------------------------------------------------------


def _multi() -> MultiPartitions:
    return MultiPartitions(
        {"date": DailyPartitions("2025-01-01", end="2025-01-02"), "region": StaticPartitions(["eu", "a|b"])}
    )


def test_multi_keys_are_tuples_in_dimension_order() -> None:
    parts = _multi()
    assert parts.names == ("date", "region")
    assert parts.keys() == [
        (date(2025, 1, 1), "eu"),
        (date(2025, 1, 1), "a|b"),
        (date(2025, 1, 2), "eu"),
        (date(2025, 1, 2), "a|b"),
    ]
    for key in parts.keys(now=None):
        assert decode(encode(key)) == key


def test_multi_validate_and_parse_forms() -> None:
    parts = _multi()
    expected = (date(2025, 1, 2), "a|b")
    assert parts.validate(expected) == expected
    assert parts.validate(["2025-01-02", "a|b"]) == expected
    assert parts.validate({"region": "a|b", "date": date(2025, 1, 2)}) == expected
    assert parts.parse('["2025-01-02", "a|b"]') == expected
    assert parts.parse('{"date": "2025-01-02", "region": "a|b"}') == expected
    assert parts.parse(encode(expected)) == expected
    assert parts.validate(encode(expected)) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ((date(2025, 1, 1),), "expected 2 values, got 1"),
        ({"date": date(2025, 1, 1)}, "keys must be exactly ['date', 'region']"),
        ((date(2025, 1, 1), "us"), "dimension 'region': 'us' is invalid"),
        ((date(2025, 1, 5), "eu"), "dimension 'date'"),
        ("2025-01-01|eu", "not a JSON array or object"),
        (date(2025, 1, 1), "expected a tuple or mapping"),
    ],
)
def test_multi_errors(value: Any, reason: str) -> None:
    with pytest.raises(errors.InvalidPartitionError) as info:
        _multi().validate(value, asset="sales")
    assert reason in info.value.message
    assert "asset 'sales'" in info.value.message
    assert "multi-partitions (date: daily dates from 2025-01-01" in info.value.message


def test_multi_key_range_is_a_box() -> None:
    parts = MultiPartitions(
        {
            "month": MonthlyPartitions("2025-01"),
            "n": StaticPartitions([1, 2, 3]),
            "d": DailyPartitions("2025-01-01"),
        }
    )
    box = parts.key_range((date(2025, 1, 1), 2, date(2025, 1, 1)), (date(2025, 2, 1), 3, date(2025, 1, 1)))
    assert box == [
        (date(2025, 1, 1), 2, date(2025, 1, 1)),
        (date(2025, 1, 1), 3, date(2025, 1, 1)),
        (date(2025, 2, 1), 2, date(2025, 1, 1)),
        (date(2025, 2, 1), 3, date(2025, 1, 1)),
    ]
    with pytest.raises(errors.InvalidPartitionError, match="dimension 'n'"):
        parts.key_range((date(2025, 1, 1), 3, date(2025, 1, 1)), (date(2025, 1, 1), 1, date(2025, 1, 1)))


def test_multi_equality_follows_dimension_order() -> None:
    daily, static = DailyPartitions("2025-01-01"), StaticPartitions(["x"])
    assert MultiPartitions({"d": daily, "s": static}) == MultiPartitions({"d": daily, "s": static})
    assert hash(MultiPartitions({"d": daily, "s": static})) == hash(
        MultiPartitions({"d": daily, "s": static})
    )
    assert MultiPartitions({"d": daily, "s": static}) != MultiPartitions({"s": static, "d": daily})


# --- every definition -------------------------------------------------------------------------

ALL_DEFINITIONS: list[PartitionsDefinition] = [
    StaticPartitions(["eu", "", "a|b", 0, -7, "日本"]),
    DailyPartitions("2025-01-01", end="2025-01-10", timezone="Pacific/Chatham"),
    WeeklyPartitions("2024-12-30", end="2025-03-03", timezone="America/New_York"),
    MonthlyPartitions("2024-01", end="2025-12"),
    HourlyPartitions("2025-10-25T20:00", end="2025-10-26T06:00", timezone="Europe/Berlin"),
    _multi(),
]


@pytest.mark.parametrize("parts", ALL_DEFINITIONS, ids=lambda p: type(p).__name__)
def test_every_key_round_trips_through_the_codec_and_validates(parts: PartitionsDefinition) -> None:
    keys = parts.keys(now=utc(2030, 1, 1))
    assert keys
    assert len({encode(k) for k in keys}) == len(keys)
    for key in keys:
        decoded = decode(encode(key))
        assert parts.validate(decoded) == key
        assert type(parts.validate(decoded)) is type(key)
        assert parts.parse(encode(key)) == key
    assert parts.key_range(keys[0], keys[-1]) == keys
    assert parts.describe()


# --- mappings ---------------------------------------------------------------------------------

DAILY = DailyPartitions("2025-01-01", end="2025-01-03")
STATIC = StaticPartitions(["a", "b"])


def test_identity_mapping_rules() -> None:
    identity = IdentityMapping()
    assert identity.is_multi() is False
    assert identity.check(None, None) is None
    assert identity.check(DAILY, DAILY) is None
    assert identity.check(DAILY, DailyPartitions("2025-01-01", end="2025-01-03")) is None
    assert identity.check(DAILY, None) is None  # every partition reads the single value
    problem = identity.check(None, DAILY)
    assert problem is not None
    assert "AllPartitions()" in problem
    assert "daily dates from 2025-01-01" in problem
    problem = identity.check(DAILY, STATIC)
    assert problem is not None
    assert "differ" in problem
    assert "static keys 'a', 'b'" in problem
    assert identity.upstream_values(None, None, None) == [None]
    assert identity.upstream_values(date(2025, 1, 2), DAILY, None) == [None]
    assert identity.upstream_values(date(2025, 1, 2), DAILY, DAILY) == [date(2025, 1, 2)]
    assert identity.upstream_values("2025-01-02", DAILY, DAILY) == [date(2025, 1, 2)]
    with pytest.raises(errors.InvalidPartitionError, match="AllPartitions"):
        identity.upstream_values(None, None, DAILY)
    with pytest.raises(errors.InvalidPartitionError, match="differ"):
        identity.upstream_values("a", STATIC, DAILY)


def test_all_partitions_mapping() -> None:
    mapping = AllPartitions()
    assert mapping.is_multi() is True
    assert mapping.check(None, DAILY) is None
    assert mapping.check(STATIC, DAILY) is None
    problem = mapping.check(DAILY, None)
    assert problem is not None
    assert "needs a partitioned upstream" in problem
    assert mapping.upstream_values(None, None, STATIC) == ["a", "b"]
    assert mapping.upstream_values("a", STATIC, DAILY, now=utc(2025, 1, 3)) == [
        date(2025, 1, 1),
        date(2025, 1, 2),
    ]
    with pytest.raises(errors.InvalidPartitionError, match="needs a partitioned upstream"):
        mapping.upstream_values(None, None, None)


def test_time_window_offset_mapping() -> None:
    previous = TimeWindowOffset(-1)
    assert previous.is_multi() is False
    assert previous.check(DAILY, DAILY) is None
    assert previous.upstream_values(date(2025, 1, 2), DAILY, DAILY) == [date(2025, 1, 1)]
    assert previous.upstream_values(date(2025, 1, 1), DAILY, DAILY) == [date(2024, 12, 31)]
    assert TimeWindowOffset(2).upstream_values("2025-01-01", DAILY, DAILY) == [date(2025, 1, 3)]
    for down, up in [(DAILY, STATIC), (None, DAILY), (DAILY, None)]:
        problem = previous.check(down, up)
        assert problem is not None
        assert "needs time partitions on both assets" in problem
    problem = previous.check(DAILY, DailyPartitions("2025-01-01"))
    assert problem is not None
    assert "needs equal time partitions" in problem
    with pytest.raises(errors.InvalidPartitionError, match="needs time partitions"):
        previous.upstream_values("a", STATIC, STATIC)
    with pytest.raises(errors.InvalidPartitionError, match="after the last partition"):
        previous.upstream_values(date(2025, 2, 1), DAILY, DAILY)


def test_mappings_are_values() -> None:
    mappings: list[PartitionMapping] = [IdentityMapping(), AllPartitions(), TimeWindowOffset(-1)]
    assert IdentityMapping() == IdentityMapping()
    assert TimeWindowOffset(-1) == TimeWindowOffset(-1) != TimeWindowOffset(1)
    assert len({*mappings, IdentityMapping(), TimeWindowOffset(-1)}) == 3
    assert repr(TimeWindowOffset(-1)) == "TimeWindowOffset(n=-1)"


def test_time_partitions_share_a_base() -> None:
    for parts in ALL_DEFINITIONS[1:5]:
        assert isinstance(parts, TimePartitions)
        assert parts.zone is not None
    assert not isinstance(STATIC, TimePartitions)
