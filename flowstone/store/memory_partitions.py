"""Dynamic partition keys of the memory store (``flowstone_dynamic_partitions`` in Postgres),
composed into it as ``store.partitions``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["MemoryDynamicPartitions"]


class MemoryDynamicPartitions:
    """Keys per definition in insertion order (a dict), with the methods of
    :class:`flowstone.store.dynamic_partitions.PostgresDynamicPartitions`."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._keys: dict[str, dict[str, None]] = {}

    def add(
        self,
        definition: str,
        keys: Sequence[str],
        *,
        actor: str | None = None,
        now: datetime | None = None,
        conn: Any = None,
    ) -> int:
        """Add encoded keys (existing ones are kept); the number added."""
        with self._lock:
            known = self._keys.setdefault(definition, {})
            before = len(known)
            known.update(dict.fromkeys(sorted(keys)))
            return len(known) - before

    def remove(self, definition: str, keys: Sequence[str]) -> int:
        """Remove encoded keys; the number removed."""
        with self._lock:
            known = self._keys.get(definition, {})
            removed = [k for k in dict.fromkeys(keys) if k in known]
            for key in removed:
                del known[key]
            return len(removed)

    def list(self, definition: str) -> list[str]:
        """The encoded keys in the order they were added."""
        with self._lock:
            return list(self._keys.get(definition, {}))

    def contains(self, definition: str, key: str) -> bool:
        """Whether ``definition`` has the encoded ``key``."""
        with self._lock:
            return key in self._keys.get(definition, {})
