"""Partition mappings: which upstream partitions a downstream partition reads.

Import the public names from :mod:`flowstone.partitions`, which re-exports them. Mappings are
frozen dataclasses, and so are the definitions: equal parameters make equal, hashable objects,
which is how :class:`IdentityMapping` checks that an asset and its upstream are partitioned alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from flowstone import errors, partition_keys
from flowstone.partition_base import PartitionsDefinition, _show
from flowstone.time_partitions import TimePartitions

__all__ = ["AllPartitions", "IdentityMapping", "PartitionMapping", "TimeWindowOffset", "TimeWindowRange"]

PartitionValue: TypeAlias = partition_keys.PartitionValue

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


@dataclass(frozen=True)
class TimeWindowRange(PartitionMapping):
    """Partition ``p`` reads upstream partitions ``p + start`` to ``p + end`` (both inclusive, in
    periods): a rolling window, e.g. ``TimeWindowRange(-6, 0)`` for the last seven days.

    Partitions outside the definition's bounds are left out (the first day of a seven-day window
    reads one day). The input is a dict ``{partition_value: loaded value}``, or one frame with a
    partition column for a frame-annotated parameter of the Parquet and DuckDB IO managers. Both
    assets need equal time partitions.
    """

    start: int
    end: int = 0

    def __post_init__(self) -> None:
        """Refuse non-int bounds, ``start > end`` and windows of more than 10,000 periods."""
        if type(self.start) is not int or type(self.end) is not int:
            raise errors.DefinitionError(
                [f"TimeWindowRange(start, end) needs ints, got {_show(self.start)}, {_show(self.end)}"]
            )
        if self.start > self.end or self.end - self.start >= 10_000:
            raise errors.DefinitionError(
                [f"TimeWindowRange({self.start}, {self.end}) needs start <= end and at most 10,000 periods"]
            )

    def is_multi(self) -> bool:
        """Always True."""
        return True

    def check(self, downstream_def: _Definition, upstream_def: _Definition) -> str | None:
        """Both definitions must be equal time partitions."""
        return TimeWindowOffset(0).check(downstream_def, upstream_def)

    def _upstream(
        self, downstream: PartitionValue | None, upstream: _Definition, now: datetime | None
    ) -> list[PartitionValue | None]:
        if not isinstance(upstream, TimePartitions):  # pragma: no cover - check() refuses it
            return []
        base = upstream.validate(downstream)
        found: list[PartitionValue | None] = []
        for n in range(self.start, self.end + 1):
            try:
                found.append(upstream.validate(upstream.offset(base, n)))
            except errors.InvalidPartitionError:
                continue  # before start or after end: not part of the window
        return found


def _describe(definition: PartitionsDefinition | None) -> str:
    return "unpartitioned" if definition is None else definition.describe()
