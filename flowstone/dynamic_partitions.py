"""Partitions whose keys live in the database: :class:`DynamicPartitions`.

``DynamicPartitions("tenants")`` names a set of string keys kept in ``flowstone_dynamic_partitions``
(Postgres) or in the memory store, added and removed at run time with ``runtime.partitions.add(
"tenants", [...])`` / ``.remove(...)`` or ``flowstone partitions add|remove|list``. The runtime
binds the definition to its store when it is created, so that :meth:`DynamicPartitions.keys` (used
by backfills and the status report) and :meth:`DynamicPartitions.validate_for_run` (a run's key must
have been added) read the current set.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Protocol

from flowstone import errors, partition_keys
from flowstone.partition_base import PartitionsDefinition, PartitionValue, _decoded, _InvalidError

__all__ = ["DynamicPartitions", "KeySource"]

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
"""Names of dynamic partitions definitions (also a CHECK of ``flowstone_dynamic_partitions``)."""

MAX_KEY_LENGTH = 1024
"""The longest key, in characters."""


_ADDING: contextvars.ContextVar[Mapping[str, frozenset[str]]] = contextvars.ContextVar(
    "flowstone_dynamic_partitions_adding", default=MappingProxyType({})
)
"""Encoded keys added in the caller's open transaction (a sensor's run request), by definition."""


@contextlib.contextmanager
def adding(keys: Mapping[str, Sequence[str]]) -> Iterator[None]:
    """Within the block, runs may ask for these encoded keys: they were added in the transaction
    that submits the run, which another connection cannot see yet."""
    current = _ADDING.get()
    merged = {**current, **{name: current.get(name, frozenset()) | set(k) for name, k in keys.items()}}
    token = _ADDING.set(merged)
    try:
        yield
    finally:
        _ADDING.reset(token)


class KeySource(Protocol):
    """Where the keys are (the store's ``partitions``): encoded keys by definition name."""

    def list(self, definition: str) -> list[str]:
        """The encoded keys in the order they were added."""

    def contains(self, definition: str, key: str) -> bool:
        """Whether ``definition`` has the encoded ``key``."""


@dataclass(frozen=True)
class DynamicPartitions(PartitionsDefinition):
    """String keys added and removed at run time, e.g. ``DynamicPartitions("tenants")``.

    Keys are non-empty strings of at most 1024 characters that the partition codec can store (no NUL
    character or lone surrogate). Two definitions with the same name are the same set of keys.
    """

    name: str
    _source: list[KeySource] = field(default_factory=list, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or NAME_PATTERN.fullmatch(self.name) is None:
            raise errors.DefinitionError(
                [
                    f"DynamicPartitions name {self.name!r} is not valid: use letters, digits, '_', '.' "
                    "and '-', starting with a letter or '_', at most 64 characters"
                ]
            )

    def bind(self, source: KeySource) -> None:
        """Read the keys from ``source`` from now on (the runtime does this with its store)."""
        self._source[:] = [source]

    def _keys_source(self) -> KeySource:
        if not self._source:
            raise errors.ConfigurationError(
                f"the keys of DynamicPartitions({self.name!r}) are in the database: use a FlowStone "
                "runtime created with definitions that include this asset"
            )
        return self._source[0]

    def keys(self, *, now: datetime | None = None) -> list[PartitionValue]:
        """The keys, in the order they were added (``now`` does not matter)."""
        return [v for k in self._keys_source().list(self.name) if (v := partition_keys.decode(k)) is not None]

    def describe(self) -> str:
        """E.g. ``dynamic partitions 'tenants'``."""
        return f"dynamic partitions {self.name!r} (keys added with runtime.partitions.add)"

    def key_range(self, start: object, end: object, *, asset: str | None = None) -> list[PartitionValue]:
        """The keys from ``start`` to ``end`` inclusive, in the order they were added."""
        first, last = self.validate(start, asset=asset), self.validate(end, asset=asset)
        keys = self.keys()
        i, j = keys.index(first), keys.index(last)
        if i > j:
            raise self._error((start, end), "the start was added after the end", asset)
        return keys[i : j + 1]

    def check_keys(self, keys: Sequence[object]) -> list[str]:
        """The encoded keys of new keys (they need not exist yet); raises with every bad one."""
        encoded: list[str] = []
        bad: list[str] = []
        for key in keys:
            try:
                encoded.append(partition_keys.encode(self._plain(key)))
            except (_InvalidError, errors.InvalidPartitionError) as exc:
                bad.append(f"{key!r}: {exc}")
        if bad:
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise errors.InvalidPartitionError(f"invalid keys for DynamicPartitions({self.name!r}): {shown}")
        return encoded

    @staticmethod
    def _plain(value: object) -> str:
        if type(value) is not str:
            raise _InvalidError(f"a dynamic partition key is a str, not {type(value).__name__}")
        if not value or len(value) > MAX_KEY_LENGTH:
            raise _InvalidError(f"a dynamic partition key has 1 to {MAX_KEY_LENGTH} characters")
        return value

    def validate_for_run(self, value: object, *, asset: str | None = None) -> PartitionValue:
        """:meth:`validate`, and the key must have been added (a removed key's history stays
        readable, but a run cannot ask for it)."""
        key = self.validate(value, asset=asset)
        encoded = partition_keys.encode(key)
        if encoded in _ADDING.get().get(self.name, ()):
            return key
        if self._source and not self._source[0].contains(self.name, encoded):
            reason = f"{key!r} has not been added (runtime.partitions.add({self.name!r}, [...]))"
            raise self._error(value, reason, asset)
        return key

    def _coerce(self, value: object) -> PartitionValue:
        return self._plain(value)

    def _parse_text(self, text: str) -> PartitionValue:
        decoded = _decoded(text) if text.startswith("s:") else None
        return self._coerce(decoded if isinstance(decoded, str) else text)

    def _accepted(self) -> str:
        return "a key added to this dynamic partitions definition, e.g. 'acme'"
