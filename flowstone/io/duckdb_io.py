"""An IO manager that keeps each asset's DataFrames as one table of a DuckDB database file.

One table per asset (``<schema>.<asset>``, or the name ``tables`` gives it). An unpartitioned asset
replaces the whole table; a partitioned one replaces only the rows of its partition, whose encoded
key is in ``partition_column``. Each store runs in one DuckDB transaction, which also records the
version the table now holds for the partition in ``<schema>.flowstone_versions``: a load checks it,
so a table overwritten by a later attempt is never passed off as an older version.

Requires ``flowstone[duckdb]`` (duckdb and pyarrow); nothing is imported until the manager is built.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from flowstone import errors, identifiers, partition_keys
from flowstone.io import base, frames

__all__ = ["DuckDBIOManager"]

_VERSIONS_TABLE = "flowstone_versions"


def _quote(name: str) -> str:
    # Only names that passed the identifier allow-list (I5: ^[a-z_][a-z0-9_]*$) get here, and
    # they are quoted anyway.
    return f'"{name}"'


class DuckDBIOManager(base.IOManager):
    """Stores pandas and polars DataFrames and pyarrow Tables as rows of one DuckDB table per asset.

    ``DuckDBIOManager("warehouse.duckdb", schema="analytics")``. Loads return the frame the
    downstream parameter asks for (``pd.DataFrame``, ``pl.DataFrame``, ``pa.Table``; the kind the
    asset returned without one), in the order the rows were written, without the partition column.
    Several partitions read by a frame-annotated parameter load as one frame with a
    ``partition`` column holding each row's partition value.

    **Weaker guarantee than the versioned managers (I10):** the table holds only the latest written
    output of each partition, written before the success is recorded. A materialization that fails
    after its write leaves its rows in the table (the metadata still names the older success, and
    loading that one is refused rather than answered with newer rows). A DuckDB file accepts one
    writing process at a time: use it from one worker process or in-process materializations.

    Schema, table and column names pass the same allow-list as the Postgres IO manager (I5).
    Each store records ``row_count``, ``columns``, ``size_bytes`` (Arrow bytes) and
    ``content_hash`` (SHA-256 of the Arrow IPC stream) as metadata.
    """

    versioned: ClassVar[bool] = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        schema: str = "main",
        tables: Mapping[str, str] | None = None,
        partition_column: str = "partition_key",
        load_partition_column: str = "partition",
        content_hash: bool = True,
    ) -> None:
        """Keep the tables in the DuckDB database file ``path`` (``":memory:"`` for tests)."""
        self._duckdb = frames.require("duckdb", "duckdb")
        frames.require("pyarrow", "duckdb")
        text = os.fspath(path)
        self.path = text if text == ":memory:" else str(Path(text).expanduser().absolute())
        self.schema = identifiers.parse_column(schema, setting="DuckDBIOManager schema")
        self.tables = {
            asset: identifiers.parse_column(name, setting=f"DuckDBIOManager table of asset {asset!r}")
            for asset, name in (tables or {}).items()
        }
        self.partition_column = identifiers.parse_column(
            partition_column, setting="DuckDBIOManager partition_column"
        )
        self.load_partition_column = load_partition_column
        self.content_hash = content_hash
        self._lock = threading.Lock()
        self._con: Any = None

    def table_for(self, asset: str) -> str:
        """The validated table name of ``asset`` (``tables`` or the asset's own name)."""
        name = self.tables.get(asset, asset)
        if name == _VERSIONS_TABLE:
            raise errors.InvalidIdentifierError(
                f"DuckDBIOManager table {name!r} is FlowStone's own version table", retryable=False
            )
        return identifiers.parse_column(
            name, setting=f"DuckDBIOManager table of asset {asset!r} (set tables={{asset: name}})"
        )

    def _cursor(self) -> Any:
        with self._lock:
            if self._con is None:
                self._con = self._duckdb.connect(self.path)
            return self._con.cursor()  # a connection of its own for this thread

    def close(self) -> None:
        """Close the database file (the next use opens it again)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # -- store ----------------------------------------------------------------------------------

    def store(self, ctx: base.OutputContext, value: object) -> base.OutputRef:
        """Replace the asset's rows for ``ctx``'s partition with ``value`` in one transaction."""
        kind = frames.frame_kind(value)
        if kind is None:
            raise ctx.attach(
                errors.OutputNotSerializableError(
                    f"asset returned {type(value).__name__}, but DuckDBIOManager stores pandas or polars "
                    "DataFrames and pyarrow Tables"
                )
            )
        try:
            table_name = self.table_for(ctx.asset)
            table = frames.arrow_table(value, kind)
            if self.partition_column in table.column_names:
                raise errors.OutputNotSerializableError(
                    f"the frame has a column {self.partition_column!r}, which DuckDBIOManager fills with "
                    "the partition: rename it or set partition_column"
                )
            digest_of = frames.arrow_hash_beside(table) if self.content_hash else None
            try:
                self._write(ctx, table_name, table, kind)
            except BaseException:
                if digest_of is not None:  # no thread left behind; the write's error is the one told
                    with contextlib.suppress(BaseException):
                        digest_of()
                raise
            digest = digest_of() if digest_of is not None else None
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        except self._duckdb.Error as exc:
            raise ctx.attach(
                errors.IOManagerError(
                    f"DuckDB refused the rows of asset {ctx.asset!r} for table {table_name}: {exc}",
                    retryable=False,
                    context={"table": f"{self.schema}.{table_name}"},
                )
            ) from exc
        ctx.metadata.update(frames.describe(table, size_bytes=int(table.nbytes), digest=digest))
        return base.OutputRef(
            manager=ctx.manager_key,
            uri=f"duckdb://{self.path}#{self.schema}.{table_name}",
            version=ctx.version,
            size_bytes=int(table.nbytes),
        )

    def _write(self, ctx: base.OutputContext, table_name: str, table: Any, kind: str) -> None:
        schema, target = _quote(self.schema), f"{_quote(self.schema)}.{_quote(table_name)}"
        column = _quote(self.partition_column)
        cur = self._cursor()
        try:
            cur.register("flowstone_frame", table)
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {schema}.{_VERSIONS_TABLE} (table_name VARCHAR NOT NULL, "
                    "partition_key VARCHAR NOT NULL, version VARCHAR NOT NULL, frame_kind VARCHAR NOT NULL, "
                    "arrow_schema BLOB NOT NULL, PRIMARY KEY (table_name, partition_key))"
                )
                if ctx.partition_key == partition_keys.UNPARTITIONED:
                    cur.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM flowstone_frame")  # noqa: S608
                else:
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {target} AS "  # noqa: S608 - validated, quoted names
                        f"SELECT *, CAST(NULL AS VARCHAR) AS {column} FROM flowstone_frame LIMIT 0"
                    )
                    cur.execute(f"DELETE FROM {target} WHERE {column} = ?", [ctx.partition_key])  # noqa: S608
                    cur.execute(
                        f"INSERT INTO {target} BY NAME SELECT *, ?::VARCHAR AS {column} FROM flowstone_frame",  # noqa: S608
                        [ctx.partition_key],
                    )
                cur.execute(
                    f"INSERT OR REPLACE INTO {schema}.{_VERSIONS_TABLE} VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                    [table_name, ctx.partition_key, ctx.version, kind, table.schema.serialize().to_pybytes()],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    # -- load -----------------------------------------------------------------------------------

    def read_table(self, ctx: base.InputContext) -> tuple[Any, frames.Kind]:
        """The rows of ``ctx``'s partition as a ``pyarrow.Table`` and the kind they were stored as;
        refused if the table no longer holds the version ``ctx.ref`` names."""
        try:
            table_name = self.table_for(ctx.asset)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None
        schema, target = _quote(self.schema), f"{_quote(self.schema)}.{_quote(table_name)}"
        cur = self._cursor()
        try:
            cur.execute("BEGIN TRANSACTION")  # the version check and the rows: one snapshot
            try:
                found = cur.execute(
                    f"SELECT version, frame_kind, arrow_schema FROM {schema}.{_VERSIONS_TABLE} "  # noqa: S608
                    "WHERE table_name = ? AND partition_key = ?",
                    [table_name, ctx.partition_key],
                ).fetchall()
                if not found or found[0][0] != ctx.ref.version:
                    held = found[0][0] if found else "nothing"
                    raise ctx.attach(
                        errors.IOManagerError(
                            f"DuckDB table {self.schema}.{table_name} holds version {held} of this "
                            f"partition, not {ctx.ref.version}: it keeps only the latest written output "
                            "(materialize the asset again)",
                            retryable=False,
                            context={"table": f"{self.schema}.{table_name}", "uri": ctx.ref.uri},
                        )
                    )
                if ctx.partition_key == partition_keys.UNPARTITIONED:
                    result = cur.sql(f"SELECT * FROM {target}")  # noqa: S608
                else:
                    result = cur.sql(
                        f"SELECT * EXCLUDE ({_quote(self.partition_column)}) FROM {target} "  # noqa: S608
                        f"WHERE {_quote(self.partition_column)} = ?",
                        params=[ctx.partition_key],
                    )
                table = result.to_arrow_table()  # a relation: no extra copy of the rows
            finally:
                cur.execute("COMMIT")
        except self._duckdb.Error as exc:
            raise ctx.attach(
                errors.IOManagerError(
                    f"could not read DuckDB table {self.schema}.{table_name}: {exc}", retryable=False
                )
            ) from exc
        finally:
            cur.close()
        kind = str(found[0][1])
        table = _restore_schema(table, found[0][2])
        return table, (kind if kind in ("pandas", "polars", "arrow") else "arrow")  # type: ignore[return-value]

    def load(self, ctx: base.InputContext) -> object:
        """The rows of the partition as the frame ``ctx.type_hint`` asks for."""
        table, kind = self.read_table(ctx)
        try:
            return frames.from_arrow(table, ctx.type_hint, default=kind)
        except errors.FlowStoneError as exc:
            raise ctx.attach(exc) from None

    def loads_combined(self, type_hint: object) -> bool:
        """True: several partitions read by a frame-annotated parameter load as one frame."""
        return frames.hint_kind(type_hint) is not None

    def load_combined(self, ctxs: Sequence[base.InputContext], type_hint: object) -> object:
        """The partitions of ``ctxs`` as one frame with :attr:`load_partition_column`."""
        parts = [(ctx, self.read_table(ctx)[0]) for ctx in ctxs]
        return frames.combine(parts, self.load_partition_column, type_hint)

    # -- delete / gc ----------------------------------------------------------------------------

    def delete(self, ref: base.OutputRef) -> None:
        """Nothing to do: the table keeps only the latest output of each partition, and an older
        version was replaced when a newer one was written."""

    def stored_versions(self, asset: str, manager_key: str) -> Iterator[tuple[int, base.OutputRef]]:
        """Nothing: there are no separate versions to collect."""
        return iter(())


def _restore_schema(table: Any, serialized: bytes) -> Any:
    """Cast the rows DuckDB returns back to the Arrow schema the frame was stored with.

    DuckDB keeps values, not every Arrow detail: a timestamp's time zone comes back as the session's,
    a dictionary (categorical) column as plain strings, and pandas' index and extension dtypes
    (``Int64``) live in schema metadata. The schema is an Arrow IPC message (no code runs when it is
    read, I4); a frame whose stored schema no longer fits (an older table) is returned uncast.
    """
    pa = frames.require("pyarrow", "duckdb")
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    if schema.names != table.column_names:
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return table
