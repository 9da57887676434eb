"""Data-aware reads and writes of the runtime: ``runtime.check_results(...)`` (asset checks) and
``runtime.partitions`` (dynamic partition keys). Small values handed the store they need."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from flowstone import definitions, errors, partition_keys
from flowstone.dynamic_partitions import DynamicPartitions
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["CheckResults", "Partitions"]


class CheckResults:
    """``runtime.check_results(asset=None, check=None, run_id=None, latest=False, limit=100)``: the
    recorded results of asset checks, newest first; ``latest=True``: the latest result of each
    check per asset and partition."""

    def __init__(self, store: store_base.Store) -> None:
        self._store = store

    def __call__(
        self,
        asset: str | None = None,
        *,
        check: str | None = None,
        run_id: str | None = None,
        latest: bool = False,
        limit: int = 100,
    ) -> list[records.CheckResult]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise errors.ConfigurationError(f"limit must be a positive integer, not {limit!r}")
        if latest:
            rows = self._store.checks.latest(asset)
            return [r for r in rows if check is None or r.check_name == check][:limit]
        return self._store.checks.results(asset, check_name=check, run_id=run_id, limit=limit)


class Partitions:
    """``runtime.partitions``: add, remove and list the keys of the dynamic partitions definitions
    (:class:`~flowstone.dynamic_partitions.DynamicPartitions`) of the definitions. Creating it binds
    each such definition to the store, so that backfills, status and validation read its keys."""

    def __init__(self, defs: definitions.Definitions, store: store_base.Store, actor: str) -> None:
        self._store = store
        self._actor = actor
        self._by_name: dict[str, DynamicPartitions] = {}
        for name in defs:
            found = defs.get(name).partitions
            if isinstance(found, DynamicPartitions):
                found.bind(store.partitions)
                self._by_name.setdefault(found.name, found)

    def _definition(self, name: str) -> DynamicPartitions:
        found = self._by_name.get(name) if isinstance(name, str) else None
        if found is None:
            known = ", ".join(repr(n) for n in sorted(self._by_name)) or "none"
            raise errors.ConfigurationError(
                f"no asset has DynamicPartitions({name!r}) (dynamic partitions of the definitions: {known})"
            )
        return found

    def names(self) -> list[str]:
        """The dynamic partitions definitions of the assets."""
        return sorted(self._by_name)

    def add(self, name: str, keys: Sequence[str], *, now: datetime | None = None) -> int:
        """Add ``keys`` to the dynamic partitions ``name`` (keys already there are kept); the number
        of keys added. Many keys go in one statement (100,000 keys take well under two seconds)."""
        encoded = self._definition(name).check_keys(_listed(keys))
        return self._store.partitions.add(name, encoded, actor=self._actor, now=now)

    def remove(self, name: str, keys: Sequence[str]) -> int:
        """Remove ``keys`` from the dynamic partitions ``name``; the number removed. Their
        materializations stay (history is never deleted)."""
        encoded = self._definition(name).check_keys(_listed(keys))
        return self._store.partitions.remove(name, encoded)

    def list(self, name: str) -> list[str]:
        """The keys of the dynamic partitions ``name``, in the order they were added."""
        self._definition(name)
        return [str(partition_keys.decode(k)) for k in self._store.partitions.list(name)]


def _listed(keys: Sequence[str]) -> list[object]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence | set | frozenset):
        raise errors.ConfigurationError(f"keys must be a list of strings, not {type(keys).__name__}")
    return list(keys)
