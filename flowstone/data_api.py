"""Data-aware reads and writes of the runtime: ``runtime.check_results(...)`` (asset checks),
``runtime.partitions`` (dynamic partition keys) and ``runtime.staleness(...)`` (code and data
versions). Small values handed the store and definitions they need."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from flowstone import definitions, dynamic_partitions, errors, partition_keys, partitions, planning
from flowstone.dynamic_partitions import DynamicPartitions
from flowstone.store import base as store_base
from flowstone.store import records, staleness
from flowstone.store.postgres import PostgresStore

__all__ = ["CheckResults", "Partitions", "Staleness", "StalenessRow", "stale_plan"]


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
        for found in dynamic_of(defs):
            found.bind(store.partitions)
            self._by_name.setdefault(found.name, found)

    def _definition(self, name: str) -> DynamicPartitions:
        return _dynamic(self._by_name, name)

    def names(self) -> list[str]:
        """The dynamic partitions definitions of the assets."""
        return sorted(self._by_name)

    def add(self, name: str, keys: Sequence[str], *, now: datetime | None = None) -> int:
        """Add ``keys`` to the dynamic partitions ``name`` (keys already there are kept); the number
        of keys added. Many keys go in one statement (100,000 keys take well under two seconds)."""
        encoded = _dynamic(self._by_name, name).check_keys(_listed(keys))
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


def dynamic_of(defs: definitions.Definitions) -> list[DynamicPartitions]:
    """The dynamic partitions definitions of the assets: their own, or a dimension of their
    :class:`~flowstone.partitions.MultiPartitions`."""
    found: list[DynamicPartitions] = []
    todo = [defs.get(name).partitions for name in defs]
    while todo:
        definition = todo.pop()
        if isinstance(definition, DynamicPartitions):
            found.append(definition)
        elif isinstance(definition, partitions.MultiPartitions):
            todo.extend(sub for _, sub in definition.dimensions)
    return found


def _dynamic(by_name: Mapping[str, DynamicPartitions], name: str) -> DynamicPartitions:
    found = by_name.get(name) if isinstance(name, str) else None
    if found is None:
        known = ", ".join(repr(n) for n in sorted(by_name)) or "none"
        raise errors.ConfigurationError(
            f"no asset has DynamicPartitions({name!r}) (dynamic partitions of the definitions: {known})"
        )
    return found


@contextlib.contextmanager
def adding_partitions(
    defs: definitions.Definitions,
    store: store_base.Store,
    keys: Mapping[str, Sequence[str]],
    actor: str,
    conn: Any,
) -> Iterator[None]:
    """A sensor's ``RunRequest(add_partitions=...)``: add the keys on the caller's transaction
    ``conn`` and let the run submitted in the block ask for them (they commit together)."""
    if not keys:
        yield
        return
    dynamic = {p.name: p for p in dynamic_of(defs)}
    encoded = {name: _dynamic(dynamic, name).check_keys(_listed(k)) for name, k in keys.items()}
    for name, k in encoded.items():
        store.partitions.add(name, k, actor=actor, conn=conn)
    with dynamic_partitions.adding(encoded):
        yield


def _listed(keys: Sequence[str]) -> list[object]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence | set | frozenset):
        raise errors.ConfigurationError(f"keys must be a list of strings, not {type(keys).__name__}")
    return list(keys)


StalenessStatus = Literal["fresh", "stale", "missing"]


@dataclass(frozen=True, slots=True)
class StalenessRow:
    """Whether one (asset, partition) is up to date.

    ``status``: ``fresh``; ``stale`` because the asset's code version changed since its latest
    materialization (``"code_version"`` in ``causes``) and/or because an upstream asset has a newer
    data version than the one it read (``"upstream"``, naming them in ``stale_upstreams``); or
    ``missing`` (no succeeded materialization)."""

    asset: str
    partition_key: str
    status: StalenessStatus
    causes: tuple[str, ...] = ()
    stale_upstreams: tuple[str, ...] = ()
    materialization_id: int | None = None
    code_version: str | None = None
    """The code version of the latest materialization."""
    current_code_version: str | None = None
    """The code version of the asset in the definitions."""


class Staleness:
    """``runtime.staleness(asset=None)``: per asset and partition, fresh, stale (code version changed,
    or an upstream has a newer data version than the one read) or missing. On Postgres it is one
    query over ``flowstone_lineage`` (no output is loaded); on the memory store the same rules in
    Python. Missing partitions are listed for definitions whose keys are known (not for a
    partitions class of the project's own read from the snapshot)."""

    def __init__(self, defs: definitions.Definitions, store: store_base.Store) -> None:
        self._defs = defs
        self._store = store

    def __call__(
        self, asset: str | Sequence[str] | None = None, *, include_fresh: bool = True
    ) -> list[StalenessRow]:
        if asset is None:
            names = list(self._defs)
        else:
            names = [self._defs.get(a).name for a in ([asset] if isinstance(asset, str) else asset)]
        if isinstance(self._store, PostgresStore):
            upstream = {up for name in names for up in self._defs.get(name).upstream_names}
            groups = staleness.staleness_latest(self._store.db, names, sorted(upstream))
        else:
            groups = [g for name in names for g in _memory_latest(self._store, name)]
        rows: list[StalenessRow] = []
        expected: dict[int, list[str]] = {}  # per partitions definition: assets often share one
        for name in names:
            current = self._defs.get(name).code_version
            have: set[str] = set()
            for g in (g for g in groups if g.asset == name):
                have.update(g.partition_keys)
                causes = (("code_version",) if g.code_version != current else ()) + (
                    ("upstream",) if g.stale_upstreams else ()
                )
                if causes or include_fresh:
                    status: StalenessStatus = "stale" if causes else "fresh"
                    rows.extend(
                        StalenessRow(
                            name, key, status, causes, g.stale_upstreams, id_, g.code_version, current
                        )
                        for key, id_ in zip(g.partition_keys, g.ids, strict=True)
                    )
            rows.extend(
                StalenessRow(asset=name, partition_key=key, status="missing", current_code_version=current)
                for key in self._expected(name, expected)
                if key not in have
            )
        return rows

    def _expected(self, name: str, known: dict[int, list[str]]) -> list[str]:
        """The partition keys of ``name``'s definition; ``known``: those already listed in this
        call, by partitions definition (the same object serves every asset that shares it)."""
        definition = self._defs.get(name).partitions
        if definition is None:
            return [partition_keys.UNPARTITIONED]
        if id(definition) in known:
            return known[id(definition)]
        try:
            values = definition.keys()
        except errors.FlowStoneError:  # keys unknown here (a custom class read from the snapshot)
            return []
        # daily/weekly/monthly keys are "d:" + the ISO date (ADR 0006); the shortcut keeps ten
        # thousand partitions quick, everything else goes through the codec
        keys = [f"d:{v.isoformat()}" if type(v) is date else partition_keys.encode(v) for v in values]
        known[id(definition)] = keys
        return keys


def data_version(row: records.Materialization) -> str:
    """The data version of a materialization: the one its asset set (metadata ``data_version``),
    else its IO manager's ``content_hash``, else its own id (each materialization a new version).
    The same rule as the generated column ``flowstone_materializations.data_version``."""
    for key in ("data_version", "content_hash"):
        value = row.metadata.get(key)
        if isinstance(value, str):
            return value
    return str(row.id)


def _memory_latest(store: store_base.Store, asset: str) -> list[staleness.LatestGroup]:
    found = []
    for row in store.latest_all(asset):
        stale: set[str] = set()
        for up in store.lineage_upstream(row.id, max_depth=1):
            read = store.get_materialization(up.id)
            newest = store.latest(up.asset, up.partition_key)
            if read is not None and newest is not None and data_version(newest) != data_version(read):
                stale.add(up.asset)
        found.append(
            staleness.LatestGroup(
                row.asset, row.code_version, tuple(sorted(stale)), [row.partition_key], [row.id]
            )
        )
    return found


def stale_plan(defs: definitions.Definitions, store: store_base.Store, plan: planning.Plan) -> planning.Plan:
    """``only_stale=True``: the steps of ``plan`` that are not fresh (stale or missing), and the
    steps of the plan downstream of those (they will read a new upstream). Steps left out read the
    latest materialization of their upstream, as any step whose upstream is not in its run."""
    assets = list(dict.fromkeys(step.asset for step in plan.steps))
    fresh = {(r.asset, r.partition_key) for r in Staleness(defs, store)(assets) if r.status == "fresh"}
    kept: set[planning.StepKey] = set()
    for step in plan.steps:  # upstream first
        if step.key not in fresh or plan.upstream.get(step.key, set()) & kept:
            kept.add(step.key)
    order = [step.key for step in plan.steps if step.key in kept]
    return planning.plan_of_steps(plan.selection, order, plan.edges())


def upstream_token(store: store_base.Store, row: StalenessRow) -> str:
    """The ids of the latest materializations of what ``row``'s materialization read, joined: a
    new upstream materialization gives a new token (the eager automation condition's key)."""
    if row.materialization_id is None:
        return ""
    ids = set()
    for up in store.lineage_upstream(row.materialization_id, max_depth=1):
        newest = store.latest(up.asset, up.partition_key)
        ids.add(newest.id if newest is not None else up.id)
    return "-".join(str(i) for i in sorted(ids))
