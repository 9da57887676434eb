"""The typed JSON value codec (invariant I4): how asset outputs become text and back.

Plain JSON values (``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` and ``dict`` with
``str`` keys) encode as themselves. Other supported values become tagged objects
``{"$fs": "<tag>", "v": ...}``:

=============  ==============================================================================
tag            value
=============  ==============================================================================
``date``       ``date.isoformat()``
``datetime``   ``datetime.isoformat()`` (naive or aware); a ``zoneinfo.ZoneInfo`` zone also
               stores ``"tz": "<key>"`` and, for the second of two repeated wall times,
               ``"fold": 1``, so the value comes back with the same zone and wall time
``time``       ``time.isoformat()``, with ``"tz"``/``"fold"`` as for ``datetime``
``decimal``    ``str(Decimal)`` (exact, keeps the exponent)
``uuid``       the canonical hyphenated string
``bytes``      standard base64
``tuple``      list of encoded items
``set``        list of encoded items, sorted by their encoded text (deterministic output)
``frozenset``  as ``set``
``map``        a ``dict`` with any non-``str`` key: ``[[key, value], ...]`` in dict order
``dict``       a ``dict`` with ``str`` keys that itself has a ``"$fs"`` key (escaped so that
               decoding is unambiguous)
``model``      a pydantic ``BaseModel``: ``model_dump(mode="json", by_alias=True,
               round_trip=True)``, stored as plain JSON
=============  ==============================================================================

Decoding never imports anything named by the stored data: a ``model`` decodes to the plain JSON it
was dumped to, and only a ``type_hint`` supplied by the code (e.g. ``list[Event]``) turns it back
into model instances through ``pydantic.TypeAdapter``. ``Enum`` members encode as their ``value``
and subclasses of ``str``/``int``/``float``/``list``/``tuple``/``dict`` as their base type; the
``type_hint`` restores them. Anything else raises :class:`~flowstone.errors.OutputNotSerializableError`
naming the type and where it sits (``value["rows"][3]``). Nothing is ever pickled or evaluated.
"""

from __future__ import annotations

import base64
import decimal
import enum
import hashlib
import json
import math
import uuid
from datetime import date, datetime, time, tzinfo
from zoneinfo import ZoneInfo

import pydantic

from flowstone import errors
from flowstone.codec_decode import JSON, TAG, from_jsonable, key_path, loads

__all__ = ["JSON", "TAG", "content_hash", "dumps", "from_jsonable", "loads", "to_jsonable"]

_SEPARATORS = (",", ":")


# --------------------------------------------------------------------------------------- encode


def to_jsonable(value: object) -> JSON:
    """Encode ``value`` as a JSON-compatible tree (see the module docstring for the tags).

    Raises :class:`~flowstone.errors.OutputNotSerializableError` naming the unsupported Python type
    and its path inside ``value``; the caller adds the asset and partition.
    """
    try:
        return _Encoder().encode(value, "value")
    except RecursionError:
        raise errors.OutputNotSerializableError(
            "value is nested too deeply for the JSON codec", context={"path": "value"}
        ) from None


def dumps(value: object) -> str:
    """Encode ``value`` as canonical JSON text: dict order kept, UTF-8 text, compact separators.

    The same value always gives the same text (sets are sorted), which lets IO managers detect an
    idempotent re-write of a version.
    """
    return _dump_tree(to_jsonable(value))


def content_hash(value: object) -> str | None:
    """``sha256:<hex>`` of ``value``'s canonical JSON (this codec's tree with sorted keys, compact,
    UTF-8): equal values hash equal in any process (never Python's ``hash()``, which is salted per
    process), whatever IO manager stores them. ``None`` for values the codec does not encode (e.g.
    DataFrames, whose IO managers record their own ``content_hash``)."""
    try:
        text = json.dumps(
            to_jsonable(value), ensure_ascii=False, separators=_SEPARATORS, allow_nan=False, sort_keys=True
        )
    except (errors.OutputNotSerializableError, ValueError):
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _dump_tree(tree: JSON) -> str:
    try:
        return json.dumps(tree, ensure_ascii=False, separators=_SEPARATORS, allow_nan=False)
    except ValueError as exc:  # e.g. an int beyond sys.get_int_max_str_digits()
        raise errors.OutputNotSerializableError(
            f"value cannot be written as JSON: {exc}", context={"path": "value"}
        ) from exc


def _not_serializable(path: str, value: object, why: str | None = None) -> errors.FlowStoneError:
    kind = type(value)
    type_name = f"{kind.__module__}.{kind.__qualname__}"
    reason = why or (
        f"type {type_name!r} is not supported by the JSON codec (supported: JSON values, date, "
        "datetime, time, Decimal, UUID, bytes, tuple, set, frozenset, dict with any hashable keys, "
        "Enum, pydantic models); convert it or use an IO manager that accepts it"
    )
    return errors.OutputNotSerializableError(
        f"cannot encode {path}: {reason}", context={"path": path, "type": type_name}
    )


def _check_text(text: str, path: str) -> str:
    # ensure_ascii=False writes lone surrogates as-is; they are not Unicode text, so UTF-8 files and
    # Postgres would reject them later. Refuse them here, where the path is known.
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _not_serializable(
                path, text, f"string contains a lone surrogate at index {exc.start}"
            ) from None
    return text


def _finite(value: float, path: str) -> float:
    if not math.isfinite(value):
        raise _not_serializable(path, value, f"float {value!r} is not finite; JSON has no NaN")
    return value


def _tz_fields(out: dict[str, JSON], zone: tzinfo | None, fold: int) -> dict[str, JSON]:
    if isinstance(zone, ZoneInfo) and zone.key is not None:
        out["tz"] = zone.key
        if fold:
            out["fold"] = fold
    return out


class _Encoder:
    """One walk over a value; remembers the containers on the current path to refuse cycles."""

    def __init__(self) -> None:
        self._active: set[int] = set()

    def encode(self, value: object, path: str) -> JSON:  # noqa: PLR0911, PLR0912 - one branch per type
        kind = type(value)
        if value is None or kind is bool or kind is int:
            return value  # type: ignore[return-value]  # narrowed by the exact type checks above
        if kind is str:
            return _check_text(value, path)  # type: ignore[arg-type]  # kind is str
        if kind is float:
            return _finite(value, path)  # type: ignore[arg-type]  # kind is float
        if isinstance(value, list | tuple | dict | set | frozenset | pydantic.BaseModel):
            return self._container(value, path)
        if isinstance(value, datetime):
            text = value.isoformat()
            return _tz_fields({TAG: "datetime", "v": text}, value.tzinfo, value.fold)
        if isinstance(value, date):
            return {TAG: "date", "v": value.isoformat()}
        if isinstance(value, time):
            return _tz_fields({TAG: "time", "v": value.isoformat()}, value.tzinfo, value.fold)
        if isinstance(value, decimal.Decimal):
            return {TAG: "decimal", "v": str(value)}
        if isinstance(value, uuid.UUID):
            return {TAG: "uuid", "v": str(value)}
        if isinstance(value, bytes):
            return {TAG: "bytes", "v": base64.b64encode(value).decode("ascii")}
        if isinstance(value, enum.Enum):
            return self.encode(value.value, f"{path}.value")
        # Subclasses of the plain scalars (after Enum, which may mix them in) encode as the base.
        if isinstance(value, int):
            return int.__index__(value)
        if isinstance(value, float):
            return _finite(float(value), path)
        if isinstance(value, str):
            return _check_text(str.__str__(value), path)
        raise _not_serializable(path, value)

    def _container(self, value: object, path: str) -> JSON:
        marker = id(value)
        if marker in self._active:
            raise _not_serializable(path, value, "circular reference (the value contains itself)")
        self._active.add(marker)
        try:
            return self._container_body(value, path)
        finally:
            self._active.discard(marker)

    def _container_body(self, value: object, path: str) -> JSON:
        if isinstance(value, pydantic.BaseModel):
            return {TAG: "model", "v": _model_json(value, path)}
        if isinstance(value, list):
            return [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": [self.encode(x, f"{path}[{i}]") for i, x in enumerate(value)]}
        if isinstance(value, set | frozenset):
            items = [self.encode(item, f"{path}{{...}}") for item in value]
            items.sort(key=_dump_tree)
            return {TAG: "set" if isinstance(value, set) else "frozenset", "v": items}
        if not isinstance(value, dict):  # pragma: no cover - the caller checked the type
            raise _not_serializable(path, value)
        if all(isinstance(key, str) for key in value):
            obj: dict[str, JSON] = {
                _check_text(str.__str__(key), path): self.encode(item, key_path(path, key))
                for key, item in value.items()
            }
            return {TAG: "dict", "v": obj} if TAG in obj else obj
        pairs: list[JSON] = [
            [self.encode(key, f"{path} key {key!r}"), self.encode(item, key_path(path, key))]
            for key, item in value.items()
        ]
        return {TAG: "map", "v": pairs}


def _model_json(model: pydantic.BaseModel, path: str) -> JSON:
    try:
        # round_trip drops computed fields (they would fail validation with extra="forbid");
        # by_alias gives the keys that validation expects; warnings="error" refuses values that
        # do not match the field types instead of writing them with a UserWarning.
        dumped = model.model_dump(mode="json", by_alias=True, round_trip=True, warnings="error")
    except (ValueError, TypeError) as exc:  # PydanticSerializationError is a ValueError
        raise _not_serializable(path, model, f"pydantic could not dump the model: {exc}") from exc
    return _plain_json(dumped, path)


def _plain_json(data: object, path: str) -> JSON:
    """Check that ``data`` (a model dump) is plain JSON; it is stored as-is, without tags."""
    if data is None or isinstance(data, bool | int):
        return data
    if isinstance(data, str):
        return _check_text(data, path)
    if isinstance(data, float):
        return _finite(data, path)
    if isinstance(data, list):
        return [_plain_json(item, f"{path}[{i}]") for i, item in enumerate(data)]
    if isinstance(data, dict) and all(isinstance(key, str) for key in data):
        return {key: _plain_json(item, key_path(path, key)) for key, item in data.items()}
    raise _not_serializable(path, data)
