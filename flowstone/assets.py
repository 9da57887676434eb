"""Declaring assets: the :func:`asset` decorator, :class:`AssetDef` and :class:`RetryPolicy`.

``@asset`` turns a function into an :class:`AssetDef`. Its parameters say what it reads: a
parameter named ``context`` (or annotated :class:`~flowstone.context.AssetContext`) receives the
context, every other parameter receives the output of the asset with the same name. The options
are checked at decoration time; :class:`flowstone.definitions.Definitions` checks how assets fit
together.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, overload

from flowstone import approval_types, context, errors, graph, identifiers
from flowstone import asset_checks as checks_mod
from flowstone import partitions as parts
from flowstone import pools as pools_mod
from flowstone.retry import RetryPolicy

__all__ = ["AssetDef", "AssetInput", "RetryPolicy", "asset"]

_GROUP_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ASSET_NAME_PATTERN = graph.ASSET_NAME_PATTERN
"""Asset names: an ASCII identifier of at most 128 characters (use ``fullmatch``)."""

AssetFn = Callable[..., Any]


@dataclass(frozen=True)
class AssetInput:
    """One parameter of an asset function that receives the output of another asset.

    ``name`` is the parameter, ``asset`` the upstream asset (today always the same name).
    ``mapping`` says which upstream partitions it reads; with
    :class:`~flowstone.partitions.AllPartitions` the parameter receives a dict
    ``{partition_value: output}``. ``type_hint`` is the parameter's annotation (``None`` if none),
    used to validate the loaded value.
    """

    name: str
    asset: str
    mapping: parts.PartitionMapping
    type_hint: object = None


@dataclass(frozen=True, eq=False, repr=False)
class AssetDef:
    """A declared asset: the function and everything FlowStone needs to know to run it.

    Build it with :func:`asset`. Calling an ``AssetDef`` calls the function, so an asset can be
    unit tested directly: ``assert total([1, 2]) == 3``. Two definitions are equal only if they
    are the same object.

    ``inputs`` are the upstream assets passed as arguments; ``deps`` are upstream assets that must
    be materialized first but are not passed (ordering only). ``partition_mappings`` holds the
    explicit mappings given for inputs and deps; :meth:`mapping_for` adds the default.
    """

    name: str
    fn: AssetFn
    inputs: tuple[AssetInput, ...] = ()
    deps: tuple[str, ...] = ()
    partitions: parts.PartitionsDefinition | None = None
    io_manager: str = "default"
    resources: frozenset[str] = frozenset()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    queue: str | None = None
    code_version: str | None = None
    description: str | None = None
    metadata: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    context_param: str | None = None
    return_type: object = None
    partition_mappings: Mapping[str, parts.PartitionMapping] = field(
        default_factory=lambda: MappingProxyType({})
    )
    approval: approval_types.ApprovalGate | None = None
    group: str = "default"
    owners: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    pool_key: pools_mod.PoolKey | None = None
    priority: int = 0
    checks: tuple[checks_mod.AssetCheckDef, ...] = ()
    memoize: bool = False

    @property
    def upstream_names(self) -> tuple[str, ...]:
        """Every upstream asset: the inputs' assets, then the ordering-only ``deps``."""
        names = [i.asset for i in self.inputs]
        return (*names, *(d for d in self.deps if d not in names))

    def mapping_for(self, upstream: str) -> parts.PartitionMapping:
        """The partition mapping towards ``upstream`` (identity unless one was given)."""
        mapping = self.partition_mappings.get(upstream)
        return parts.IdentityMapping() if mapping is None else mapping

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the asset function itself (no context, IO or recording)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<AssetDef {self.name!r}>"


@overload
def asset(
    fn: AssetFn,
    *,
    name: str | None = ...,
    deps: Iterable[str | AssetDef] | str = ...,
    partitions: parts.PartitionsDefinition | None = ...,
    partition_mapping: Mapping[str, parts.PartitionMapping] | None = ...,
    io_manager: str = ...,
    resources: Iterable[str] | str = ...,
    retry: RetryPolicy | None = ...,
    queue: str | None = ...,
    code_version: str | None = ...,
    description: str | None = ...,
    metadata: Mapping[str, object] | None = ...,
    tags: Mapping[str, str] | None = ...,
    approval: approval_types.ApprovalGate | None = ...,
    group: str = ...,
    owners: Iterable[str] = ...,
    pool: str | Iterable[str] = ...,
    pool_key: pools_mod.PoolKey | None = ...,
    priority: int = ...,
    checks: Iterable[checks_mod.AssetCheckDef] | None = ...,
    memoize: bool = ...,
) -> AssetDef: ...
@overload
def asset(
    fn: None = None,
    *,
    name: str | None = ...,
    deps: Iterable[str | AssetDef] | str = ...,
    partitions: parts.PartitionsDefinition | None = ...,
    partition_mapping: Mapping[str, parts.PartitionMapping] | None = ...,
    io_manager: str = ...,
    resources: Iterable[str] | str = ...,
    retry: RetryPolicy | None = ...,
    queue: str | None = ...,
    code_version: str | None = ...,
    description: str | None = ...,
    metadata: Mapping[str, object] | None = ...,
    tags: Mapping[str, str] | None = ...,
    approval: approval_types.ApprovalGate | None = ...,
    group: str = ...,
    owners: Iterable[str] = ...,
    pool: str | Iterable[str] = ...,
    pool_key: pools_mod.PoolKey | None = ...,
    priority: int = ...,
    checks: Iterable[checks_mod.AssetCheckDef] | None = ...,
    memoize: bool = ...,
) -> Callable[[AssetFn], AssetDef]: ...
def asset(
    fn: AssetFn | None = None,
    *,
    name: str | None = None,
    deps: Iterable[str | AssetDef] | str = (),
    partitions: parts.PartitionsDefinition | None = None,
    partition_mapping: Mapping[str, parts.PartitionMapping] | None = None,
    io_manager: str = "default",
    resources: Iterable[str] | str = (),
    retry: RetryPolicy | None = None,
    queue: str | None = None,
    code_version: str | None = None,
    description: str | None = None,
    metadata: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    approval: approval_types.ApprovalGate | None = None,
    group: str = "default",
    owners: Iterable[str] = (),
    pool: str | Iterable[str] = (),
    pool_key: pools_mod.PoolKey | None = None,
    priority: int = 0,
    checks: Iterable[checks_mod.AssetCheckDef] | None = None,
    memoize: bool = False,
) -> AssetDef | Callable[[AssetFn], AssetDef]:
    """Declare an asset. Use as ``@asset``, ``@asset(...)`` or ``asset(fn, ...)``.

    - ``name``: defaults to the function's name; must match ``[A-Za-z_][A-Za-z0-9_]{0,127}``.
    - ``deps``: assets to materialize first without passing their output (names or assets).
    - ``partitions``: a :class:`~flowstone.partitions.PartitionsDefinition`, or ``None``.
    - ``partition_mapping``: ``{upstream name: PartitionMapping}`` for inputs or deps whose
      partitions do not correspond one to one (default :class:`~flowstone.partitions.IdentityMapping`).
    - ``io_manager``: the key of the IO manager that stores the output (``"default"``).
    - ``resources``: names of the resources the function uses through ``context.resources``.
    - ``retry``: a :class:`RetryPolicy` (default: one attempt).
    - ``queue``: the Procrastinate queue for its jobs: ``[a-z_][a-z0-9_]*``, at most 40 bytes.
    - ``code_version``, ``description`` (default: the docstring), ``metadata``, ``tags``.
    - ``approval``: an :class:`~flowstone.approval_types.ApprovalGate`: ask a human before the
      function runs (see ``AssetContext.require_approval``).
    - ``group``: a group name for browsing (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters;
      default ``"default"``); ``owners``: people or teams (strings), e.g. ``["team:data"]``.
    - ``pool``: pools (:class:`~flowstone.pools.Pool`) a step holds a slot of while it runs;
      ``pool_key``: a function of a :class:`~flowstone.pools.PoolContext` giving the key each
      limit applies to (default: one key); ``priority``: -999..999, higher runs first.
    - ``checks``: :func:`~flowstone.asset_checks.asset_check` functions run after each success.
    - ``memoize``: reuse the latest materialization when code version and input data versions are
      unchanged instead of calling the function (:mod:`flowstone.memoize`).

    A parameter with a default value is a plain argument of the function, not an upstream asset.

    Problems with the function or the options raise :class:`~flowstone.errors.DefinitionError`
    listing all of them; a bad queue name raises :class:`~flowstone.errors.InvalidIdentifierError`.
    """
    options = _Options(
        name=name,
        deps=deps,
        partitions=partitions,
        partition_mapping=partition_mapping,
        io_manager=io_manager,
        resources=resources,
        retry=retry,
        queue=queue,
        code_version=code_version,
        description=description,
        metadata=metadata,
        tags=tags,
        approval=approval,
        group=group,
        owners=owners,
        pool=pool,
        pool_key=pool_key,
        priority=priority,
        checks=checks,
        memoize=memoize,
    )
    if fn is None:
        return options.build
    return options.build(fn)


@dataclass(frozen=True)
class _Options:
    """The decorator's options, kept until the function arrives."""

    name: str | None
    deps: Iterable[str | AssetDef] | str
    partitions: parts.PartitionsDefinition | None
    partition_mapping: Mapping[str, parts.PartitionMapping] | None
    io_manager: str
    resources: Iterable[str] | str
    retry: RetryPolicy | None
    queue: str | None
    code_version: str | None
    description: str | None
    metadata: Mapping[str, object] | None
    tags: Mapping[str, str] | None
    approval: approval_types.ApprovalGate | None = None
    group: str = "default"
    owners: Iterable[str] = ()
    pool: str | Iterable[str] = ()
    pool_key: pools_mod.PoolKey | None = None
    priority: int = 0
    checks: Iterable[checks_mod.AssetCheckDef] | None = None
    memoize: bool = False

    def build(self, fn: AssetFn) -> AssetDef:
        """Inspect ``fn`` and return its :class:`AssetDef` (or raise with every problem)."""
        if isinstance(fn, AssetDef):
            raise errors.DefinitionError([f"{fn.name!r} is already an asset; apply @asset once"])
        if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
            raise errors.DefinitionError([f"@asset decorates a function, not {type(fn).__name__} ({fn!r})"])
        name = self.name if self.name is not None else fn.__name__
        problems: list[str] = []
        if not isinstance(name, str) or ASSET_NAME_PATTERN.fullmatch(name) is None:
            hint = "; pass name=..." if self.name is None else ""
            problems.append(
                f"asset name {name!r} is not valid: use letters, digits and '_', starting with a "
                f"letter or '_', at most 128 characters{hint}"
            )
            name = str(name)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            problems.append(f"asset {name!r} is an async function; assets are plain functions")
        hints = _type_hints(fn, name)
        context_params, inputs = self._parameters(fn, name, hints, problems)
        deps = self._deps(name, [i.asset for i in inputs], problems)
        mappings = self._mappings(name, [*(i.asset for i in inputs), *deps], problems)
        inputs = [
            AssetInput(i.name, i.asset, mappings.get(i.asset) or i.mapping, i.type_hint) for i in inputs
        ]
        self._check_options(name, problems)
        if problems:
            raise errors.DefinitionError(problems, asset=name)
        _check_queue(name, self.queue)
        return AssetDef(
            name=name,
            fn=fn,
            inputs=tuple(inputs),
            deps=tuple(deps),
            partitions=self.partitions,
            io_manager=self.io_manager,
            resources=frozenset(_names(self.resources)),
            retry=self.retry if self.retry is not None else RetryPolicy(),
            queue=self.queue,
            code_version=self.code_version,
            description=self.description if self.description is not None else inspect.getdoc(fn),
            metadata=MappingProxyType(dict(self.metadata or {})),
            tags=MappingProxyType(dict(self.tags or {})),
            context_param=context_params[0] if context_params else None,
            return_type=hints.get("return"),
            partition_mappings=MappingProxyType(mappings),
            approval=self.approval,
            group=self.group,
            owners=tuple(self.owners) if not isinstance(self.owners, str) else (self.owners,),
            pools=tuple(dict.fromkeys(_names(self.pool))),
            pool_key=self.pool_key,
            priority=self.priority,
            checks=checks_mod.attach(name, self.checks),
            memoize=self.memoize is True,
        )

    @staticmethod
    def _parameters(
        fn: AssetFn, name: str, hints: Mapping[str, object], problems: list[str]
    ) -> tuple[list[str], list[AssetInput]]:
        context_params: list[str] = []
        inputs: list[AssetInput] = []
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
                problems.append(
                    f"asset {name!r} takes {stars}{param.name}; every parameter must be named "
                    "after the asset it reads (or be the context)"
                )
            elif param.kind is param.POSITIONAL_ONLY:
                problems.append(
                    f"asset {name!r}: parameter {param.name!r} is positional-only; assets are "
                    "called with keyword arguments, remove the '/'"
                )
            elif param.name == "context" or _is_context_type(hints.get(param.name)):
                context_params.append(param.name)
            elif param.default is not param.empty:
                continue  # a plain argument with its default, not an upstream
            else:
                inputs.append(
                    AssetInput(
                        name=param.name,
                        asset=param.name,
                        mapping=parts.IdentityMapping(),
                        type_hint=hints.get(param.name),
                    )
                )
        if len(context_params) > 1:
            listed = ", ".join(repr(p) for p in context_params)
            problems.append(
                f"asset {name!r} has {len(context_params)} context parameters ({listed}); keep one"
            )
        return context_params, inputs

    def _deps(self, name: str, input_names: list[str], problems: list[str]) -> list[str]:
        deps: list[str] = []
        items = [self.deps] if isinstance(self.deps, str) else list(self.deps)
        for dep in items:
            dep_name = dep.name if isinstance(dep, AssetDef) else dep
            if not isinstance(dep_name, str):
                problems.append(
                    f"asset {name!r}: deps holds {type(dep).__name__} {dep!r}; give asset names or assets"
                )
            elif dep_name not in deps and dep_name not in input_names:
                deps.append(dep_name)
        return deps

    def _mappings(
        self, name: str, upstream: list[str], problems: list[str]
    ) -> dict[str, parts.PartitionMapping]:
        given = dict(self.partition_mapping or {})
        for key, mapping in given.items():
            if key not in upstream:
                reads = ", ".join(repr(u) for u in upstream) or "nothing"
                problems.append(
                    f"asset {name!r}: partition_mapping names {key!r}, which is not one of its "
                    f"inputs or deps (it reads {reads}){graph.did_you_mean(str(key), upstream)}"
                )
            if not isinstance(mapping, parts.PartitionMapping):
                problems.append(
                    f"asset {name!r}: partition_mapping[{key!r}] is {type(mapping).__name__}, not "
                    "a PartitionMapping such as AllPartitions() or TimeWindowOffset(-1)"
                )
        return given

    def _check_labels(self, name: str, problems: list[str]) -> None:
        if not isinstance(self.group, str) or _GROUP_PATTERN.fullmatch(self.group) is None:
            problems.append(
                f"asset {name!r}: group {self.group!r} is not valid: use letters, digits and '_', "
                "starting with a letter or '_', at most 64 characters"
            )
        owners = [self.owners] if isinstance(self.owners, str) else list(self.owners)
        if any(not isinstance(o, str) or not o.strip() or len(o) > 200 for o in owners):
            problems.append(f"asset {name!r}: owners are non-empty strings of at most 200 characters")
        if any(not isinstance(p, str) or pools_mod.POOL_NAME.fullmatch(p) is None for p in _names(self.pool)):
            problems.append(f"asset {name!r}: pool names are strings like 'warehouse', got {self.pool!r}")
        if self.pool_key is not None and not callable(self.pool_key):
            problems.append(f"asset {name!r}: pool_key must be a function of the step's PoolContext")
        try:
            pools_mod.check_priority(self.priority, f"asset {name!r}")
        except errors.ConfigurationError as exc:
            problems.append(exc.message)

    def _check_options(self, name: str, problems: list[str]) -> None:
        self._check_labels(name, problems)
        if self.partitions is not None and not isinstance(self.partitions, parts.PartitionsDefinition):
            problems.append(
                f"asset {name!r}: partitions is {type(self.partitions).__name__}, not a "
                "PartitionsDefinition such as DailyPartitions(start=...) or StaticPartitions([...])"
            )
        if not isinstance(self.io_manager, str) or not self.io_manager:
            problems.append(f"asset {name!r}: io_manager must be a non-empty key, not {self.io_manager!r}")
        bad_resources = [r for r in _names(self.resources) if not isinstance(r, str)]
        if bad_resources:
            problems.append(
                f"asset {name!r}: resources are names (strings), not "
                f"{', '.join(repr(r) for r in bad_resources)}"
            )
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            problems.append(
                f"asset {name!r}: retry is {type(self.retry).__name__}, not a RetryPolicy(max_attempts=...)"
            )
        for option, value in (("code_version", self.code_version), ("description", self.description)):
            if value is not None and not isinstance(value, str):
                problems.append(f"asset {name!r}: {option} must be a string, not {type(value).__name__}")
        if self.metadata is not None and not isinstance(self.metadata, Mapping):
            problems.append(f"asset {name!r}: metadata must be a mapping, not {type(self.metadata).__name__}")
        if self.tags is not None:
            if not isinstance(self.tags, Mapping):
                problems.append(
                    f"asset {name!r}: tags must be a mapping of strings, not {type(self.tags).__name__}"
                )
            else:
                bad = [k for k, v in self.tags.items() if not (isinstance(k, str) and isinstance(v, str))]
                if bad:
                    problems.append(
                        f"asset {name!r}: tags map strings to strings; "
                        f"{', '.join(repr(k) for k in bad)} do not"
                    )


def _names(items: Iterable[str] | str) -> list[str]:
    return [items] if isinstance(items, str) else list(items)


def _type_hints(fn: AssetFn, name: str) -> dict[str, object]:
    """The function's annotations, resolved, or a DefinitionError saying which one failed."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # get_type_hints evaluates user annotations: any error is possible
        raise errors.DefinitionError(
            [
                f"asset {name!r}: cannot resolve the annotations of {fn.__qualname__} "
                f"({type(exc).__name__}: {exc}); FlowStone uses them at run time, so import "
                "the types at module level (not only under TYPE_CHECKING) or drop the annotation"
            ],
            asset=name,
        ) from exc


def _is_context_type(hint: object) -> bool:
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return isinstance(hint, type) and issubclass(hint, context.AssetContext)


def _check_queue(name: str, queue: str | None) -> None:
    """Queue names pass the one validator of queue names (:func:`identifiers.validate_queue_name`)."""
    if queue is None:
        return
    try:
        identifiers.validate_queue_name(queue, setting="queue")
    except errors.InvalidIdentifierError:
        raise errors.InvalidIdentifierError(
            f"queue name {queue!r} of asset {name!r} is not allowed: use lowercase letters, "
            f"digits and '_', starting with a letter or '_', at most {identifiers.MAX_QUEUE_NAME_BYTES} "
            "bytes (Procrastinate builds a NOTIFY channel name from it)",
            asset=name,
            context={"queue": queue if isinstance(queue, str) else repr(queue)},
        ) from None
