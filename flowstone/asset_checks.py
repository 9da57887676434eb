"""Asset checks: :func:`asset_check`, :class:`AssetCheckDef` and :class:`CheckResult`.

A check is a function of an asset's value (and, optionally, its context) that says whether the value
is acceptable. Checks run right after their asset's function, in the same step attempt; their results
are recorded with the success (``flowstone_check_results``). A failing **blocking** check of severity
``"error"`` keeps the steps downstream from running (they end ``skipped``, naming the check); a
failing check of severity ``"warning"``, or a non-blocking one, is only recorded.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, overload

from flowstone import context, errors, graph

__all__ = ["AssetCheckDef", "CheckResult", "Severity", "asset_check"]

Severity = Literal["error", "warning"]
SEVERITIES: tuple[str, ...] = ("error", "warning")
CheckFn = Callable[..., Any]


@dataclass(frozen=True)
class CheckResult:
    """What a check returns: whether the value passed, with optional JSON ``metadata`` and a
    ``description``. A check may also return a plain ``bool``."""

    passed: bool
    metadata: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    description: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.passed, bool):
            raise TypeError(f"CheckResult.passed must be a bool, not {type(self.passed).__name__}")
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"CheckResult.metadata must be a mapping, not {type(self.metadata).__name__}")


@dataclass(frozen=True, eq=False, repr=False)
class AssetCheckDef:
    """A declared check of one asset. Build it with :func:`asset_check`; calling it calls the
    function (for unit tests)."""

    name: str
    fn: CheckFn
    asset: str | None
    """The checked asset; ``None`` until a check declared inline (``@asset(checks=[...])``) is
    attached to its asset."""
    blocking: bool = False
    severity: Severity = "error"
    description: str | None = None
    context_param: str | None = None
    value_param: str | None = None

    @property
    def key(self) -> str:
        """``asset:check`` (checks are named per asset)."""
        return f"{self.asset}:{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the check function itself."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<AssetCheckDef {self.asset}:{self.name}>"


@overload
def asset_check(
    fn: CheckFn,
    *,
    asset: str | None = ...,
    name: str | None = ...,
    blocking: bool = ...,
    severity: Severity = ...,
    description: str | None = ...,
) -> AssetCheckDef: ...
@overload
def asset_check(
    fn: None = None,
    *,
    asset: str | None = ...,
    name: str | None = ...,
    blocking: bool = ...,
    severity: Severity = ...,
    description: str | None = ...,
) -> Callable[[CheckFn], AssetCheckDef]: ...
def asset_check(
    fn: CheckFn | None = None,
    *,
    asset: str | None = None,
    name: str | None = None,
    blocking: bool = False,
    severity: Severity = "error",
    description: str | None = None,
) -> AssetCheckDef | Callable[[CheckFn], AssetCheckDef]:
    """Declare a check of ``asset``: ``@asset_check(asset="orders", blocking=True)``.

    The function receives the asset's value through its one parameter that is not the context (a
    parameter named ``context`` or annotated :class:`~flowstone.context.AssetContext` receives the
    step's context) and returns a :class:`CheckResult` or a ``bool``. A check that raises is a
    failed check with the error recorded, never a failed step. ``asset`` may be left out for a
    check given inline (``@asset(checks=[...])``). Pass checks with an ``asset`` to
    ``Definitions(asset_checks=[...])``.
    """

    def build(f: CheckFn) -> AssetCheckDef:
        return _build(
            f, asset=asset, name=name, blocking=blocking, severity=severity, description=description
        )

    return build if fn is None else build(fn)


def _build(
    fn: CheckFn,
    *,
    asset: str | None,
    name: str | None,
    blocking: bool,
    severity: str,
    description: str | None,
) -> AssetCheckDef:
    if isinstance(fn, AssetCheckDef) or not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        raise errors.DefinitionError([f"@asset_check decorates a function, not {type(fn).__name__} ({fn!r})"])
    check_name = name if name is not None else fn.__name__
    problems: list[str] = []
    if not isinstance(check_name, str) or graph.ASSET_NAME_PATTERN.fullmatch(check_name) is None:
        problems.append(f"check name {check_name!r} is not valid: use letters, digits and '_' (at most 128)")
    if asset is not None and (
        not isinstance(asset, str) or graph.ASSET_NAME_PATTERN.fullmatch(asset) is None
    ):
        problems.append(f"check {check_name!r}: asset {asset!r} is not an asset name")
    if severity not in SEVERITIES:
        problems.append(f"check {check_name!r}: severity must be 'error' or 'warning', not {severity!r}")
    if not isinstance(blocking, bool):
        problems.append(f"check {check_name!r}: blocking must be True or False, not {blocking!r}")
    context_param, value_params = _parameters(fn)
    if len(value_params) > 1:
        problems.append(
            f"check {check_name!r} takes {len(value_params)} value parameters ({', '.join(value_params)}); "
            "a check receives its asset's value through one parameter (and the context through another)"
        )
    if problems:
        raise errors.DefinitionError(problems, asset=asset)
    return AssetCheckDef(
        name=check_name,
        fn=fn,
        asset=asset,
        blocking=blocking,
        severity=typing.cast("Severity", severity),
        description=description if description is not None else inspect.getdoc(fn),
        context_param=context_param,
        value_param=value_params[0] if value_params else None,
    )


def _parameters(fn: CheckFn) -> tuple[str | None, list[str]]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to parameter names
        hints = {}
    context_param = None
    values = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.default is not param.empty:
            continue
        hint = hints.get(param.name)
        if param.name == "context" or (isinstance(hint, type) and issubclass(hint, context.AssetContext)):
            context_param = param.name
        else:
            values.append(param.name)
    return context_param, values


def attach(asset: str, checks: object) -> tuple[AssetCheckDef, ...]:
    """The inline checks of ``@asset(checks=[...])`` bound to ``asset``; raises on anything else."""
    if checks is None:
        return ()
    if not isinstance(checks, Iterable) or isinstance(checks, str | Mapping | AssetCheckDef):
        raise errors.DefinitionError([f"asset {asset!r}: checks must be a list of @asset_check functions"])
    items: list[object] = list(checks)
    bad = [repr(c) for c in items if not isinstance(c, AssetCheckDef) or c.asset not in (None, asset)]
    if bad:
        raise errors.DefinitionError(
            [f"asset {asset!r}: checks holds {', '.join(bad)}; give @asset_check functions of this asset"],
            asset=asset,
        )
    return tuple(
        c if c.asset == asset else dataclasses.replace(c, asset=asset)
        for c in items
        if isinstance(c, AssetCheckDef)
    )
