"""The base class of every partitions definition, and the helpers the partition modules share.

Import the public names from :mod:`flowstone.partitions`, which re-exports them. This module sits
below the others so that :mod:`flowstone.time_partitions` and :mod:`flowstone.partition_mappings`
can subclass and name :class:`PartitionsDefinition` without importing :mod:`flowstone.partitions`
(which imports them): the imports run partition_keys -> partition_base -> time_partitions ->
partition_mappings -> partitions, never the other way.

Every definition turns friendly input into one canonical typed value (:meth:`validate` for Python
values, :meth:`parse` for CLI text) and refuses anything else with an
:class:`~flowstone.errors.InvalidPartitionError` naming the asset and the accepted form.

``_InvalidError``, ``_show`` and ``_decoded`` are private to the four partition modules, which
import them by name rather than through the module: they were one module before it passed the
~600-line limit (STYLE.md section 8), and one ``_InvalidError`` class must cross them all
(:class:`~flowstone.partitions.MultiPartitions` catches it from its dimensions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date, datetime
from typing import TypeAlias

from flowstone import errors, partition_keys

__all__ = ["PartitionValue", "PartitionsDefinition"]

PartitionValue: TypeAlias = partition_keys.PartitionValue


class _InvalidError(Exception):
    """Internal: why a value was refused; public methods turn it into InvalidPartitionError."""


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

    def validate_for_run(self, value: object, *, asset: str | None = None) -> PartitionValue:
        """:meth:`validate` for a partition a run is asked to materialize (dynamic partitions also
        require the key to have been added)."""
        return self.validate(value, asset=asset)

    def parse(self, text: str, *, asset: str | None = None) -> PartitionValue:
        """Turn CLI text into the canonical typed value, validated.

        Each definition reads its natural text form (``2025-01-01``, ``2025-01-01T03:00``, a static
        key, a JSON array for :class:`~flowstone.partitions.MultiPartitions`) and also the exact
        encoded key as stored in SQL (``d:2025-01-01``).
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


def _decoded(text: str) -> PartitionValue | None:
    """The value of an encoded key, or None when ``text`` is not one."""
    try:
        return partition_keys.decode(text)
    except errors.InvalidPartitionError:
        return None


def _show(value: object) -> str:
    """A value as a person writes it: dates and datetimes in ISO form (``2025-01-01``, not
    ``datetime.date(2025, 1, 1)``), everything else as its repr."""
    try:
        text = value.isoformat() if isinstance(value, date | datetime) else repr(value)
    except ValueError:  # repr of an int with more than sys.get_int_max_str_digits() digits
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= 120 else text[:120] + "..."


def article(noun: str) -> str:
    """``an int``, ``a str``: the noun with its indefinite article."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
