"""The partition key codec (invariant I6).

A partition value is stored in SQL (``flowstone_materializations.partition_key``, ``NOT NULL``) as
one text key. The encoding is canonical (one value has exactly one key), injective (two different
values never share a key, so ``"a|b"`` is never read back as a tuple) and readable in SQL:

==================  =====================================  =========================================
value               key                                    notes
==================  =====================================  =========================================
``None``            ``__unpartitioned__``                  the one sentinel of unpartitioned assets
``str``             ``s:`` + text                          any text: empty, ``|``, ``:``, quotes...
``int``             ``i:-5``, ``i:0``                      canonical decimal; ``bool`` is refused
``date``            ``d:2025-01-01``
aware ``datetime``  ``t:2025-01-01T00:00:00+00:00``        normalised to UTC; microseconds if any
naive ``datetime``  ``n:2025-01-01T00:00:00``
``tuple``           ``T:["s:a|b","i:1"]``                  JSON array of the encoded elements
==================  =====================================  =========================================

:func:`decode` accepts exactly the keys :func:`encode` produces: it parses the key, encodes the
result again and refuses the key unless both are identical, so ``i:01``, ``i:+1``, ``d:20250101``
or ``T:[ "s:a"]`` raise :class:`~flowstone.errors.InvalidPartitionError` instead of being guessed.

Values must be exactly ``str``, ``int``, ``date``, ``datetime`` or ``tuple``: subclasses (enums,
named tuples, ``pandas.Timestamp``) are refused, because the decoded value would have another type
and two values of different types would share a key. The partition definitions in
:mod:`flowstone.partitions` convert friendly inputs to these exact types first.

Two limits come from where keys are stored: Postgres ``text`` cannot hold NUL characters or lone
surrogates, so strings containing them are refused with a clear error rather than failing later in
the driver; and tuples nest at most :data:`MAX_TUPLE_DEPTH` levels, because each level doubles the
JSON escaping of the levels inside it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import TypeAlias

from flowstone import errors

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_TUPLE_DEPTH",
    "UNPARTITIONED",
    "PartitionValue",
    "check_length",
    "decode",
    "display",
    "display_value",
    "encode",
]

PartitionValue: TypeAlias = str | int | date | datetime | tuple["PartitionValue", ...]
"""A partition value: ``str``, ``int``, ``date``, ``datetime`` or a (nested) tuple of these."""

UNPARTITIONED: str = "__unpartitioned__"
"""The key stored for unpartitioned assets (never NULL). No encoded value can equal it."""

MAX_TUPLE_DEPTH: int = 10
"""How deeply tuples may nest; each level doubles the backslashes of the JSON inside it."""

MAX_KEY_BYTES: int = 2000
"""The longest encoded key (UTF-8 bytes). Keys are parts of B-tree index entries, which Postgres
caps at about 2,700 bytes (a third of a page) with the asset name and run id beside them; a longer
key is refused here, before anything is written, in every entry point and both stores."""

# ASCII digits only: int() would also accept "+1", " 1", "1_0" and non-ASCII digits (U+0661).
_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_TAGS = frozenset("sidtnT")
_SHOWN_CHARS = 200  # longest excerpt of a value or key quoted in an error message


class _InvalidError(Exception):
    """Internal: why a value or key was refused; turned into InvalidPartitionError at the edge."""


def encode(value: PartitionValue | None) -> str:
    """Encode a partition value as its canonical text key; ``None`` gives :data:`UNPARTITIONED`.

    Raises :class:`~flowstone.errors.InvalidPartitionError` for anything that is not a partition
    value (``bool``, ``float``, ``None`` inside a tuple, subclasses, NUL characters...).
    """
    if value is None:
        return UNPARTITIONED
    try:
        key = _encode(value, "value", 0)
        _check_length(key, "its key")
    except _InvalidError as exc:
        raise errors.InvalidPartitionError(f"cannot encode partition value {_shown(value)}: {exc}") from None
    return key


def check_length(key: str) -> str:
    """Refuse an encoded key longer than :data:`MAX_KEY_BYTES` (UTF-8) with the reason; returns it."""
    try:
        return _check_length(key, "it")
    except _InvalidError as exc:
        raise errors.InvalidPartitionError(
            f"invalid partition key {_shown(key)}: {exc}", partition=_shorten(key)
        ) from None


def _check_length(key: str, what: str) -> str:
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise _InvalidError(
            f"{what} is {size} bytes long; a partition key is at most {MAX_KEY_BYTES} bytes (it is part "
            "of database index entries): use a shorter partition value"
        )
    return key


def decode(key: str) -> PartitionValue | None:
    """Decode a key made by :func:`encode`; :data:`UNPARTITIONED` gives ``None``.

    Any text that is not exactly the canonical key of some value raises
    :class:`~flowstone.errors.InvalidPartitionError` saying what was wrong; nothing is guessed.
    """
    if type(key) is not str:
        raise errors.InvalidPartitionError(
            f"a partition key must be a str, got {type(key).__name__}: {_shown(key)}"
        )
    if key == UNPARTITIONED:
        return None
    try:
        value = _decode(key, 0)
        _check_length(key, "it")  # after the structure: a malformed key says what is malformed
    except _InvalidError as exc:
        raise errors.InvalidPartitionError(
            f"invalid partition key {_shown(key)}: {exc}", partition=_shorten(key)
        ) from None
    except RecursionError:  # defensive: depth is capped, but never let a crash escape
        raise errors.InvalidPartitionError(
            f"invalid partition key {_shown(key)}: nested too deeply",
            partition=_shorten(key),
        ) from None
    return value


def _encode(value: object, path: str, depth: int) -> str:
    # Exact type checks, not isinstance: bool is an int and datetime is a date, and a subclass
    # would decode to its base type (see the module docstring).
    if type(value) is str:
        return "s:" + _checked_text(value, path)
    if type(value) is int:
        try:
            return "i:" + repr(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits() allows
            raise _InvalidError(f"{path} is an integer too large to write in decimal") from None
    if type(value) is datetime:
        return _encode_datetime(value, path)
    if type(value) is date:
        return "d:" + value.isoformat()
    if type(value) is tuple:
        if depth >= MAX_TUPLE_DEPTH:
            raise _InvalidError(f"tuples nest more than {MAX_TUPLE_DEPTH} levels deep at {path}")
        parts = [_encode(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
        return "T:" + json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    raise _InvalidError(_unsupported(value, path))


def _encode_datetime(value: datetime, path: str) -> str:
    if value.tzinfo is None:
        return "n:" + value.isoformat()
    if value.utcoffset() is None:
        raise _InvalidError(f"{path} has a tzinfo whose utcoffset() is None (neither naive nor aware)")
    try:
        return "t:" + value.astimezone(UTC).isoformat()
    except OverflowError:
        raise _InvalidError(f"{path} is out of the datetime range once converted to UTC") from None


def _unsupported(value: object, path: str) -> str:
    kind = type(value)
    if value is None:
        return f"{path} is None; None means 'unpartitioned' and cannot appear inside a tuple"
    if kind is bool:
        return f"{path} is a bool; use the int 0/1 or the str 'true'/'false' instead"
    if kind is float:
        return f"{path} is a float; floats are not exact, use an int or a str"
    for base in (str, int, datetime, date, tuple):
        if isinstance(value, base):
            return (
                f"{path} is a {kind.__qualname__}, a subclass of {base.__name__}; "
                f"convert it to a plain {base.__name__} so that it decodes to the same type"
            )
    return (
        f"{path} is a {kind.__qualname__}; partition values are str, int, date, datetime or tuples of these"
    )


def _checked_text(text: str, path: str) -> str:
    if "\x00" in text:
        raise _InvalidError(f"{path} contains a NUL character, which Postgres text cannot store")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _InvalidError(
                f"{path} contains a lone surrogate, which is not valid Unicode text"
            ) from None
    return text


def _decode(key: str, depth: int) -> PartitionValue:
    value = _parse(key, depth)
    canonical = _encode(value, "value", depth)
    if canonical != key:
        raise _InvalidError(f"not in canonical form; the same value is encoded as {_shown(canonical)}")
    return value


def _parse(key: str, depth: int) -> PartitionValue:
    tag, sep, body = key[:1], key[1:2], key[2:]
    if sep != ":" or tag not in _TAGS:
        raise _InvalidError(
            f"unknown tag; a key starts with s:, i:, d:, t:, n: or T:, or is {UNPARTITIONED!r}"
        )
    if tag == "s":
        return body
    if tag == "i":
        if not _INT_RE.fullmatch(body):
            raise _InvalidError("'i:' must be followed by a canonical decimal integer like -5")
        try:
            return int(body)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            raise _InvalidError("the integer has too many digits") from None
    if tag == "d":
        try:
            return date.fromisoformat(body)
        except ValueError:
            raise _InvalidError("'d:' must be followed by a date like 2025-01-01") from None
    if tag in "tn":
        return _parse_datetime(tag, body)
    return _parse_tuple(body, depth)


def _parse_datetime(tag: str, body: str) -> datetime:
    try:
        value = datetime.fromisoformat(body)
    except ValueError:
        raise _InvalidError(
            f"'{tag}:' must be followed by an ISO datetime like 2025-01-01T00:00:00"
        ) from None
    if tag == "n":
        if value.tzinfo is not None:
            raise _InvalidError("'n:' is for naive datetimes; aware ones use 't:' in UTC")
        return value
    if value.utcoffset() is None:
        raise _InvalidError("'t:' is for aware datetimes in UTC (+00:00); naive ones use 'n:'")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise _InvalidError("the datetime is out of range once converted to UTC") from None


def _parse_tuple(body: str, depth: int) -> tuple[PartitionValue, ...]:
    if depth >= MAX_TUPLE_DEPTH:
        raise _InvalidError(f"tuples nest more than {MAX_TUPLE_DEPTH} levels deep")
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; "[[[[..." recurses
        raise _InvalidError("'T:' must be followed by a JSON array of encoded keys") from None
    if type(items) is not list:
        raise _InvalidError("'T:' must be followed by a JSON array, not " + type(items).__name__)
    values: list[PartitionValue] = []
    for index, item in enumerate(items):
        if type(item) is not str:
            raise _InvalidError(f"tuple element {index} is not a string holding an encoded key")
        if item == UNPARTITIONED:
            raise _InvalidError(f"tuple element {index} is {UNPARTITIONED!r}, not a value")
        try:
            values.append(_decode(item, depth + 1))
        except _InvalidError as exc:
            raise _InvalidError(f"tuple element {index} ({_shown(item)}): {exc}") from None
    return tuple(values)


def _shown(value: object) -> str:
    """``repr(value)`` for a message, shortened; never raises (repr of a huge int does)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} that cannot be shown>"
    return _shorten(text)


def _shorten(text: str) -> str:
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def display(key: str) -> str:
    """A key as a person reads it: ``2025-01-01`` for ``d:2025-01-01``, ``-`` for an unpartitioned
    asset, tuples as ``a|b``; a key that does not decode is shown as stored."""
    if key == UNPARTITIONED:
        return "-"
    try:
        value = decode(key)
    except errors.InvalidPartitionError:
        return key
    return display_value(value)


def display_value(value: object) -> str:
    """A partition value as a person reads it (dates in ISO form, tuples as ``a|b``)."""
    if isinstance(value, tuple):
        return "|".join(display_value(v) for v in value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
