"""Partition definitions (which partitions an asset has) and partition mappings (which upstream
partitions a downstream partition reads).

Every definition turns friendly input into one canonical typed value (:meth:`validate` for Python
values, :meth:`parse` for CLI text) and refuses anything else with an
:class:`~flowstone.errors.InvalidPartitionError` naming the asset and the accepted form. Values are
stored with :mod:`flowstone.partition_keys`. Definitions and mappings are frozen dataclasses:
equal parameters make equal, hashable objects, which is how :class:`IdentityMapping` checks that an
asset and its upstream are partitioned alike.

This module holds the static and multi-dimensional definitions and re-exports the rest, which live
in :mod:`flowstone.partition_base` (:class:`PartitionsDefinition`),
:mod:`flowstone.time_partitions` (:class:`TimePartitions` and its subclasses, :class:`TimeWindow`)
and :mod:`flowstone.partition_mappings` (:class:`PartitionMapping` and its subclasses). Import
them from here.

Time partitions count in their IANA ``timezone``: ``start`` and ``end`` are both inclusive,
:meth:`TimePartitions.keys` lists only the partitions whose window has ended by ``now``, and
window bounds and hourly values carry fixed UTC offsets; :mod:`flowstone.time_partitions` says
why and gives the rules for naive datetimes.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TypeAlias

from flowstone import errors, partition_keys
from flowstone.partition_base import PartitionsDefinition, _decoded, _InvalidError, _show, article
from flowstone.partition_mappings import (
    AllPartitions,
    IdentityMapping,
    PartitionMapping,
    TimeWindowOffset,
    TimeWindowRange,
)
from flowstone.time_partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    TimePartitions,
    TimeWindow,
    WeeklyPartitions,
)

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
    "TimeWindowRange",
    "WeeklyPartitions",
]

PartitionValue: TypeAlias = partition_keys.PartitionValue

_SHOWN_KEYS = 10  # static keys listed in describe() before "... and N more"


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

    def validate_for_run(self, value: object, *, asset: str | None = None) -> PartitionValue:
        """:meth:`validate`, and each dimension's own rule for runs (a key of a dynamic dimension
        must have been added: its error names the key and the definition)."""
        key = self.validate(value, asset=asset)
        for (_, definition), item in zip(self.dimensions, _tuple(key), strict=True):
            definition.validate_for_run(item, asset=asset)
        return key

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
            raise _InvalidError(f"expected a tuple or mapping, got {article(type(value).__name__)}")
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
