"""Partition definitions (which partitions an asset has) and partition mappings (which upstream
partitions a downstream partition reads).

Every definition turns friendly input into one canonical typed value (:meth:`validate` for Python
values, :meth:`parse` for CLI text) and refuses anything else with an
:class:`~flowstone.errors.InvalidPartitionError` naming the asset and the accepted form. Values are
stored with :mod:`flowstone.partition_keys`. Definitions and mappings are frozen dataclasses:
equal parameters make equal, hashable objects, which is how :class:`IdentityMapping` checks that an
asset and its upstream are partitioned alike.

Time partitions, in the definition's IANA ``timezone``:

- ``start`` and ``end`` are both **inclusive**: ``end`` is the last partition, not one past it.
- :meth:`TimePartitions.keys` lists the partitions whose time window has *ended* by ``now`` (as
  Dagster does: today's daily partition appears once today is over), capped at ``end``.
  :meth:`~PartitionsDefinition.validate` does not look at the clock: any partition between
  ``start`` and ``end`` is valid, including future ones.
- Window bounds and hourly values are aware datetimes whose ``tzinfo`` is the fixed UTC offset in
  force in the timezone at that instant (``datetime.timezone(+02:00, "CEST")``), not the
  ``ZoneInfo`` itself. Two ``ZoneInfo`` datetimes in the repeated autumn hour compare equal
  because same-zone comparison ignores ``fold`` (PEP 495), which would merge two different
  partitions in a dict; fixed offsets compare and hash by instant.
- Naive datetimes given to an hourly definition are wall times in its timezone; a wall time that
  happens twice (clocks go back) or never (clocks go forward) is refused, not guessed.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from functools import cached_property
from typing import ClassVar, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowstone import errors, partition_keys

__all__ = [
    "AllPartitions",
    "DailyPartitions",
    "HourlyPartitions",
    "IdentityMapping",
    "MonthlyPartitions",
    "MultiPartitions",
    "PartitionMapping",
    "PartitionValue",
    "PartitionsDefinition",
    "StaticPartitions",
    "TimePartitions",
    "TimeWindow",
    "TimeWindowOffset",
    "WeeklyPartitions",
]

PartitionValue: TypeAlias = partition_keys.PartitionValue

_HOUR = timedelta(hours=1)
_MONTH_RE = re.compile(r"[0-9]{4}-[0-9]{2}")
_SHOWN_KEYS = 10  # static keys listed in describe() before "... and N more"


class _InvalidError(Exception):
    """Internal: why a value was refused; public methods turn it into InvalidPartitionError."""


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


class PartitionsDefinition(ABC):
    """The set of partitions of an asset. Subclasses are frozen dataclasses (``==``, hashable)."""

    @abstractmethod
    def keys(self, *, now: datetime | None = None) -> list[PartitionValue]:
        """Every partition value, in order (time partitions: those complete at ``now``)."""

    @abstractmethod
    def describe(self) -> str:
        """A human description used in messages, e.g. ``daily dates from 2025-01-01 (UTC)``."""

    @abstractmethod
    def key_range(self, start: object, end: object, *, asset: str | None = None) -> list[PartitionValue]:
        """The partitions from ``start`` to ``end``, both inclusive and both validated."""

    def validate(self, value: object, *, asset: str | None = None) -> PartitionValue:
        """Return the canonical typed value for ``value`` or raise ``InvalidPartitionError``."""
        try:
            return self._coerce(value)
        except _InvalidError as exc:
            raise self._error(value, str(exc), asset) from None

    def parse(self, text: str, *, asset: str | None = None) -> PartitionValue:
        """Turn CLI text into the canonical typed value, validated.

        Each definition reads its natural text form (``2025-01-01``, ``2025-01-01T03:00``, a static
        key, a JSON array for :class:`MultiPartitions`) and also the exact encoded key as stored in
        SQL (``d:2025-01-01``).
        """
        if type(text) is not str:
            raise self._error(text, f"expected text, got {type(text).__name__}", asset)
        try:
            return self._parse_text(text)
        except _InvalidError as exc:
            raise self._error(text, str(exc), asset) from None

    @abstractmethod
    def _coerce(self, value: object) -> PartitionValue:
        """The canonical value, or raise _InvalidError with the reason."""

    @abstractmethod
    def _parse_text(self, text: str) -> PartitionValue:
        """The canonical value for CLI text, or raise _InvalidError with the reason."""

    @abstractmethod
    def _accepted(self) -> str:
        """The accepted forms, e.g. "a date such as date(2025, 1, 1) or '2025-01-01'"."""

    def _error(self, value: object, reason: str, asset: str | None) -> errors.InvalidPartitionError:
        target = f"asset {asset!r}" if asset is not None else "this partitions definition"
        return errors.InvalidPartitionError(
            f"invalid partition {_show(value)} for {target}: {reason}. "
            f"Accepted: {self._accepted()}; the partitions are {self.describe()}",
            asset=asset,
            partition=value if type(value) is str else _show(value),
        )


@dataclass(frozen=True, init=False)
class StaticPartitions(PartitionsDefinition):
    """A fixed list of ``str`` or ``int`` keys, e.g. ``StaticPartitions(["eu", "us"])``.

    ``"1"`` and ``1`` are different keys. ``parse`` reads ``1`` as whichever of the two is a key,
    and asks for the encoded form (``s:1`` or ``i:1``) when both are.
    """

    static_keys: tuple[str | int, ...]

    def __init__(self, keys: Sequence[str | int]) -> None:
        """Check and store the keys (unique, non-empty, exactly str or int, storable)."""
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise errors.DefinitionError(
                [f"StaticPartitions(keys=...) needs a list of keys, got {_show(keys)}"]
            )
        problems: list[str] = []
        plain: list[str | int] = []
        seen: set[str] = set()
        for key in keys:
            value = _plain_key(key)
            if value is None:
                problems.append(f"static partition key {_show(key)} is not a str or int")
                continue
            try:
                encoded = partition_keys.encode(value)
            except errors.InvalidPartitionError as exc:
                problems.append(f"static partition key {_show(key)} cannot be stored: {exc.message}")
                continue
            if encoded in seen:
                problems.append(f"static partition key {_show(key)} appears more than once")
            seen.add(encoded)
            plain.append(value)
        if not keys:
            problems.append("StaticPartitions needs at least one key")
        if problems:
            raise errors.DefinitionError(problems)
        object.__setattr__(self, "static_keys", tuple(plain))

    def __repr__(self) -> str:
        return f"StaticPartitions({list(self.static_keys)!r})"

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {partition_keys.encode(key): i for i, key in enumerate(self.static_keys)}

    def keys(self, *, now: datetime | None = None) -> list[PartitionValue]:
        """The keys in declared order (``now`` does not matter)."""
        return list(self.static_keys)

    def describe(self) -> str:
        """E.g. ``static keys 'eu', 'us'``."""
        shown = ", ".join(repr(key) for key in self.static_keys[:_SHOWN_KEYS])
        hidden = len(self.static_keys) - _SHOWN_KEYS
        more = f" and {hidden} more ({len(self.static_keys)} keys)" if hidden > 0 else ""
        return f"static keys {shown}{more}"

    def key_range(self, start: object, end: object, *, asset: str | None = None) -> list[PartitionValue]:
        """The keys from ``start`` to ``end`` inclusive, in declared order."""
        first, last = self.validate(start, asset=asset), self.validate(end, asset=asset)
        i, j = self._positions[partition_keys.encode(first)], self._positions[partition_keys.encode(last)]
        if i > j:
            raise self._error(end, f"the end comes before the start {first!r} in key order", asset)
        return list(self.static_keys[i : j + 1])

    def _coerce(self, value: object) -> PartitionValue:
        key = _plain_key(value)
        if key is None:
            raise _InvalidError(f"a static key is a str or int, not a {type(value).__name__}")
        position = self._positions.get(partition_keys.encode(key))
        if position is None:
            names = [k for k in self.static_keys if isinstance(k, str)]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _InvalidError(f"not one of the static keys{hint}")
        return self.static_keys[position]

    def _parse_text(self, text: str) -> PartitionValue:
        found = self._matches(text)
        if len(found) > 1:
            # Point at a text that selects each key alone: the key itself or its encoded form.
            options = []
            for encoded, key in found.items():
                texts = [t for t in (str(key), encoded) if list(self._matches(t)) == [encoded]]
                options.append(f"{key!r}" + (f" (write {texts[0]!r})" if texts else ""))
            raise _InvalidError(f"the text matches several keys: {', '.join(options)}")
        if not found:
            return self._coerce(text)  # raises with the "did you mean" hint
        return next(iter(found.values()))

    def _matches(self, text: str) -> dict[str, str | int]:
        """The keys (by encoded form) that ``text`` can mean: itself, a decimal, an encoded key."""
        found: dict[str, str | int] = {}
        for candidate in (text, _canonical_int(text), _decoded(text)):
            if type(candidate) in (str, int):
                encoded = partition_keys.encode(candidate)
                if encoded in self._positions:
                    found[encoded] = self.static_keys[self._positions[encoded]]
        return found

    def _accepted(self) -> str:
        return "one of the static keys (str or int); in text, the key itself or its encoded form"


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
        return f"{self._form} such as {self.start!r} or {self.start.isoformat()!r}{month}"

    def _aligned(self, value: object) -> date:
        if type(value) is str:
            text = value + "-01" if self._month_text and _MONTH_RE.fullmatch(value) else value
            try:
                value = date.fromisoformat(text)
            except ValueError:
                raise _InvalidError("the text is not a date like 2025-01-01") from None
        if isinstance(value, datetime) or not isinstance(value, date):
            raise _InvalidError(f"expected a date, got a {type(value).__name__}")
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
            raise _InvalidError(f"expected a datetime, got a {type(value).__name__}")
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


@dataclass(frozen=True, init=False)
class MultiPartitions(PartitionsDefinition):
    """The product of named dimensions; values are tuples in the dimensions' order.

    ``MultiPartitions({"date": DailyPartitions("2025-01-01"), "region": StaticPartitions(["eu",
    "us"])})`` has values like ``(date(2025, 1, 1), "eu")``. ``validate`` also takes a mapping
    ``{"date": ..., "region": ...}``; ``parse`` takes a JSON array (``'["2025-01-01", "eu"]'``) or
    object, or the encoded key. A ``|``-separated form is deliberately not offered: keys may
    contain ``|``.
    """

    dimensions: tuple[tuple[str, PartitionsDefinition], ...]

    def __init__(self, dimensions: Mapping[str, PartitionsDefinition]) -> None:
        """``dimensions`` maps each dimension name to its definition (order matters)."""
        if not isinstance(dimensions, Mapping) or not dimensions:
            raise errors.DefinitionError(
                ["MultiPartitions needs a non-empty mapping of dimension name to definition"]
            )
        problems = [
            f"MultiPartitions dimension {name!r} must be a non-empty str name with a "
            f"partitions definition, got {_show(definition)}"
            for name, definition in dimensions.items()
            if type(name) is not str or not name or not isinstance(definition, PartitionsDefinition)
        ]
        if problems:
            raise errors.DefinitionError(problems)
        object.__setattr__(self, "dimensions", tuple(dimensions.items()))

    @property
    def names(self) -> tuple[str, ...]:
        """The dimension names, in order."""
        return tuple(name for name, _ in self.dimensions)

    def keys(self, *, now: datetime | None = None) -> list[PartitionValue]:
        """Every combination; the first dimension varies slowest."""
        return list(itertools.product(*(d.keys(now=now) for _, d in self.dimensions)))

    def describe(self) -> str:
        """E.g. ``multi-partitions (date: daily dates from ...; region: static keys 'eu')``."""
        return "multi-partitions (" + "; ".join(f"{n}: {d.describe()}" for n, d in self.dimensions) + ")"

    def key_range(self, start: object, end: object, *, asset: str | None = None) -> list[PartitionValue]:
        """Every combination inside the box from ``start`` to ``end`` (per dimension inclusive)."""
        first, last = self.validate(start, asset=asset), self.validate(end, asset=asset)
        ranges: list[list[PartitionValue]] = []
        for (name, definition), low, high in zip(self.dimensions, _tuple(first), _tuple(last), strict=True):
            try:
                ranges.append(definition.key_range(low, high))
            except errors.InvalidPartitionError as exc:
                raise self._error((start, end), f"dimension {name!r}: {exc.message}", asset) from None
        return list(itertools.product(*ranges))

    def _coerce(self, value: object) -> PartitionValue:
        if type(value) is str:
            return self._parse_text(value)
        if isinstance(value, Mapping):
            if set(value) != set(self.names) or len(value) != len(self.names):
                raise _InvalidError(f"the mapping's keys must be exactly {list(self.names)}")
            items = [value[name] for name in self.names]
        elif isinstance(value, tuple | list):
            if len(value) != len(self.dimensions):
                raise _InvalidError(f"expected {len(self.dimensions)} values, got {len(value)}")
            items = list(value)
        else:
            raise _InvalidError(f"expected a tuple or mapping, got a {type(value).__name__}")
        result: list[PartitionValue] = []
        for (name, definition), item in zip(self.dimensions, items, strict=True):
            try:
                result.append(definition._coerce(item))
            except _InvalidError as exc:
                raise _InvalidError(f"dimension {name!r}: {_show(item)} is invalid: {exc}") from None
        return tuple(result)

    def _parse_text(self, text: str) -> PartitionValue:
        decoded = _decoded(text)
        if isinstance(decoded, tuple):
            return self._coerce(decoded)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, list):
            return self._coerce(tuple(data))
        if isinstance(data, dict):
            return self._coerce(data)
        raise _InvalidError("the text is not a JSON array or object of the dimensions' values")

    def _accepted(self) -> str:
        example = json.dumps([f"<{name}>" for name in self.names])
        return (
            f"a tuple ({', '.join(self.names)}) with one value per dimension, a mapping by dimension "
            f"name, or in text a JSON array such as {example!r}"
        )


_Definition: TypeAlias = PartitionsDefinition | None  # None: the asset is not partitioned


class PartitionMapping(ABC):
    """How a downstream partition reads an upstream asset's partitions."""

    def upstream_values(
        self,
        downstream: PartitionValue | None,
        downstream_def: _Definition,
        upstream_def: _Definition,
        *,
        now: datetime | None = None,
    ) -> list[PartitionValue | None]:
        """The upstream partition values (``None``: unpartitioned) that ``downstream`` reads.

        Raises ``InvalidPartitionError`` with the :meth:`check` sentence when the definitions do
        not fit this mapping.
        """
        problem = self.check(downstream_def, upstream_def)
        if problem is not None:
            raise errors.InvalidPartitionError(problem)
        return self._upstream(downstream, upstream_def, now)

    def is_multi(self) -> bool:
        """True when the input receives a dict ``{partition_value: loaded value}``."""
        return False

    @abstractmethod
    def check(self, downstream_def: _Definition, upstream_def: _Definition) -> str | None:
        """``None`` when the definitions fit this mapping, else one sentence saying why not."""

    @abstractmethod
    def _upstream(
        self, downstream: PartitionValue | None, upstream: _Definition, now: datetime | None
    ) -> list[PartitionValue | None]:
        """upstream_values() once check() passed."""


@dataclass(frozen=True)
class IdentityMapping(PartitionMapping):
    """The default: partition ``p`` reads upstream partition ``p`` (definitions must be equal).

    An unpartitioned upstream is read by every downstream partition, and by an unpartitioned
    downstream, as ``[None]``. An unpartitioned downstream cannot read a partitioned upstream.
    """

    def check(self, downstream_def: _Definition, upstream_def: _Definition) -> str | None:
        """Equal definitions, or an unpartitioned upstream."""
        if upstream_def is None or downstream_def == upstream_def:
            return None
        if downstream_def is None:
            return (
                f"the upstream is partitioned ({upstream_def.describe()}) but the downstream is "
                "not; use AllPartitions() to read every upstream partition"
            )
        return (
            f"the partitions differ (downstream: {downstream_def.describe()}; upstream: "
            f"{upstream_def.describe()}); use the same definition or give a partition_mapping "
            "such as AllPartitions() or TimeWindowOffset(-1)"
        )

    def _upstream(
        self, downstream: PartitionValue | None, upstream: _Definition, now: datetime | None
    ) -> list[PartitionValue | None]:
        return [None] if upstream is None else [upstream.validate(downstream)]


@dataclass(frozen=True)
class AllPartitions(PartitionMapping):
    """Every upstream partition (``upstream_def.keys(now=now)``): the input is a dict
    ``{partition_value: loaded value}``. The upstream must be partitioned."""

    def is_multi(self) -> bool:
        """Always True."""
        return True

    def check(self, downstream_def: _Definition, upstream_def: _Definition) -> str | None:
        """The upstream must be partitioned; the downstream may be anything."""
        if upstream_def is None:
            return (
                "AllPartitions() needs a partitioned upstream, but the upstream is not "
                "partitioned; drop the mapping to read its single value"
            )
        return None

    def _upstream(
        self, downstream: PartitionValue | None, upstream: _Definition, now: datetime | None
    ) -> list[PartitionValue | None]:
        return [] if upstream is None else list(upstream.keys(now=now))


@dataclass(frozen=True)
class TimeWindowOffset(PartitionMapping):
    """Partition ``p`` reads upstream partition ``p`` shifted by ``n`` periods (-1: the previous).

    Both assets need equal time partitions. The shifted value is returned even when it lies
    before ``start`` or after ``end``; the runner decides what a missing upstream means.
    """

    n: int

    def __post_init__(self) -> None:
        """Refuse a non-int ``n`` (including bool)."""
        if type(self.n) is not int:
            raise errors.DefinitionError([f"TimeWindowOffset(n) needs an int, got {_show(self.n)}"])

    def check(self, downstream_def: _Definition, upstream_def: _Definition) -> str | None:
        """Both definitions must be equal time partitions."""
        if not isinstance(downstream_def, TimePartitions) or not isinstance(upstream_def, TimePartitions):
            return (
                f"TimeWindowOffset({self.n}) needs time partitions on both assets (downstream: "
                f"{_describe(downstream_def)}; upstream: {_describe(upstream_def)})"
            )
        if downstream_def != upstream_def:
            return (
                f"TimeWindowOffset({self.n}) needs equal time partitions (downstream: "
                f"{downstream_def.describe()}; upstream: {upstream_def.describe()})"
            )
        return None

    def _upstream(
        self, downstream: PartitionValue | None, upstream: _Definition, now: datetime | None
    ) -> list[PartitionValue | None]:
        if not isinstance(upstream, TimePartitions):  # pragma: no cover - check() refuses it
            return []
        return [upstream.offset(upstream.validate(downstream), self.n)]


def _describe(definition: PartitionsDefinition | None) -> str:
    return "unpartitioned" if definition is None else definition.describe()


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


def _tuple(value: PartitionValue) -> tuple[PartitionValue, ...]:
    if not isinstance(value, tuple):  # pragma: no cover - MultiPartitions values are tuples
        raise errors.InvalidPartitionError(f"expected a tuple, got {_show(value)}")
    return value


def _plain_key(value: object) -> str | int | None:
    """A str or int (not bool) as a plain str/int, dropping subclasses such as enums."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__index__(value)
    return None


def _canonical_int(text: str) -> int | None:
    try:
        value = partition_keys.decode("i:" + text)
    except errors.InvalidPartitionError:
        return None
    return value if type(value) is int else None


def _decoded(text: str) -> PartitionValue | None:
    """The value of an encoded key, or None when ``text`` is not one."""
    try:
        return partition_keys.decode(text)
    except errors.InvalidPartitionError:
        return None


def _show(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # repr of an int with more than sys.get_int_max_str_digits() digits
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= 120 else text[:120] + "..."
