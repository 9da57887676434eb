"""Arrow tables encoded as Postgres binary ``COPY`` data, column by column (no Python row tuples).

Used by Postgres rows mode (:func:`flowstone.store.outputs.write_rows`) to write a frame with
``COPY ... FROM STDIN (FORMAT BINARY)`` on FlowStone's own connection, inside the success
transaction. The common column types are encoded with numpy over whole Arrow buffers; the few
whose binary form is intricate (``numeric``, arrays) are encoded value by value by a ``dump``
function the caller gives (psycopg's binary dumpers); any other pairing of an Arrow type and a
column type makes :func:`plan` return ``None`` and the caller keeps text ``COPY``, whose rules
(the server parsing each value's text) stay exactly as they were.

Binary ``COPY`` has no casts: each value must be sent in the exact binary form of its column's
type, so the Arrow values are cast to that type first (``int64`` values into an ``integer``
column are range-checked by the cast) and the plan is per column type, never guessed.

The binary format (PostgreSQL documentation, "COPY", "Binary Format"): an 11-byte signature, two
int32 (flags, header extension), then per row an int16 field count and per field an int32 length
(-1 for NULL) followed by that many bytes, then an int16 -1 trailer. Integers are big-endian;
``date`` is days and ``timestamp``/``timestamptz`` are microseconds since 2000-01-01 (UTC for
``timestamptz``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flowstone.io import frames

__all__ = ["HEADER", "TRAILER", "VALUE_TYPES", "Plan", "chunks", "plan"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
BATCH_ROWS = 65_536
"""Rows encoded at a time: bounds the memory of the encoder and lets COPY start sending early."""

_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_US = _PG_EPOCH_DAYS * 86_400 * 1_000_000

# column type (pg_type.typname) -> (Arrow type it is sent from, big-endian numpy dtype)
_FIXED = {
    "int2": ("int16", ">i2"),
    "int4": ("int32", ">i4"),
    "int8": ("int64", ">i8"),
    "float4": ("float32", ">f4"),
    "float8": ("float64", ">f8"),
    "bool": ("bool_", "u1"),
}
_TEXT = frozenset({"text", "varchar", "bpchar", "name"})
VALUE_TYPES = frozenset(
    {"numeric", "_numeric", "_text", "_varchar", "_int2", "_int4", "_int8", "_float4", "_float8", "_bool"}
)
"""Column types sent value by value through the caller's ``dump`` (binary forms too intricate to
vectorize here: ``numeric`` digits, arrays)."""

Dump = Callable[[object], bytes]
"""One non-NULL Python value (``Decimal``, ``list``, ...) as its column type's binary payload."""


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "fixed", "text", "binary", "date", "timestamp", "values"
    arrow_type: Any
    dtype: str = ""
    dump: Dump | None = None


@dataclass(frozen=True)
class Plan:
    """How each column of a frame is encoded; build it with :func:`plan`."""

    columns: tuple[_Column, ...]


def plan(schema: Any, column_types: Sequence[str], dump: Callable[[str], Dump | None]) -> Plan | None:
    """The binary encoding of a frame with ``schema`` into columns of ``column_types`` (typnames,
    in the schema's order), or ``None`` when one column has no binary encoding here (the caller
    then uses text ``COPY``). ``dump(typname)`` gives the value-by-value encoder of a
    :data:`VALUE_TYPES` type, or ``None`` if it has none."""
    pa = frames.require("pyarrow", "parquet")
    columns: list[_Column] = []
    for field, type_name in zip(schema, column_types, strict=True):
        source = field.type
        if pa.types.is_dictionary(source):  # categoricals: their values are what is stored
            source = source.value_type
        found: _Column | None = None
        if type_name in _FIXED:
            arrow_name, dtype = _FIXED[type_name]
            if (
                pa.types.is_boolean(source)
                if type_name == "bool"
                else pa.types.is_integer(source)
                or (type_name.startswith("float") and pa.types.is_floating(source))
            ):
                found = _Column(field.name, "fixed", getattr(pa, arrow_name)(), dtype)
        elif type_name in _TEXT and (pa.types.is_string(source) or pa.types.is_large_string(source)):
            found = _Column(field.name, "text", pa.large_string())
        elif type_name == "bytea" and (pa.types.is_binary(source) or pa.types.is_large_binary(source)):
            found = _Column(field.name, "text", pa.large_binary())
        elif type_name == "date" and pa.types.is_date(source):
            found = _Column(field.name, "date", pa.date32(), ">i4")
        elif pa.types.is_timestamp(source) and (
            (type_name == "timestamptz" and source.tz is not None)
            or (type_name == "timestamp" and source.tz is None)
        ):
            # a naive frame column into timestamptz (or an aware one into timestamp) keeps text
            # COPY: the server then applies its TimeZone setting exactly as before
            found = _Column(field.name, "timestamp", pa.timestamp("us", tz=source.tz), ">i8")
        elif type_name in VALUE_TYPES and (encoder := dump(type_name)) is not None:
            found = _Column(field.name, "values", source, dump=encoder)
        if found is None:
            return None
        columns.append(found)
    return Plan(tuple(columns))


def chunks(table: Any, plan: Plan, constant: bytes, batch_rows: int = BATCH_ROWS) -> Iterator[bytes]:
    """The binary COPY stream of ``table`` (header, rows, trailer) in pieces of about ``batch_rows``
    rows, each row led by the field ``constant`` (the binary payload of the partition column).

    Raises ``pyarrow.ArrowInvalid`` for a value its column type cannot hold (an integer out of
    range) and whatever ``dump`` raises.
    """
    pa = frames.require("pyarrow", "parquet")
    np = frames.require("numpy", "parquet")
    yield HEADER
    cast = [_cast(table.column(c.name), c) for c in plan.columns]
    for start in range(0, table.num_rows, batch_rows):
        rows = min(batch_rows, table.num_rows - start)
        fields = [_constant(np, constant, rows)]
        for column, values in zip(plan.columns, cast, strict=True):
            if values is None:
                array = table.column(column.name).slice(start, rows)
                fields.append(_by_value(np, pa, array, column.dump))
            else:
                array = pa.concat_arrays(values.slice(start, rows).chunks) if rows else None
                fields.append(_encode(np, pa, column, array))
        yield _rows(np, fields, rows).tobytes()
    yield TRAILER


def _cast(values: Any, column: _Column) -> Any:
    if column.kind == "values":
        return None
    # timestamps: finer units are truncated to microseconds, as a Python datetime would be;
    # every other cast is checked (an int64 value outside an int4 column raises ArrowInvalid)
    return values.cast(column.arrow_type, safe=column.kind != "timestamp")


def _constant(np: Any, payload: bytes, rows: int) -> tuple[Any, Any]:
    lengths = np.full(rows, len(payload), dtype=np.int64)
    return lengths, np.tile(np.frombuffer(payload, dtype=np.uint8), rows)


def _valid(np: Any, array: Any) -> Any:
    if array.null_count == 0:
        return None
    return array.is_valid().to_numpy(zero_copy_only=False)


def _encode(np: Any, pa: Any, column: _Column, array: Any) -> tuple[Any, Any]:
    """(lengths with -1 for NULL, the non-NULL payloads concatenated in row order) of ``array``."""
    valid = _valid(np, array)
    if column.kind == "text":
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[
            array.offset : array.offset + len(array) + 1
        ]
        data_buffer = array.buffers()[2]
        data = (
            np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
        )
        lengths = np.diff(offsets)
        if valid is not None:
            lengths = np.where(valid, lengths, -1)
        return lengths, data[offsets[0] : offsets[-1]]
    if column.kind == "fixed":
        filled = (
            array.fill_null(False if pa.types.is_boolean(array.type) else 0) if valid is not None else array
        )
        numbers = filled.to_numpy(zero_copy_only=False)
    elif column.kind == "date":
        days = array.view(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False)
        numbers = days.astype(np.int64) - _PG_EPOCH_DAYS
    else:  # timestamp: microseconds since the Unix epoch (UTC when aware)
        numbers = array.view(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False) - _PG_EPOCH_US
    encoded = numbers.astype(column.dtype)
    width = encoded.dtype.itemsize
    if valid is None:
        return np.full(len(array), width, dtype=np.int64), encoded.view(np.uint8)
    return np.where(valid, width, -1).astype(np.int64), encoded[valid].view(np.uint8)


def _by_value(np: Any, pa: Any, array: Any, dump: Dump | None) -> tuple[Any, Any]:
    assert dump is not None  # noqa: S101 - plan() sets it for every "values" column
    payloads = [None if v is None else dump(v) for v in array.to_pylist()]
    lengths = np.array([-1 if p is None else len(p) for p in payloads], dtype=np.int64)
    joined = b"".join(p for p in payloads if p is not None)
    return lengths, np.frombuffer(joined, dtype=np.uint8)


def _rows(np: Any, fields: Sequence[tuple[Any, Any]], rows: int) -> Any:
    """The rows of one batch: every field's length then payload, scattered into one buffer."""
    sizes = 2 + sum(4 + np.maximum(lengths, 0) for lengths, _ in fields)
    starts = np.zeros(rows, dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + sizes[-1]) if rows else 0, dtype=np.uint8)
    _put(np, out, starts, np.full(rows, len(fields), dtype=">i2"))
    at = starts + 2
    for lengths, data in fields:
        _put(np, out, at, lengths.astype(">i4"))
        at += 4
        present = np.maximum(lengths, 0)
        if data.size:
            # byte i of the payloads goes to (its row's payload start) + (its offset in that payload)
            begins = np.zeros(rows, dtype=np.int64)
            np.cumsum(present[:-1], out=begins[1:])
            out[np.repeat(at - begins, present) + np.arange(data.size)] = data
        at += present
    return out


def _put(np: Any, out: Any, at: Any, values: Any) -> None:
    """Write each of ``values`` (fixed-width, big-endian) at its position in ``at``."""
    width = values.dtype.itemsize
    out[(at[:, None] + np.arange(width)).ravel()] = values.view(np.uint8)
