"""The registry of a project: :class:`Definitions`.

:class:`Definitions` gathers the assets (declared with :func:`flowstone.assets.asset`) with their
resources and IO managers and validates them once, raising one
:class:`~flowstone.errors.DefinitionError` that lists every problem. Afterwards it is the only
place names from outside (job args, SQL rows, the CLI) are resolved, by dict lookup (invariant I3).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

from flowstone import asset_checks as asset_checks_mod
from flowstone import errors, graph
from flowstone import pools as pools_mod
from flowstone.assets import ASSET_NAME_PATTERN, AssetDef, AssetInput, RetryPolicy, asset
from flowstone.io import base as io_base

__all__ = ["AssetDef", "AssetInput", "Definitions", "RetryPolicy", "asset"]


class Definitions:
    """The assets of a project with their resources, IO managers, schedules and sensors.

    Everything is validated once, here; a single :class:`~flowstone.errors.DefinitionError` lists
    every problem (duplicate names, unknown upstream assets, cycles, missing resources or IO
    managers, incompatible partitions). The IO manager key ``"default"`` is always allowed: the
    runtime supplies it unless it is given here.

    Names from outside are resolved only by :meth:`get` (a dict lookup, invariant I3). Iterating
    yields asset names in topological order; :attr:`assets` is read-only and in the same order.
    """

    def __init__(
        self,
        assets: Iterable[AssetDef],
        resources: Mapping[str, object] | None = None,
        io_managers: Mapping[str, io_base.IOManager] | None = None,
        schedules: Sequence[object] = (),
        sensors: Sequence[object] = (),
        *,
        pools: Sequence[pools_mod.Pool | pools_mod.RateLimit] = (),
        asset_checks: Sequence[asset_checks_mod.AssetCheckDef] = (),
    ) -> None:
        resources = dict(resources or {})
        io_managers = dict(io_managers or {})
        problems: list[str] = []
        by_name = _collect(assets, problems)
        problems += _reference_problems(by_name, resources, io_managers)
        deps = {name: {up for up in a.upstream_names if up in by_name} for name, a in by_name.items()}
        asset_graph = graph.AssetGraph(deps)
        problems += [f"cycle: {' -> '.join(cycle)}" for cycle in asset_graph.find_cycles()]
        problems += _partition_problems(by_name)
        pools_by_name = _pools(pools, by_name, problems)
        checks = _checks(by_name, asset_checks, problems)
        if problems:
            raise errors.DefinitionError(problems)
        self.graph: graph.AssetGraph = asset_graph
        """The dependency graph of the assets (names only)."""
        self.assets: Mapping[str, AssetDef] = MappingProxyType(
            {name: by_name[name] for name in asset_graph.topological_order()}
        )
        """Every asset by name, in topological order (read-only)."""
        self.resources: Mapping[str, object] = MappingProxyType(resources)
        """Configured resources by name (read-only)."""
        self.io_managers: Mapping[str, io_base.IOManager] = MappingProxyType(io_managers)
        """Configured IO managers by key (read-only); ``"default"`` may be absent."""
        self.schedules: tuple[object, ...] = tuple(schedules)
        """The schedules, as given."""
        self.sensors: tuple[object, ...] = tuple(sensors)
        """The sensors, as given."""
        self.pools: Mapping[str, pools_mod.Pool | pools_mod.RateLimit] = MappingProxyType(pools_by_name)
        """The concurrency pools and rate limits by name (read-only)."""
        self.checks: Mapping[str, tuple[asset_checks_mod.AssetCheckDef, ...]] = MappingProxyType(checks)
        """The asset checks of each asset that has some (inline and ``asset_checks``), by asset name."""

    def checks_of(self, name: str) -> tuple[asset_checks_mod.AssetCheckDef, ...]:
        """The checks of the asset ``name`` (none: an empty tuple)."""
        return self.checks.get(name, ())

    def get(self, name: str) -> AssetDef:
        """The asset called ``name``: a dict lookup, never an import (invariant I3).

        Unknown names (including any non-string) raise a non-retryable
        :class:`~flowstone.errors.UnknownAssetError` with a suggestion when one is close.
        """
        if not isinstance(name, str):
            raise errors.UnknownAssetError(
                f"asset names are strings, not {type(name).__name__}", retryable=False
            )
        found = self.assets.get(name)
        if found is None:
            raise errors.UnknownAssetError(
                f"unknown asset {graph.shown(name)}{graph.did_you_mean(name, self.assets)}",
                asset=name if ASSET_NAME_PATTERN.fullmatch(name) else None,
                retryable=False,
            )
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.assets

    def __iter__(self) -> Iterator[str]:
        return iter(self.assets)

    def __len__(self) -> int:
        return len(self.assets)

    def __repr__(self) -> str:
        return f"<Definitions: {len(self.assets)} assets>"


def _pools(
    pools: Sequence[pools_mod.Pool | pools_mod.RateLimit],
    by_name: Mapping[str, AssetDef],
    problems: list[str],
) -> dict[str, pools_mod.Pool | pools_mod.RateLimit]:
    """Pools by name; reports non-pools, names given twice and assets naming an unknown pool."""
    found: dict[str, pools_mod.Pool | pools_mod.RateLimit] = {}
    for index, pool in enumerate(pools):
        if not isinstance(pool, pools_mod.Pool | pools_mod.RateLimit):
            problems.append(
                f"pools[{index}] is {type(pool).__name__}, not flowstone.Pool(name, limit=...) or "
                "flowstone.RateLimit(name, limit=..., period_s=...)"
            )
        elif pool.name in found and found[pool.name] != pool:
            problems.append(f"pool {pool.name!r} is defined twice, differently")
        else:
            found[pool.name] = pool
    problems.extend(
        f"asset {name!r} uses pool {pool_name!r}, which is not in Definitions(pools=[...])"
        for name, item in by_name.items()
        for pool_name in item.pools
        if pool_name not in found
    )
    return found


def _origin(item: AssetDef) -> str:
    fn = item.fn
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _collect(assets: Iterable[AssetDef], problems: list[str]) -> dict[str, AssetDef]:
    """Assets by name; reports non-assets and names defined twice (the same object is fine)."""
    by_name: dict[str, AssetDef] = {}
    twice: dict[str, list[AssetDef]] = {}
    if isinstance(assets, AssetDef | str | Mapping):
        problems.append(
            f"assets must be a list of assets, not {type(assets).__name__}; write Definitions(assets=[...])"
        )
        return by_name
    for index, item in enumerate(assets):
        if not isinstance(item, AssetDef):
            hint = "; decorate it with @flowstone.asset" if callable(item) else ""
            problems.append(f"assets[{index}] is {type(item).__name__} {item!r}, not an asset{hint}")
        elif item.name not in by_name:
            by_name[item.name] = item
        elif by_name[item.name] is not item:
            twice.setdefault(item.name, [by_name[item.name]]).append(item)
    for name, defs in twice.items():
        places = ", ".join(_origin(d) for d in defs)
        problems.append(f"asset name {name!r} is defined {len(defs)} times (by {places})")
    return by_name


def _reference_problems(
    by_name: Mapping[str, AssetDef],
    resources: Mapping[str, object],
    io_managers: Mapping[str, object],
) -> list[str]:
    problems = [f"resource names are strings, not {k!r}" for k in resources if not isinstance(k, str)]
    for key, manager in io_managers.items():
        if not isinstance(key, str):
            problems.append(f"io manager keys are strings, not {key!r}")
        elif not isinstance(manager, io_base.IOManager):
            problems.append(
                f"io manager {key!r} is {type(manager).__name__}, not an IOManager "
                "(such as FilesystemIOManager(base_dir=...))"
            )
    for name, item in by_name.items():
        others = [n for n in by_name if n != name]
        problems += [
            f"{name!r} depends on {up!r}, which is not an asset{graph.did_you_mean(up, others)}"
            for up in item.upstream_names
            if up not in by_name
        ]
        problems += [
            f"asset {name!r} needs resource {r!r}, which is not configured"
            f"{graph.did_you_mean(r, [k for k in resources if isinstance(k, str)])}"
            for r in sorted(item.resources)
            if r not in resources
        ]
        if item.io_manager != "default" and item.io_manager not in io_managers:
            keys = [k for k in io_managers if isinstance(k, str)]
            problems.append(
                f"asset {name!r} uses io manager {item.io_manager!r}, which is not configured"
                f"{graph.did_you_mean(item.io_manager, keys)}"
            )
    return problems


def _partition_problems(by_name: Mapping[str, AssetDef]) -> list[str]:
    problems = []
    for name, item in by_name.items():
        for up in item.upstream_names:
            upstream = by_name.get(up)
            if upstream is None:
                continue  # already reported as unknown
            problem = item.mapping_for(up).check(item.partitions, upstream.partitions)
            if problem is not None:
                problems.append(f"{name!r} reads {up!r}: {problem}")
    return problems


def _checks(
    by_name: Mapping[str, AssetDef], given: Sequence[object], problems: list[str]
) -> dict[str, tuple[asset_checks_mod.AssetCheckDef, ...]]:
    """Checks by asset: each asset's inline checks, then ``asset_checks``; reports checks of unknown
    assets and check names given twice for one asset."""
    found: dict[str, list[asset_checks_mod.AssetCheckDef]] = {
        name: list(a.checks) for name, a in by_name.items()
    }
    for index, check in enumerate(given):
        if not isinstance(check, asset_checks_mod.AssetCheckDef) or check.asset is None:
            problems.append(f"asset_checks[{index}] is {check!r}, not an @asset_check(asset=...) function")
        elif check.asset not in by_name:
            problems.append(
                f"check {check.name!r} is of unknown asset {check.asset!r}"
                f"{graph.did_you_mean(check.asset, by_name)}"
            )
        elif check not in found[check.asset]:
            found[check.asset].append(check)
    for name, checks in found.items():
        names = [c.name for c in checks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(f"asset {name!r} has two checks named {', '.join(repr(n) for n in twice)}")
    return {name: tuple(checks) for name, checks in found.items() if checks}
