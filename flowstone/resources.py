"""Resources: configured objects (clients, connections) that assets receive (invariant I2).

A resource is either a :class:`Resource` (a pydantic model whose fields are its configuration, with
:meth:`Resource.setup` building the object assets receive) or any plain object, passed through
as-is. A run may override a resource's configuration with JSON (stored in ``flowstone_runs.config``);
:func:`merge_config` applies it so that an absent or ``None`` setting never replaces a default,
identically in the sync and queued paths. :class:`ResourceScope` sets up what one step needs, once,
and tears it down afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from types import TracebackType
from typing import TypeAlias, TypeVar

import pydantic

from flowstone import errors

__all__ = ["Resource", "ResourceOverrides", "ResourceScope", "merge_config"]

logger = logging.getLogger("flowstone.resources")

_R = TypeVar("_R")

ResourceOverrides: TypeAlias = Mapping[str, Mapping[str, object] | None]
"""Per-run configuration overrides by resource name, e.g. ``{"db": {"port": 5433}}``.

A ``None`` entry, an empty mapping and a ``None`` setting all mean "keep the configured value"."""


class Resource(pydantic.BaseModel):
    """Base class of configurable resources: the fields are the configuration.

    ``extra="forbid"`` makes a misspelt setting an error instead of a silently ignored key.
    Override :meth:`setup` to build the object assets receive (a client, a connection pool) and
    :meth:`teardown` to release it::

        class Warehouse(fs.Resource):
            dsn: str
            timeout_s: float = 10.0

            def setup(self) -> psycopg.Connection:
                return psycopg.connect(self.dsn, connect_timeout=self.timeout_s)

            def teardown(self, value: object) -> None:
                value.close()
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    def setup(self) -> object:
        """Build the value assets receive; the default is the resource itself."""
        return self

    def teardown(self, value: object) -> None:
        """Release ``value`` (what :meth:`setup` returned); the default does nothing."""


def merge_config(resource: _R, override: Mapping[str, object] | None, *, name: str | None = None) -> _R:
    """Return ``resource`` with the run's ``override`` settings applied (invariant I2).

    Settings whose override is ``None`` are dropped, so an absent or empty override returns
    ``resource`` itself with its configuration unchanged. Otherwise the result is
    ``type(resource).model_validate({**explicitly set fields, **override})``: fields the resource
    left at their defaults stay defaults. ``name`` (the resource's key) is used in messages.

    Raises :class:`~flowstone.errors.ResourceError` (not retryable) for an unknown setting, an
    invalid value, or a non-empty override of a plain object, which has no configuration.
    """
    label = name or type(resource).__name__
    if override is None:
        return resource
    if not isinstance(override, Mapping):
        raise errors.ResourceError(
            f"the override of resource {label!r} must be a mapping of settings, "
            f"not {type(override).__name__}",
            retryable=False,
        )
    cleaned = {key: value for key, value in override.items() if value is not None}
    if not isinstance(resource, Resource):
        if cleaned:
            raise errors.ResourceError(
                f"resource {label!r} is a plain {type(resource).__name__}, which has no settings "
                f"to override (got {sorted(map(str, cleaned))}); make it a flowstone Resource",
                retryable=False,
            )
        return resource
    fields = type(resource).model_fields
    unknown = sorted(str(key) for key in override if key not in fields)
    if unknown:
        raise errors.ResourceError(
            f"resource {label!r} has no setting {', '.join(map(repr, unknown))}; "
            f"its settings are {sorted(fields)}",
            retryable=False,
            context={"resource": label, "unknown": unknown},
        )
    if not cleaned:
        return resource
    # Only the explicitly set fields are carried over (exclude_unset), taken as attributes so that
    # values such as SecretStr or nested models are not serialised on the way. Keys are the names
    # validation expects (a field's alias when it has one).
    data = {_input_key(key, fields[key]): getattr(resource, key) for key in resource.model_fields_set}
    data.update({_input_key(str(key), fields[str(key)]): value for key, value in cleaned.items()})
    try:
        return type(resource).model_validate(data)
    except pydantic.ValidationError as exc:
        raise errors.ResourceError(
            f"invalid override of resource {label!r}: {exc}",
            retryable=False,
            context={"resource": label},
        ) from None


def _input_key(name: str, field: pydantic.fields.FieldInfo) -> str:
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return field.alias or name


class ResourceScope:
    """Sets up the resources a step needs, once each, and tears them down in reverse order.

    Use it as a context manager around one step (or one in-process run)::

        with ResourceScope(defs.resources, overrides) as scope:
            values = scope.get(asset.resources, asset=asset.name)

    ``configured`` maps names to :class:`Resource` instances or plain objects (passed through
    as-is); ``overrides`` is the run's per-resource configuration (see :func:`merge_config`). An
    override naming a resource that is not configured is refused at once, since a typo would
    otherwise be silently ignored. Safe to share between threads.
    """

    def __init__(self, configured: Mapping[str, object], overrides: ResourceOverrides | None = None) -> None:
        """Prepare the scope; nothing is set up until :meth:`get` asks for it."""
        self._configured = dict(configured)
        self._overrides = dict(overrides or {})
        unknown = sorted(str(key) for key in self._overrides if key not in self._configured)
        if unknown:
            raise errors.ResourceError(
                f"the run config overrides {', '.join(map(repr, unknown))}, which "
                f"{'is not a configured resource' if len(unknown) == 1 else 'are not configured resources'}"
                f"; configured: {sorted(self._configured)}",
                retryable=False,
                context={"unknown": unknown},
            )
        for name, override in self._overrides.items():
            if override:
                # Check the settings now (nothing is set up): a misspelt setting is refused when
                # the run is submitted, not later on a worker.
                merge_config(self._configured[name], override, name=name)
        self._values: dict[str, object] = {}
        self._order: list[tuple[str, Resource, object]] = []  # (name, resource, value), setup order
        self._lock = threading.RLock()
        self._closed = False

    def get(self, names: AbstractSet[str], *, asset: str | None = None) -> dict[str, object]:
        """The set-up values of ``names`` (each set up at most once per scope), by name.

        An unknown name raises :class:`~flowstone.errors.ResourceError` (not retryable). A failing
        :meth:`Resource.setup` raises ResourceError naming the resource and ``asset``, *retryable*
        by default because setup usually reaches a service that may be back on the next attempt (a
        :class:`~flowstone.errors.FlowStoneError` raised by setup keeps its own ``retryable``); the
        failure is not cached, so a later ``get`` tries again. Only the asset that asks for a
        resource is affected by its failure.
        """
        with self._lock:
            if self._closed:
                raise errors.ResourceError("this resource scope is closed", asset=asset, retryable=False)
            return {name: self._value(name, asset) for name in sorted(names)}

    def _value(self, name: str, asset: str | None) -> object:
        if name in self._values:
            return self._values[name]
        if name not in self._configured:
            raise errors.ResourceError(
                f"resource {name!r} is not configured; configured: {sorted(self._configured)}",
                asset=asset,
                retryable=False,
            )
        try:
            resource = merge_config(self._configured[name], self._overrides.get(name), name=name)
        except errors.ResourceError as exc:
            exc.asset = exc.asset or asset
            raise
        if not isinstance(resource, Resource):
            value: object = resource
        else:
            try:
                value = resource.setup()
            except Exception as exc:
                retryable = exc.retryable if isinstance(exc, errors.FlowStoneError) else True
                raise errors.ResourceError(
                    f"setting up resource {name!r} failed: {type(exc).__name__}: {exc}",
                    asset=asset,
                    retryable=retryable,
                    context={"resource": name, "exception_type": type(exc).__name__},
                ) from exc
            self._order.append((name, resource, value))
        self._values[name] = value
        return value

    def close(self) -> None:
        """Tear down every set-up resource in reverse setup order; idempotent.

        A failing teardown is logged (logger ``flowstone.resources``) and the others still run:
        the step's own outcome is already decided and must not be replaced by a cleanup error.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            order, self._order = self._order, []
            self._values.clear()
        for name, resource, value in reversed(order):
            try:
                resource.teardown(value)
            except Exception:
                logger.exception("tearing down resource %r failed", name)

    def __enter__(self) -> ResourceScope:
        """Return the scope itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the scope (see :meth:`close`)."""
        self.close()
