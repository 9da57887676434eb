"""Arrow tables encoded as Postgres binary ``COPY`` data, column by column (no Python row tuples).

Used by Postgres rows mode (:func:`flowstone.store.outputs.write_rows`) to write a frame with
``COPY ... FROM STDIN (FORMAT BINARY)`` on FlowStone's own connection, inside the success
transaction. The common column types are encoded over whole columns (numpy for the big-endian
values, Arrow's C++ kernels to assemble the rows); the few whose binary form is intricate
(``numeric``, arrays) are encoded value by value by a ``dump`` function the caller gives (psycopg's
binary dumpers); any other pairing of an Arrow type and a
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
vectorize here: ``numeric`` digits, arrays), from decimals and one-level lists of the element's kind."""


def _value_source(pa: Any, type_name: str, source: Any) -> bool:
    """Whether a frame column of Arrow type ``source`` goes value by value into ``type_name``."""
    if type_name == "numeric":
        return bool(pa.types.is_decimal(source))
    if not (pa.types.is_list(source) or pa.types.is_large_list(source)):
        return False
    item, element = source.value_type, type_name[1:]
    kinds = {
        "numeric": pa.types.is_decimal(item),
        "text": pa.types.is_string(item) or pa.types.is_large_string(item),
        "varchar": pa.types.is_string(item) or pa.types.is_large_string(item),
        "bool": pa.types.is_boolean(item),
        "float4": pa.types.is_floating(item) or pa.types.is_integer(item),
        "float8": pa.types.is_floating(item) or pa.types.is_integer(item),
    }
    return bool(kinds.get(element, pa.types.is_integer(item)))


Dump = Callable[[object], bytes]
"""One non-NULL Python value (``Decimal``, ``list``, ...) as its column type's binary payload."""


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "fixed", "text" (also bytea), "date", "timestamp", "values"
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
        elif (
            type_name in VALUE_TYPES
            and _value_source(pa, type_name, source)
            and (encoder := dump(type_name)) is not None
        ):
            found = _Column(field.name, "values", source, dump=encoder)
        if found is None:
            return None
        columns.append(found)
    return Plan(tuple(columns))


def chunks(table: Any, plan: Plan, constant: bytes, batch_rows: int = BATCH_ROWS) -> Iterator[Any]:
    """The binary COPY stream of ``table`` (header, rows, trailer) in pieces of about ``batch_rows``
    rows (buffers, not copied), each row led by the field ``constant`` (the binary payload of the
    partition column).

    Every field of a batch is built as an Arrow binary array (its length word, then its payload)
    and the rows are assembled by Arrow's ``binary_join_element_wise`` in C++: no Python loop over
    rows. Raises ``pyarrow.ArrowInvalid`` for a value its column type cannot hold (an integer out
    of range) and whatever a ``dump`` raises.
    """
    pa = frames.require("pyarrow", "parquet")
    pc = frames.require("pyarrow.compute", "parquet")
    np = frames.require("numpy", "parquet")
    yield HEADER
    lead = pa.scalar(
        _be(np, len(plan.columns) + 1, ">i2") + _be(np, len(constant), ">i4") + constant, pa.large_binary()
    )
    nothing = pa.scalar(b"", pa.large_binary())
    cast = [_cast(table.column(c.name), c) for c in plan.columns]
    for start in range(0, table.num_rows, batch_rows):
        rows = min(batch_rows, table.num_rows - start)
        parts: list[Any] = [lead]
        for column, values in zip(plan.columns, cast, strict=True):
            if values is None:
                parts += _by_value(np, pa, table.column(column.name).slice(start, rows), column.dump)
            else:
                parts += _encode(np, pa, pc, column, pa.concat_arrays(values.slice(start, rows).chunks))
        joined = pc.binary_join_element_wise(*parts, nothing)  # the last argument is the separator
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)[joined.offset : joined.offset + rows + 1]
        yield memoryview(joined.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
    yield TRAILER


def _cast(values: Any, column: _Column) -> Any:
    if column.kind == "values":
        return None
    # timestamps: finer units are truncated to microseconds, as a Python datetime would be;
    # every other cast is checked (an int64 value outside an int4 column raises ArrowInvalid)
    return values.cast(column.arrow_type, safe=column.kind != "timestamp")


def _be(np: Any, value: int, dtype: str) -> bytes:
    return bytes(np.array(value, dtype=dtype).tobytes())


def _records(np: Any, pa: Any, block: Any) -> Any:
    """A (rows, width) uint8 block as an Arrow ``large_binary`` array of its rows."""
    rows, width = block.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, pa.py_buffer(block)])
    return fixed.cast(pa.large_binary())


def _lengths(np: Any, pa: Any, lengths: Any) -> Any:
    """The length words (-1 for NULL) of a field, one per row."""
    return _records(np, pa, np.ascontiguousarray(lengths.astype(">i4")).view(np.uint8).reshape(-1, 4))


def _encode(np: Any, pa: Any, pc: Any, column: _Column, array: Any) -> list[Any]:
    """The Arrow binary arrays that make up this field in each row (length word, payload)."""
    valid = None if array.null_count == 0 else array.is_valid()
    if column.kind == "text":
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[
            array.offset : array.offset + len(array) + 1
        ]
        lengths = np.diff(offsets)
        if valid is not None:
            lengths = np.where(valid.to_numpy(zero_copy_only=False), lengths, -1)
        payload = array.cast(pa.large_binary())
        return [_lengths(np, pa, lengths), payload if valid is None else payload.fill_null(b"")]
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
    block = np.empty((len(array), 4 + width), dtype=np.uint8)
    block[:, :4] = np.frombuffer(_be(np, width, ">i4"), dtype=np.uint8)
    block[:, 4:] = encoded.view(np.uint8).reshape(-1, width)
    fields = _records(np, pa, block)
    if valid is None:
        return [fields]
    return [pc.if_else(valid, fields, pa.scalar(_be(np, -1, ">i4"), pa.large_binary()))]


def _by_value(np: Any, pa: Any, array: Any, dump: Dump | None) -> list[Any]:
    assert dump is not None  # noqa: S101 - plan() sets it for every "values" column
    payloads = [None if v is None else dump(v) for v in array.to_pylist()]
    lengths = np.array([-1 if p is None else len(p) for p in payloads], dtype=np.int64)
    return [_lengths(np, pa, lengths), pa.array([p or b"" for p in payloads], pa.large_binary())]
