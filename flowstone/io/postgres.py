"""The Postgres IO manager: outputs committed in the same transaction as their ``succeeded`` record.

Two modes, both with the strongest guarantee FlowStone offers (I10, I11): an output is visible
exactly when its metadata committed, and a failure anywhere (the output, the lineage, the audit
event) leaves neither.

- ``mode="value"`` (default): one row per materialization in FlowStone's own table
  ``flowstone_outputs``, written by the success statement itself. Values are JSONB produced by the
  typed codec, or raw bytes with ``format="bytes"``; nothing is ever decoded with a
  code-executing decoder (I4). Every materialization is a new immutable version.
- ``mode="rows"``: the asset returns a list of dicts or pydantic models, written as rows of a user
  table (``table="analytics.daily_events"``) that replace the rows of the materialization's
  partition (``partition_column``). The table holds the output of the latest succeeded
  materialization of each partition only; loading an older one is refused, not guessed.

Table, schema and column names are validated at construction by :mod:`flowstone.identifiers`
(I5): a hostile name raises :class:`~flowstone.errors.InvalidIdentifierError` naming the setting.
The SQL itself lives in the store (:mod:`flowstone.store.outputs`); this module runs none.
"""

from __future__ import annotations

import inspect
import json
import threading
import typing
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import pydantic

from flowstone import codec, errors, identifiers
from flowstone.io import base, frames, pg_frames

__all__ = ["DEFAULT_TABLE", "OutputStore", "PostgresIOManager", "RowsOutputStore", "RowsTypesStore"]

DEFAULT_TABLE = "flowstone_outputs"
_OWN_TABLE_PREFIXES = ("flowstone_", "procrastinate_")


class OutputStore(Protocol):
    """What the manager needs from the store to read and delete stored outputs."""

    def read_output(self, materialization_id: int) -> tuple[str, object, bytes | None] | None:
        """(format, JSON value, bytes) of a stored output, or ``None``."""
        ...

    def delete_output(self, materialization_id: int) -> None:
        """Remove a stored output (idempotent)."""
        ...


@runtime_checkable
class RowsOutputStore(Protocol):
    """What a store offers to load rows-mode outputs (see :func:`flowstone.store.outputs.read_rows`)."""

    def read_rows(
        self,
        table: identifiers.QualifiedName,
        partition_column: str,
        *,
        asset: str,
        partition_key: str,
        materialization_id: int,
    ) -> list[dict[str, Any]]:
        """The rows of one partition, if ``materialization_id`` is the output the table holds."""
        ...


@runtime_checkable
class RowsTypesStore(Protocol):
    """What a store offers so that frames loaded from rows keep the table's column types."""

    def table_types(self, table: identifiers.QualifiedName) -> dict[str, str]:
        """The table's columns in order, with their Postgres types (``format_type``)."""
        ...


class PostgresIOManager(base.TransactionalIOManager):
    """Outputs in Postgres, committed with their metadata (the strongest guarantee FlowStone offers).

    ``PostgresIOManager()`` stores any value the typed codec encodes (dates, Decimals, UUIDs,
    bytes, tuples, pydantic models, ...) as JSONB in ``flowstone_outputs``; ``format="bytes"``
    stores the ``bytes`` an asset returns, as is.

    ``PostgresIOManager(table="analytics.daily_events", mode="rows")`` (or ``schema="analytics",
    table="daily_events"``) writes the list of dicts or pydantic models an asset returns as rows of
    that existing table, replacing the rows whose ``partition_column`` (default ``partition_key``)
    holds the partition: the encoded key for a text column, the partition value (a ``date``, ...)
    for any other type. Every row must set the same columns, all of which must exist in the table;
    FlowStone fills the partition column. Loading returns the rows read back (a list of dicts, or
    the downstream parameter's type). One rows-mode table serves one asset.

    ``allowed_tables`` restricts ``table`` to an allow-list (``["analytics.daily_events"]``).
    Every name is validated here (I5); a refused name raises
    :class:`~flowstone.errors.InvalidIdentifierError` naming the setting and the value.
    """

    versioned: ClassVar[bool] = True  # value mode; rows mode keeps the latest output per partition

    def __init__(
        self,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        format: Literal["jsonb", "bytes"] = "jsonb",
        mode: Literal["value", "rows"] = "value",
        partition_column: str = "partition_key",
        allowed_tables: Collection[str] | None = None,
    ) -> None:
        if mode not in ("value", "rows"):
            raise errors.ConfigurationError(f"PostgresIOManager mode must be 'value' or 'rows', not {mode!r}")
        if format not in ("jsonb", "bytes"):
            raise errors.ConfigurationError(
                f"PostgresIOManager format must be 'jsonb' or 'bytes', not {format!r}"
            )
        if isinstance(allowed_tables, str):
            raise errors.ConfigurationError(
                "PostgresIOManager allowed_tables is a list of table names, not one string "
                f"({allowed_tables!r})"
            )
        self.table = _parse_table(table, schema, allowed_tables)
        self.partition_column = identifiers.parse_column(
            partition_column, setting="PostgresIOManager partition_column"
        )
        self.mode = mode
        self.format = format
        if mode == "value":
            if self.table != identifiers.QualifiedName(None, DEFAULT_TABLE):
                raise errors.ConfigurationError(
                    f"PostgresIOManager table {str(self.table)!r} is a user table, which holds rows: "
                    f"use mode='rows' (mode='value' stores values in {DEFAULT_TABLE})"
                )
            if partition_column != "partition_key":
                raise errors.ConfigurationError(
                    "PostgresIOManager partition_column applies to mode='rows' only"
                )
        else:
            if self.table.name.startswith(_OWN_TABLE_PREFIXES):
                raise errors.InvalidIdentifierError(
                    f"PostgresIOManager table {str(self.table)!r} is not allowed for mode='rows': "
                    "tables named flowstone_* and procrastinate_* belong to FlowStone and Procrastinate",
                    context={"setting": "PostgresIOManager table", "value": str(self.table)},
                )
            if format != "jsonb":
                raise errors.ConfigurationError(
                    "PostgresIOManager format applies to mode='value' only (rows take the types of the "
                    "table's columns)"
                )
        self._store: OutputStore | None = None
        self._lock = threading.Lock()
        self._rows_asset: str | None = None

    def bind(self, store: OutputStore) -> None:
        """Connect the manager to the Postgres store that reads and deletes outputs."""
        self._store = store

    def validate_assets(self, assets: Collection[str]) -> None:
        """Refuse a rows-mode manager shared by several assets (call it when assembling definitions).

        Each write replaces the rows of a partition, so two assets writing one table would replace
        each other's rows.
        """
        names = sorted(set(assets))
        if self.mode == "rows" and len(names) > 1:
            raise errors.ConfigurationError(
                f"PostgresIOManager(mode='rows', table={str(self.table)!r}) is used by assets "
                f"{', '.join(map(repr, names))}: one rows-mode table serves one asset (each write "
                "replaces the rows of its partition); give each asset its own manager and table"
            )

    def _bound(self) -> OutputStore:
        if self._store is None:
            raise errors.ConfigurationError(
                "PostgresIOManager is not bound to a Postgres store: use it with a FlowStone runtime on "
                "Postgres (not store='memory')"
            )
        return self._store

    # -- store ----------------------------------------------------------------------------------

    def prepare(self, ctx: base.OutputContext, value: object) -> base.PreparedOutput:
        """Encode ``value`` (no I/O): JSON text, the bytes themselves, or validated rows."""
        ref = base.OutputRef(
            manager=ctx.manager_key,
            uri=f"postgres:{self.table}/{ctx.materialization_id}",
            version=str(ctx.materialization_id),
        )
        if self.mode == "rows":
            return self._prepare_rows(ctx, ref, value)
        if self.format == "bytes":
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ctx.attach(
                    errors.OutputNotSerializableError(
                        f"asset returned {type(value).__name__}, but its Postgres IO manager stores bytes "
                        "(format='bytes')"
                    )
                )
            data = bytes(value)
            return base.PreparedOutput(
                ref=ref.model_copy(update={"size_bytes": len(data)}), format="bytes", data=data
            )
        try:
            text = codec.dumps(value)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        if "\\u0000" in text:
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    "the output contains a NUL character, which JSONB cannot store"
                )
            )
        return base.PreparedOutput(
            ref=ref.model_copy(update={"size_bytes": len(text.encode())}), format="jsonb", value=text
        )

    def _prepare_rows(
        self, ctx: base.OutputContext, ref: base.OutputRef, value: object
    ) -> base.PreparedOutput:
        self._claim(ctx)
        if frames.frame_kind(value) is not None:
            return self._prepare_frame(ctx, ref, value)
        if not isinstance(value, list | tuple):
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    f"asset returned {type(value).__name__}, but PostgresIOManager(mode='rows') stores a "
                    "list of dicts or pydantic models"
                )
            )
        columns: tuple[str, ...] = ()
        rows: list[tuple[object, ...]] = []
        for i, item in enumerate(value):
            data = _row_dict(ctx, i, item)
            if i == 0:
                columns = self._columns(ctx, data)
            elif data.keys() != set(columns):
                raise ctx.attach(
                    errors.OutputNotSerializableError(
                        f"row {i} sets the columns {sorted(map(str, data))}, but row 0 sets "
                        f"{sorted(columns)}: every row must set the same columns"
                    )
                )
            rows.append(tuple(data[c] for c in columns))
        return base.PreparedOutput(
            ref=ref,
            format="rows",
            rows_table=self.table,
            partition_column=self.partition_column,
            rows_columns=columns,
            rows=tuple(rows),
        )

    def _prepare_frame(
        self, ctx: base.OutputContext, ref: base.OutputRef, value: object
    ) -> base.PreparedOutput:
        """A pandas or polars DataFrame or an Arrow table: its columns are the table's columns."""
        kind = frames.frame_kind(value)
        assert kind is not None  # noqa: S101 - checked by the caller
        try:
            table = frames.arrow_table(value, kind, preserve_index=False)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        columns = self._columns(ctx, dict.fromkeys(table.column_names))
        if len(set(columns)) != len(columns):
            raise ctx.attach(
                errors.OutputNotSerializableError(f"the frame has duplicate column names: {columns}")
            )
        digest = frames.arrow_hash(table)
        ctx.metadata.update(frames.describe(table, size_bytes=int(table.nbytes), digest=digest))
        return base.PreparedOutput(
            ref=ref,
            format="rows",
            rows_table=self.table,
            partition_column=self.partition_column,
            rows_columns=columns,
            frame=table,
        )

    def _columns(self, ctx: base.OutputContext, data: Mapping[object, object]) -> tuple[str, ...]:
        columns: list[str] = []
        for key in data:
            try:
                columns.append(
                    identifiers.parse_column(key, setting=f"column of a row for table {self.table}")
                )
            except errors.InvalidIdentifierError as exc:
                raise ctx.attach(exc) from None
        if self.partition_column in columns:
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    f"rows must not set the partition column {self.partition_column!r} of table "
                    f"{self.table}: FlowStone fills it with the partition of the materialization"
                )
            )
        return tuple(columns)

    def _claim(self, ctx: base.OutputContext) -> None:
        with self._lock:
            if self._rows_asset is None:
                self._rows_asset = ctx.asset
            owner = self._rows_asset
        if owner != ctx.asset:
            self.validate_assets([owner, ctx.asset])

    # -- load / delete --------------------------------------------------------------------------

    def load(self, ctx: base.InputContext) -> object:
        """Read the stored output of ``ctx.ref`` and decode it (validated against ``ctx.type_hint``)."""
        try:
            materialization_id = int(ctx.ref.version)
        except ValueError:
            raise ctx.attach(
                errors.OutputDecodeError(f"version {ctx.ref.version!r} is not a materialization id")
            ) from None
        if self.mode == "rows":
            return self._load_rows(ctx, materialization_id)
        row = self._bound().read_output(materialization_id)
        if row is None:
            raise ctx.attach(
                errors.IOManagerError(
                    f"no stored output for materialization {materialization_id}",
                    retryable=False,
                    context={"materialization_id": materialization_id},
                )
            )
        stored_format, value, data = row
        if stored_format == "bytes":
            return data
        try:
            return codec.from_jsonable(value, type_hint=ctx.type_hint)  # type: ignore[arg-type]
        except errors.FlowStoneError as exc:
            exc.context.setdefault("materialization_id", materialization_id)
            raise ctx.attach(exc) from None
        except (TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ctx.attach(
                errors.OutputDecodeError(
                    f"stored output of materialization {materialization_id} does not decode: {exc}",
                    context={"materialization_id": materialization_id},
                )
            ) from exc

    def _load_rows(self, ctx: base.InputContext, materialization_id: int) -> object:
        store = self._bound()
        if not isinstance(store, RowsOutputStore):
            raise ctx.attach(
                errors.ConfigurationError(
                    f"the store bound to PostgresIOManager(mode='rows') ({type(store).__name__}) cannot "
                    "read rows-mode outputs: it has no read_rows()"
                )
            )
        try:
            rows = store.read_rows(
                self.table,
                self.partition_column,
                asset=ctx.asset,
                partition_key=ctx.partition_key,
                materialization_id=materialization_id,
            )
        except errors.FlowStoneError as exc:
            exc.context.setdefault("materialization_id", materialization_id)
            raise ctx.attach(exc) from None
        hint = ctx.type_hint
        if frames.hint_kind(hint) is not None:  # a frame: the asset's columns, typed by the table
            try:
                types = store.table_types(self.table) if isinstance(store, RowsTypesStore) else None
                if types is None:
                    types = dict.fromkeys(rows[0] if rows else {}, "")
                types = {k: v for k, v in types.items() if k != self.partition_column}
                return frames.from_arrow(pg_frames.rows_table(rows, types), hint)
            except errors.FlowStoneError as exc:
                raise ctx.attach(exc) from None
        if hint is None or hint is inspect.Parameter.empty or isinstance(hint, str | typing.ForwardRef):
            return rows
        # The asset's own rows never hold the partition column (FlowStone fills it): validate them
        # against its type as it returned them.
        own = [{k: v for k, v in row.items() if k != self.partition_column} for row in rows]
        try:
            return pydantic.TypeAdapter(typing.cast(Any, hint)).validate_python(own)
        except (pydantic.ValidationError, pydantic.PydanticUserError) as exc:
            raise ctx.attach(
                errors.OutputDecodeError(
                    f"the rows of materialization {materialization_id} in {self.table} do not match "
                    f"the type {hint!r}: {exc}",
                    context={"materialization_id": materialization_id},
                )
            ) from None

    def delete(self, ref: base.OutputRef) -> None:
        """Remove the stored output of ``ref`` (idempotent).

        In rows mode this does nothing: the table holds only the latest output of each partition
        (older ones were replaced when a newer one committed), and that one is never deleted.
        """
        if self.mode == "rows":
            return
        self._bound().delete_output(int(ref.version))


def _parse_table(
    table: str, schema: str | None, allowed_tables: Collection[str] | None
) -> identifiers.QualifiedName:
    if schema is None:
        return identifiers.parse_table(table, setting="PostgresIOManager table", allowed=allowed_tables)
    schema_name = identifiers.parse_schema(schema, setting="PostgresIOManager schema")
    bare = identifiers.parse_table(table, setting="PostgresIOManager table")
    if bare.schema is not None:
        raise errors.ConfigurationError(
            f"PostgresIOManager got schema={schema!r} and a qualified table={table!r}: give the schema once"
        )
    return identifiers.parse_table(
        f"{schema_name}.{bare.name}", setting="PostgresIOManager schema and table", allowed=allowed_tables
    )


def _row_dict(ctx: base.OutputContext, index: int, item: object) -> dict[Any, object]:
    if isinstance(item, pydantic.BaseModel):
        return item.model_dump(mode="python", by_alias=True)
    if isinstance(item, Mapping):
        return dict(item)
    raise ctx.attach(
        errors.OutputNotSerializableError(
            f"row {index} is {type(item).__name__}; PostgresIOManager(mode='rows') stores dicts or "
            "pydantic models"
        )
    )
