"""DataFrames for the IO managers: which frame a value or an annotation is, Arrow conversion, metadata.

FlowStone handles three kinds of frames: pandas ``DataFrame`` (``"pandas"``), polars ``DataFrame``
(``"polars"``) and pyarrow ``Table`` (``"arrow"``). Arrow is the common form: a frame is converted to
an Arrow table once to be stored, and an Arrow table is converted to the kind the downstream
parameter asks for when loaded (a polars frame to polars or Arrow without a pandas round trip).

Nothing here imports pandas, polars or pyarrow at module level: the core stays light, a value is a
pandas frame only if pandas is already imported (the value's own module did it), and pyarrow is
imported when a frame is actually converted (``flowstone[parquet]`` or ``flowstone[duckdb]``).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from flowstone import errors
from flowstone.io import base

__all__ = [
    "KIND_METADATA_KEY",
    "Kind",
    "arrow_hash",
    "arrow_hash_beside",
    "arrow_table",
    "combine",
    "describe",
    "frame_kind",
    "from_arrow",
    "hint_kind",
    "require",
    "stored_kind",
]

Kind = Literal["pandas", "polars", "arrow"]
KIND_METADATA_KEY = b"flowstone.frame"
"""Arrow schema metadata key that records the kind a frame was stored as (the default on load)."""

_CLASSES: dict[Kind, tuple[str, str]] = {
    "pandas": ("pandas", "DataFrame"),
    "polars": ("polars", "DataFrame"),
    "arrow": ("pyarrow", "Table"),
}


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise a ConfigurationError naming the extra to install."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise errors.ConfigurationError(
            f"{module} is not installed: install flowstone[{extra}] to use this IO manager ({exc})"
        ) from exc


def _class(kind: Kind) -> type | None:
    module_name, name = _CLASSES[kind]
    module = sys.modules.get(module_name)  # a frame of a library never imported cannot exist
    cls = getattr(module, name, None) if module is not None else None
    return cls if isinstance(cls, type) else None


def frame_kind(value: object) -> Kind | None:
    """The kind of frame ``value`` is, or ``None`` if it is not a pandas, polars or Arrow frame."""
    for kind in _CLASSES:
        cls = _class(kind)
        if cls is not None and isinstance(value, cls):
            return kind
    return None


def hint_kind(hint: object) -> Kind | None:
    """The kind of frame an annotation asks for (``pd.DataFrame``, ``pl.DataFrame``, ``pa.Table``,
    optionally inside ``Annotated``), or ``None`` for any other annotation."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if not isinstance(hint, type):
        return None
    for kind in _CLASSES:
        cls = _class(kind)
        if cls is not None and issubclass(hint, cls):
            return kind
    return None


def arrow_table(value: object, kind: Kind, *, preserve_index: bool | None = None) -> Any:
    """``value`` (a frame of ``kind``) as a ``pyarrow.Table`` whose schema records the kind.

    For pandas, ``preserve_index=None`` keeps a RangeIndex as metadata only and any other index as
    columns, so ``to_pandas()`` gives the same frame back; ``False`` drops the index.
    """
    pa = require("pyarrow", "parquet")
    if kind == "pandas":
        table = pa.Table.from_pandas(value, preserve_index=preserve_index)
    elif kind == "polars":
        table = typing.cast(Any, value).to_arrow()
    else:
        table = value
    metadata = dict(table.schema.metadata or {})
    metadata[KIND_METADATA_KEY] = kind.encode()
    return table.replace_schema_metadata(metadata)


def stored_kind(table: Any) -> Kind:
    """The kind recorded in an Arrow table's schema (``"arrow"`` when none is recorded)."""
    raw = (table.schema.metadata or {}).get(KIND_METADATA_KEY, b"arrow")
    text = raw.decode("ascii", "replace")
    return typing.cast(Kind, text) if text in _CLASSES else "arrow"


def from_arrow(table: Any, hint: object, *, default: Kind | None = None) -> object:
    """``table`` as the frame ``hint`` asks for; without a frame annotation, as the kind it was
    stored as (``default``, or the kind its schema records); for any other annotation, its rows
    (a list of dicts) validated against it."""
    kind = hint_kind(hint)
    if kind is None and _no_hint(hint):
        kind = default or stored_kind(table)
    if kind is None:
        pydantic = require("pydantic", "parquet")
        try:
            return pydantic.TypeAdapter(hint).validate_python(table.to_pylist())
        except (pydantic.ValidationError, pydantic.PydanticUserError) as exc:
            raise errors.OutputDecodeError(
                f"the stored frame does not match the type {hint!r}: load it as a pandas or polars "
                f"DataFrame or a pyarrow Table, or annotate a list of rows ({exc})"
            ) from None
    metadata = dict(table.schema.metadata or {})
    metadata.pop(KIND_METADATA_KEY, None)
    table = table.replace_schema_metadata(metadata or None)
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        polars = require("polars", "parquet")
        return polars.from_arrow(table, rechunk=False)
    return table


def combine(parts: Sequence[tuple[base.InputContext, Any]], column: str, hint: object) -> object:
    """Arrow tables of several partitions as one frame of the kind ``hint`` asks for, in order, with
    ``column`` holding each row's partition value (the encoded key for multi-dimensional ones)."""
    pa = require("pyarrow", "parquet")
    tables = []
    for ctx, table in parts:
        if column in table.column_names:
            raise ctx.attach(
                errors.OutputDecodeError(
                    f"the stored frame already has a column {column!r}, where the partition of each "
                    "row goes when several partitions load as one frame: set the manager's "
                    "partition column name to another one"
                )
            )
        value = ctx.partition_key if isinstance(ctx.partition, tuple) else ctx.partition
        tables.append(table.append_column(column, pa.array([value] * table.num_rows)))
    if not tables:
        return from_arrow(pa.table({column: pa.array([], pa.null())}), hint)
    return from_arrow(pa.concat_tables(tables, promote_options="permissive"), hint)


def _no_hint(hint: object) -> bool:
    import inspect  # noqa: PLC0415 - only for the sentinel

    return hint is None or hint is inspect.Parameter.empty or hint is object or hint is Any


def arrow_hash(table: Any) -> str:
    """``sha256:<hex>`` of the Arrow IPC stream of ``table`` (equal for equal tables with the same
    chunking), for managers that keep no file whose bytes could be hashed."""
    pa = require("pyarrow", "parquet")
    digest = hashlib.sha256()

    class _Sink:
        closed = False

        def write(self, data: Any) -> int:
            view = memoryview(data)
            digest.update(view)
            return view.nbytes

        def flush(self) -> None:
            return None

    with pa.ipc.new_stream(pa.PythonFile(_Sink(), mode="w"), table.schema) as writer:
        writer.write_table(table)
    return "sha256:" + digest.hexdigest()


def arrow_hash_beside(table: Any) -> Callable[[], str]:
    """Start :func:`arrow_hash` of ``table`` in a thread and return the function that waits for it
    (and raises what it raised). A manager hashes while its store writes the table: hashlib and
    the store's engine release the GIL, so on two cores the hash costs the write almost nothing.
    ``table`` is immutable (Arrow), so reading it from two threads is safe."""
    result: list[str] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(arrow_hash(table))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the waiter, in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="flowstone-frame-hash", daemon=True)
    thread.start()

    def wait() -> str:
        thread.join()
        if failure:
            raise failure[0]
        return result[0]

    return wait


def describe(table: Any, *, size_bytes: int | None, digest: str | None) -> dict[str, object]:
    """The metadata FlowStone records for a stored frame: row count, schema, size and content hash."""
    found: dict[str, object] = {
        "row_count": int(table.num_rows),
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
    }
    if size_bytes is not None:
        found["size_bytes"] = int(size_bytes)
    if digest is not None:
        found["content_hash"] = digest
    return found
