"""Rows of a Postgres user table as an Arrow table whose column types follow the table's types.

Used by :class:`~flowstone.io.postgres.PostgresIOManager` in rows mode when a downstream parameter
asks for a frame: ``numeric(10,2)`` becomes ``decimal128(10, 2)``, ``timestamp with time zone`` a
UTC timestamp, ``text[]`` a list of strings, and an empty or all-NULL column keeps its type instead
of the ``null`` type Arrow would guess. A type without a mapping here is inferred from the values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flowstone.io import frames

__all__ = ["arrow_type", "rows_table"]

_SIMPLE = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "real": "float32",
    "double precision": "float64",
    "boolean": "bool_",
    "text": "string",
    "name": "string",
    "uuid": "string",
    "date": "date32",
    "bytea": "binary",
}
_NUMERIC_RE = re.compile(r"numeric\((\d+),(\d+)\)")
_STRING_RE = re.compile(r"(?:character varying|character|varchar|bpchar)(?:\(\d+\))?")


def arrow_type(data_type: str) -> Any:
    """The Arrow type of a Postgres type as ``format_type`` prints it, or ``None`` to infer."""
    pa = frames.require("pyarrow", "parquet")
    found: Any = None
    match = _NUMERIC_RE.fullmatch(data_type)
    if data_type.endswith("[]"):
        item = arrow_type(data_type[:-2])
        found = None if item is None else pa.list_(item)
    elif data_type in _SIMPLE:
        found = getattr(pa, _SIMPLE[data_type])()
    elif _STRING_RE.fullmatch(data_type):
        found = pa.string()
    elif data_type.startswith("timestamp"):
        found = pa.timestamp("us", tz="UTC" if data_type.endswith("with time zone") else None)
    elif data_type.startswith("time") and not data_type.endswith("with time zone"):
        found = pa.time64("us")
    elif match and int(match.group(1)) <= 38:
        found = pa.decimal128(int(match.group(1)), int(match.group(2)))
    return found


def rows_table(rows: Sequence[Mapping[str, Any]], types: Mapping[str, str]) -> Any:
    """``rows`` (dicts with the columns of ``types``) as an Arrow table in the order of ``types``."""
    pa = frames.require("pyarrow", "parquet")
    arrays, names = [], []
    for name, data_type in types.items():
        values = [row.get(name) for row in rows]
        wanted = arrow_type(data_type)
        if data_type in ("uuid", "uuid[]"):
            values = [_text(v) for v in values]
        try:
            array = pa.array(values, type=wanted) if wanted is not None else pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            array = pa.array(values)  # a value outside the mapped type: let Arrow choose
        arrays.append(array)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _text(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, list):
        return [_text(v) for v in value]
    return str(value)
