"""Decoding of the typed JSON value codec (:mod:`flowstone.codec` describes the format).

Decoding never imports anything named by the stored data: a ``model`` decodes to the plain JSON it
was dumped to, and only a ``type_hint`` supplied by the code turns it back into model instances
through ``pydantic.TypeAdapter``. Nothing is ever pickled or evaluated (I4).
"""

from __future__ import annotations

import base64
import binascii
import decimal
import inspect
import json
import math
import reprlib
import threading
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from typing import TypeAlias, TypeVar
from zoneinfo import ZoneInfo

import pydantic

from flowstone import errors

__all__ = ["JSON", "TAG", "from_jsonable", "key_path", "loads"]

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""A JSON-compatible tree: what :func:`flowstone.codec.to_jsonable` returns and :func:`from_jsonable`
accepts."""

TAG = "$fs"
"""The key that marks a tagged object."""

_DATETIME_KEYS = frozenset({TAG, "v", "tz", "fold"})
_PLAIN_KEYS = frozenset({TAG, "v"})
_T = TypeVar("_T", datetime, time)


def key_path(path: str, key: object) -> str:
    """Where a value sits, e.g. ``value["rows"]``."""
    shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
    return f"{path}[{shown}]"


def loads(text: str | bytes, *, type_hint: object = None) -> object:
    """Decode text written by :func:`dumps` (bytes must be UTF-8).

    With ``type_hint`` (e.g. ``list[Event]``) the decoded value is validated and converted by
    ``pydantic.TypeAdapter(type_hint)``. Malformed text, an unknown tag or a failed validation
    raise :class:`~flowstone.errors.OutputDecodeError`; nothing is guessed.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _decode_error(f"stored output is not UTF-8 text: {exc}") from None
    if not isinstance(text, str):
        raise _decode_error(f"expected str or bytes, got {type(text).__name__}")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _decode_error("stored output is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, int digit limit
        raise _decode_error(f"stored output is not valid JSON: {exc}") from None
    return from_jsonable(data, type_hint=type_hint)


def from_jsonable(data: JSON, *, type_hint: object = None) -> object:
    """Decode a JSON tree made by :func:`to_jsonable`; ``type_hint`` as for :func:`loads`."""
    try:
        value = _decode(data, "value")
    except RecursionError:
        raise _decode_error("stored output is nested too deeply") from None
    if type_hint is None or type_hint is inspect.Parameter.empty:
        return value
    return _validate(value, type_hint)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _decode_error(message: str, path: str | None = None) -> errors.FlowStoneError:
    where = f" at {path}" if path else ""
    return errors.OutputDecodeError(f"{message}{where}", context={"path": path} if path else None)


def _decode(data: object, path: str) -> object:
    if data is None or isinstance(data, bool | int | str):
        return data
    if isinstance(data, float):
        if not math.isfinite(data):
            raise _decode_error(f"float {data!r} is not allowed", path)
        return data
    if isinstance(data, list):
        return [_decode(item, f"{path}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, dict):
        raise _decode_error(f"{type(data).__name__} is not a JSON type", path)
    if TAG not in data:
        return _decode_object(data, path)
    tag = data[TAG]
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise _decode_error(f"unknown tag {TAG}={tag!r}", path)
    allowed = _DATETIME_KEYS if tag in {"datetime", "time"} else _PLAIN_KEYS
    if "v" not in data or not allowed.issuperset(data):
        keys = sorted(str(key) for key in data)
        raise _decode_error(f"tagged object {tag!r} has keys {keys}, expected {sorted(allowed)}", path)
    try:
        return decoder(data, path)
    except errors.OutputDecodeError:
        raise
    except (ValueError, TypeError, KeyError, ArithmeticError, binascii.Error) as exc:
        shown = reprlib.repr(data["v"])  # bounded: the stored value may be huge
        raise _decode_error(f"bad {tag!r} value {shown}: {exc}", path) from None


def _decode_object(data: dict[typing.Any, typing.Any], path: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, item in data.items():
        if not isinstance(key, str):
            raise _decode_error(f"object key {key!r} is not a string", path)
        out[key] = _decode(item, key_path(path, key))
    return out


def _text(data: dict[str, typing.Any]) -> str:
    value = data["v"]
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _items(data: dict[str, typing.Any]) -> list[typing.Any]:
    value = data["v"]
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _with_zone(value: _T, data: dict[str, typing.Any]) -> _T:
    if value.isoformat() != data["v"]:  # 3.11 also accepts "20250101T0000" and the like
        raise ValueError("not the canonical isoformat() text")
    key = data.get("tz")
    fold = data.get("fold", 0)
    if fold not in (0, 1) or isinstance(fold, bool):
        raise ValueError(f"fold must be 0 or 1, got {fold!r}")
    if key is None:
        if "fold" in data:
            raise ValueError("fold is only stored with tz")
        return value
    if not isinstance(key, str):
        raise TypeError(f"tz must be a string, got {type(key).__name__}")
    # ZoneInfo only reads the system/tzdata time zone database; it refuses paths such as "../x".
    # Replacing the zone keeps the stored wall time exactly (also for gaps and repeated hours).
    zoned = value.replace(tzinfo=ZoneInfo(key), fold=fold)
    if zoned.utcoffset() != value.utcoffset():
        raise ValueError(f"the stored UTC offset does not match time zone {key!r}")
    return zoned


def _decode_datetime(data: dict[str, typing.Any], _path: str) -> object:
    return _with_zone(datetime.fromisoformat(_text(data)), data)


def _decode_date(data: dict[str, typing.Any], _path: str) -> object:
    text = _text(data)
    value = date.fromisoformat(text)
    if value.isoformat() != text:  # 3.11 also accepts "20250101" and week dates; refuse them
        raise ValueError("not a canonical ISO date")
    return value


def _decode_time(data: dict[str, typing.Any], _path: str) -> object:
    return _with_zone(time.fromisoformat(_text(data)), data)


def _decode_decimal(data: dict[str, typing.Any], _path: str) -> object:
    text = _text(data)
    value = decimal.Decimal(text)
    if str(value) != text:  # e.g. " 1", "1_000", "1e2": valid Decimal input, not what dumps writes
        raise ValueError("not the canonical str(Decimal) text")
    return value


def _decode_uuid(data: dict[str, typing.Any], _path: str) -> object:
    text = _text(data)
    value = uuid.UUID(text)
    if str(value) != text:
        raise ValueError("not a canonical lower-case hyphenated UUID")
    return value


def _decode_bytes(data: dict[str, typing.Any], _path: str) -> object:
    return base64.b64decode(_text(data).encode("ascii"), validate=True)


def _decode_tuple(data: dict[str, typing.Any], path: str) -> object:
    return tuple(_decode(item, f"{path}[{i}]") for i, item in enumerate(_items(data)))


def _decode_set(data: dict[str, typing.Any], path: str) -> object:
    items = [_decode(item, f"{path}{{...}}") for item in _items(data)]
    return set(items) if data[TAG] == "set" else frozenset(items)


def _decode_map(data: dict[str, typing.Any], path: str) -> object:
    out: dict[object, object] = {}
    for i, pair in enumerate(_items(data)):
        if not isinstance(pair, list) or len(pair) != 2:
            raise _decode_error(f"map entry {i} is not a [key, value] pair", path)
        key = _decode(pair[0], f"{path} key {i}")
        out[key] = _decode(pair[1], key_path(path, key))
    return out


def _decode_dict(data: dict[str, typing.Any], path: str) -> object:
    value = data["v"]
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return _decode_object(value, path)


def _decode_model(data: dict[str, typing.Any], path: str) -> object:
    # The dump is plain JSON: return it untouched (no tag interpretation inside). Only a type_hint
    # from the code turns it back into a model; the stored data never names a class to import.
    value = data["v"]
    _check_plain(value, path)
    return value


def _check_plain(value: object, path: str) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _decode_error(f"object key {key!r} is not a string", path)
            _check_plain(item, key_path(path, key))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _decode_error(f"float {value!r} is not allowed", path)
    elif not (value is None or isinstance(value, bool | int | str)):
        raise _decode_error(f"{type(value).__name__} is not a JSON type", path)


_DECODERS: dict[str, Callable[[dict[str, typing.Any], str], object]] = {
    "datetime": _decode_datetime,
    "date": _decode_date,
    "time": _decode_time,
    "decimal": _decode_decimal,
    "uuid": _decode_uuid,
    "bytes": _decode_bytes,
    "tuple": _decode_tuple,
    "set": _decode_set,
    "frozenset": _decode_set,
    "map": _decode_map,
    "dict": _decode_dict,
    "model": _decode_model,
}


# ----------------------------------------------------------------------------------- type hints

_ADAPTERS: dict[object, pydantic.TypeAdapter[object]] = {}
_ADAPTERS_LOCK = threading.Lock()


def _adapter(type_hint: object) -> pydantic.TypeAdapter[object]:
    if isinstance(type_hint, str | typing.ForwardRef):
        # A string annotation would make pydantic evaluate it; callers must resolve annotations
        # (typing.get_type_hints) before handing them to the codec.
        raise errors.OutputDecodeError(
            f"type_hint {type_hint!r} is an unresolved string annotation; resolve it with "
            "typing.get_type_hints() first"
        )
    try:
        cached = _ADAPTERS.get(type_hint)
    except TypeError:  # unhashable hint: build it every time
        return _build_adapter(type_hint)
    if cached is None:
        cached = _build_adapter(type_hint)
        with _ADAPTERS_LOCK:
            _ADAPTERS[type_hint] = cached
    return cached


def _build_adapter(type_hint: object) -> pydantic.TypeAdapter[object]:
    try:
        return pydantic.TypeAdapter(typing.cast(typing.Any, type_hint))
    except pydantic.PydanticUserError as exc:
        raise errors.OutputDecodeError(f"type_hint {type_hint!r} is not usable by pydantic: {exc}") from exc


def _validate(value: object, type_hint: object) -> object:
    adapter = _adapter(type_hint)
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        raise errors.OutputDecodeError(
            f"stored output does not match the type {_hint_name(type_hint)}: {exc}",
            context={
                "type_hint": _hint_name(type_hint),
                "errors": exc.errors(include_url=False, include_input=False, include_context=False),
            },
        ) from None


def _hint_name(type_hint: object) -> str:
    if isinstance(type_hint, type):
        return type_hint.__qualname__
    return repr(type_hint)
