"""Time partitions: daily, weekly, monthly and hourly periods, and the window each one covers.

Import the public names from :mod:`flowstone.partitions`, which re-exports them.

All of this happens in the definition's IANA ``timezone``:

- ``start`` and ``end`` are both **inclusive**: ``end`` is the last partition, not one past it.
- :meth:`TimePartitions.keys` lists the partitions whose time window has *ended* by ``now`` (as
  Dagster does: today's daily partition appears once today is over), capped at ``end``.
  :meth:`~flowstone.partitions.PartitionsDefinition.validate` does not look at the clock: any
  partition between ``start`` and ``end`` is valid, including future ones.
- Window bounds and hourly values are aware datetimes whose ``tzinfo`` is the fixed UTC offset in
  force in the timezone at that instant (``datetime.timezone(+02:00, "CEST")``), not the
  ``ZoneInfo`` itself. Two ``ZoneInfo`` datetimes in the repeated autumn hour compare equal
  because same-zone comparison ignores ``fold`` (PEP 495), which would merge two different
  partitions in a dict; fixed offsets compare and hash by instant.
- Naive datetimes given to an hourly definition are wall times in its timezone; a wall time that
  happens twice (clocks go back) or never (clocks go forward) is refused, not guessed.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import cached_property
from typing import ClassVar, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowstone import errors, partition_keys
from flowstone.partition_base import PartitionsDefinition, _decoded, _InvalidError, _show, article

__all__ = [
    "DailyPartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "TimePartitions",
    "TimeWindow",
    "WeeklyPartitions",
]

PartitionValue: TypeAlias = partition_keys.PartitionValue

_HOUR = timedelta(hours=1)
_MONTH_RE = re.compile(r"[0-9]{4}-[0-9]{2}")


@dataclass(frozen=True)
class TimeWindow:
    """The half-open interval ``[start, end)`` a time partition covers (both aware datetimes)."""

    start: datetime
    end: datetime

    def __contains__(self, instant: object) -> bool:
        """Whether an aware datetime lies in ``[start, end)``."""
        if not isinstance(instant, datetime) or instant.utcoffset() is None:
            return False
        return self.start <= instant < self.end


class TimePartitions(PartitionsDefinition):
    """Common base of the time partitions: consecutive periods from ``start`` to ``end``.

    Subclasses map each value to an integer period index; everything else is shared.
    """

    start: date  # a datetime for HourlyPartitions
    end: date | None
    timezone: str
    _kind: ClassVar[str]  # describe(): "daily dates"

    @cached_property
    def zone(self) -> tzinfo:
        """The ``tzinfo`` of :attr:`timezone` (a ``ZoneInfo``, or ``datetime.UTC`` for ``UTC``)."""
        return _zone(self.timezone)

    def keys(self, *, now: datetime | None = None) -> list[PartitionValue]:
        """The partitions from ``start`` whose window has ended by ``now`` (default: the current
        time), up to ``end`` inclusive."""
        last = self._index_containing(_now_utc(now)) - 1
        if self.end is not None:
            last = min(last, self._index(self.end))
        try:
            return [self._value_at(i) for i in range(self._index(self.start), last + 1)]
        except _InvalidError as exc:
            raise errors.InvalidPartitionError(f"cannot list {self.describe()}: {exc}") from None

    def key_range(self, start: object, end: object, *, asset: str | None = None) -> list[PartitionValue]:
        """The partitions from ``start`` to ``end``, both inclusive (no clock involved)."""
        first, last = self.validate(start, asset=asset), self.validate(end, asset=asset)
        i, j = self._index(first), self._index(last)
        if i > j:
            raise self._error(end, f"the end comes before the start {_show(first)}", asset)
        return [self._value_at(k) for k in range(i, j + 1)]

    def describe(self) -> str:
        """E.g. ``daily dates from 2025-01-01 (UTC)``."""
        span = f" to {self.end.isoformat()} inclusive" if self.end is not None else ""
        return f"{self._kind} from {self.start.isoformat()}{span} ({self.timezone})"

    def time_window(self, value: object) -> TimeWindow:
        """The ``[start, end)`` window of a partition (a value or its text), in the timezone."""
        try:
            index = self._index(self._aligned_any(value))
            return TimeWindow(
                _local(self._window_start_utc(index), self.zone),
                _local(self._window_start_utc(index + 1), self.zone),
            )
        except _InvalidError as exc:
            raise self._error(value, str(exc), None) from None

    def partition_containing(self, instant: datetime) -> PartitionValue:
        """The partition whose window contains the aware ``instant`` (range not checked)."""
        if instant.tzinfo is None:
            raise errors.InvalidPartitionError(f"instant {instant!r} must be timezone-aware")
        try:
            return self._value_at(self._index_containing(instant))
        except _InvalidError as exc:
            raise errors.InvalidPartitionError(
                f"no partition contains {instant.isoformat()}: {exc}"
            ) from None

    def offset(self, value: object, n: int) -> PartitionValue:
        """The partition ``n`` periods after ``value`` (``n < 0``: earlier).

        The result may lie outside ``start``/``end``; the caller decides what that means.
        """
        if type(n) is not int:
            raise errors.InvalidPartitionError(f"offset n must be an int, got {_show(n)}")
        try:
            return self._value_at(self._index(self._aligned_any(value)) + n)
        except _InvalidError as exc:
            raise self._error(value, str(exc), None) from None

    def _coerce(self, value: object) -> PartitionValue:
        aligned = self._aligned_any(value)
        index = self._index(aligned)
        if index < self._index(self.start):
            raise _InvalidError(f"it comes before the first partition {self.start.isoformat()}")
        if self.end is not None and index > self._index(self.end):
            raise _InvalidError(f"it comes after the last partition {self.end.isoformat()}")
        return aligned

    def _parse_text(self, text: str) -> PartitionValue:
        return self._coerce(text)

    def _aligned_any(self, value: object) -> PartitionValue:
        """A value or its text, type-checked and aligned to a period start, range not checked."""
        if type(value) is str:
            decoded = _decoded(value)
            # Only non-str decodings: "s:2025-01-01" would otherwise recurse through the text.
            return self._aligned(value if decoded is None or type(decoded) is str else decoded)
        return self._aligned(value)

    @abstractmethod
    def _aligned(self, value: object) -> PartitionValue:
        """Type-check and align a value (text is parsed); raise _InvalidError."""

    @abstractmethod
    def _index(self, value: PartitionValue) -> int:
        """The period index of an aligned value (consecutive periods differ by 1)."""

    @abstractmethod
    def _value_at(self, index: int) -> PartitionValue:
        """The value of a period index; _InvalidError when out of the datetime range."""

    @abstractmethod
    def _index_containing(self, instant: datetime) -> int:
        """The index of the period containing an aware instant."""

    @abstractmethod
    def _window_start_utc(self, index: int) -> datetime:
        """The first instant of a period, in UTC."""


@dataclass(frozen=True, init=False)
class _DatePartitions(TimePartitions):
    """Time partitions whose values are dates: a subclass gives ``_index`` (floor, for any date)
    and ``_value_at``; a date is a partition when it is the first day of its period."""

    start: date
    end: date | None
    timezone: str

    _form: ClassVar[str]  # _accepted(): "a date"
    _month_text: ClassVar[bool] = False  # also parse "2025-01"

    def __init__(self, start: date | str, end: date | str | None = None, timezone: str = "UTC") -> None:
        """``start`` and ``end`` (both inclusive) are dates or ISO text such as ``"2025-01-01"``."""
        _set_timezone(self, timezone)
        try:
            _set_bounds(self, self._aligned(start), None if end is None else self._aligned(end))
        except _InvalidError as exc:
            raise errors.DefinitionError(
                [f"{type(self).__name__}(start={start!r}, end={end!r}) is invalid: {exc}"]
            ) from None

    def _accepted(self) -> str:
        month = f" or {self.start.isoformat()[:7]!r}" if self._month_text else ""
        return f"{self._form} such as {self.start.isoformat()!r}{month}"

    def _aligned(self, value: object) -> date:
        if type(value) is str:
            text = value + "-01" if self._month_text and _MONTH_RE.fullmatch(value) else value
            try:
                value = date.fromisoformat(text)
            except ValueError:
                raise _InvalidError("the text is not a date like 2025-01-01") from None
        if isinstance(value, datetime) or not isinstance(value, date):
            raise _InvalidError(f"expected a date, got {article(type(value).__name__)}")
        day = date(value.year, value.month, value.day)  # drops date subclasses
        first = self._value_at(self._index(day))
        if first != day:
            raise _InvalidError(f"{day} is not {self._form}; its period starts on {first}")
        return day

    def _index_containing(self, instant: datetime) -> int:
        return self._index(instant.astimezone(self.zone).date())

    def _window_start_utc(self, index: int) -> datetime:
        try:  # the first instant of the day, even when local midnight falls in a DST gap
            return datetime.combine(self._value_at(index), time(), tzinfo=self.zone).astimezone(UTC)
        except OverflowError:
            raise _InvalidError("the window is outside the supported datetime range") from None

    @abstractmethod
    def _value_at(self, index: int) -> date:
        """The first day of period ``index``."""


class DailyPartitions(_DatePartitions):
    """One partition per calendar day in ``timezone``; values are ``datetime.date``.

    ``DailyPartitions(start="2025-01-01", end=None, timezone="UTC")``; ``end`` is inclusive.
    """

    _kind = "daily dates"
    _form = "a date"

    def _index(self, value: PartitionValue) -> int:
        return _as_date(value).toordinal()

    def _value_at(self, index: int) -> date:
        return _from_ordinal(index)


class WeeklyPartitions(_DatePartitions):
    """One partition per ISO week (Monday to Sunday); values are the week's Monday as ``date``.

    ``start`` and ``end`` (inclusive) must be Mondays: ``date(2025, 1, 6)``, ``"2025-01-06"`` or
    ``"2025-W02"``.
    """

    _kind = "weekly dates (Mondays)"
    _form = "the Monday of a week"

    def _index(self, value: PartitionValue) -> int:
        return (_as_date(value).toordinal() - 1) // 7  # ordinal 1 (0001-01-01) is a Monday

    def _value_at(self, index: int) -> date:
        return _from_ordinal(index * 7 + 1)


class MonthlyPartitions(_DatePartitions):
    """One partition per calendar month; values are the first day of the month as ``date``.

    ``start`` and ``end`` (inclusive) are first days of months: ``date(2025, 1, 1)``,
    ``"2025-01-01"`` or ``"2025-01"``.
    """

    _kind = "monthly dates (first of the month)"
    _form = "the first day of a month"
    _month_text = True

    def _index(self, value: PartitionValue) -> int:
        day = _as_date(value)
        return day.year * 12 + day.month - 1

    def _value_at(self, index: int) -> date:
        try:
            return date(index // 12, index % 12 + 1, 1)
        except ValueError:
            raise _InvalidError("the month is outside the supported date range") from None


@dataclass(frozen=True, init=False)
class HourlyPartitions(TimePartitions):
    """One partition per hour from ``start``; values are aware datetimes on the local hour.

    DST-safe: partitions are consecutive 3600-second periods, so the hour skipped in spring does
    not exist and the hour repeated in autumn gives two partitions (``02:00+02:00`` and
    ``02:00+01:00`` in Europe/Berlin).
    """

    start: datetime
    end: datetime | None
    timezone: str
    _kind = "hourly times"

    def __init__(
        self, start: datetime | str, end: datetime | str | None = None, timezone: str = "UTC"
    ) -> None:
        """``start`` and ``end`` (both inclusive) are datetimes or ISO text; naive ones are wall times
        in ``timezone``. ``start`` must be on the hour there."""
        _set_timezone(self, timezone)
        try:
            first = _local(self._instant(start), self.zone)
            if first.time().replace(hour=0) != time():
                raise _InvalidError("the start is not on the hour in the timezone")  # noqa: TRY301
            object.__setattr__(self, "start", first)  # _aligned(end) needs it
            _set_bounds(self, first, None if end is None else self._aligned(end))
        except _InvalidError as exc:
            raise errors.DefinitionError(
                [f"HourlyPartitions(start={start!r}, end={end!r}) is invalid: {exc}"]
            ) from None

    def _accepted(self) -> str:
        example = self.start.replace(tzinfo=None).isoformat(timespec="minutes")
        return (
            f"an aware datetime on the hour such as {self.start.isoformat()!r}, or a wall time "
            f"in {self.timezone} such as {example!r}"
        )

    @cached_property
    def _start_utc(self) -> datetime:
        return self.start.astimezone(UTC)

    def _instant(self, value: object) -> datetime:
        """An aware UTC datetime from a datetime or ISO text (naive: a wall time in the zone)."""
        if type(value) is str:
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise _InvalidError("the text is not a datetime like 2025-01-01T03:00") from None
        if not isinstance(value, datetime):
            raise _InvalidError(f"expected a datetime, got {article(type(value).__name__)}")
        value = datetime(  # drops datetime subclasses (pandas.Timestamp), which encode() refuses
            *value.timetuple()[:6], value.microsecond, tzinfo=value.tzinfo, fold=value.fold
        )
        if value.utcoffset() is None:
            return _localize(value.replace(tzinfo=None), self.zone)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise _InvalidError("it is outside the supported datetime range") from None

    def _aligned(self, value: object) -> datetime:
        utc = self._instant(value)
        if (utc - self._start_utc) % _HOUR:
            raise _InvalidError(f"it is not on the hour ({_show(self.start)} is a partition)")
        return _local(utc, self.zone)

    def _index(self, value: PartitionValue) -> int:
        if not isinstance(value, datetime):  # pragma: no cover - values are aligned first
            raise _InvalidError(f"expected a datetime, got {_show(value)}")
        return (value.astimezone(UTC) - self._start_utc) // _HOUR

    def _value_at(self, index: int) -> datetime:
        return _local(self._window_start_utc(index), self.zone)

    def _index_containing(self, instant: datetime) -> int:
        return (instant - self._start_utc) // _HOUR

    def _window_start_utc(self, index: int) -> datetime:
        try:
            return self._start_utc + index * _HOUR
        except OverflowError:
            raise _InvalidError("the hour is outside the supported datetime range") from None


def _zone(name: str) -> tzinfo:
    # UTC needs no tz database (Windows has none without the tzdata package).
    return UTC if name == "UTC" else ZoneInfo(name)


def _set_timezone(definition: TimePartitions, name: object) -> None:
    try:
        if type(name) is not str:
            raise ValueError(name)  # noqa: TRY301 - same message as an unknown name
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.DefinitionError(
            [
                f"{type(definition).__name__}(timezone={name!r}): unknown timezone; use an IANA "
                "name such as 'UTC' or 'Europe/Berlin'"
            ]
        ) from None
    object.__setattr__(definition, "timezone", name)


def _set_bounds(definition: TimePartitions, start: date, end: date | None) -> None:
    if end is not None and definition._index(end) < definition._index(start):
        raise _InvalidError("the end comes before the start")
    object.__setattr__(definition, "start", start)
    object.__setattr__(definition, "end", end)


def _local(utc: datetime, zone: tzinfo) -> datetime:
    """``utc`` shown in ``zone``, with the fixed offset in force then (see the module docstring)."""
    try:
        local = utc.astimezone(zone)
        offset = local.utcoffset()
        if offset is None or zone is UTC:
            return local
        name = local.tzname()
        return utc.astimezone(timezone(offset, name) if name else timezone(offset))
    except OverflowError:
        raise _InvalidError("it is outside the supported datetime range") from None


def _localize(naive: datetime, zone: tzinfo) -> datetime:
    """The UTC instant of a wall time in ``zone``; refuses repeated and skipped wall times."""
    try:
        early, late = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
        if early.utcoffset() == late.utcoffset():
            return early.astimezone(UTC)
        exists = early.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    except OverflowError:
        raise _InvalidError("it is outside the supported datetime range") from None
    if exists:
        raise _InvalidError(
            f"{naive.isoformat()} happens twice in {zone} (clocks go back); give the offset: "
            f"{early.isoformat()} or {late.isoformat()}"
        )
    raise _InvalidError(f"{naive.isoformat()} does not exist in {zone} (clocks go forward)")


def _now_utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise errors.InvalidPartitionError(f"now must be an aware datetime, got {_show(now)}")
    return now.astimezone(UTC)


def _as_date(value: PartitionValue) -> date:
    if not isinstance(value, date):  # pragma: no cover - values are aligned first
        raise _InvalidError(f"expected a date, got {_show(value)}")
    return value


def _from_ordinal(ordinal: int) -> date:
    try:
        return date.fromordinal(ordinal)
    except (ValueError, OverflowError):
        raise _InvalidError("the date is outside the supported date range") from None
