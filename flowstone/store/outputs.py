"""SQL of the Postgres IO manager beyond the success statement: rows-mode user tables and retention.

Every function takes a psycopg connection and runs on it (inside the caller's transaction when
there is one), so the caller decides what commits together. Static SQL is in
``sql/queries/outputs.sql``; the statements that name a user table are composed here, with the
identifiers validated by :mod:`flowstone.identifiers` and rendered only through
``psycopg.sql.Identifier``, and every value bound as a parameter (I5).

**Rows mode** (``PostgresIOManager(table="analytics.daily_events", mode="rows")``):
:func:`write_rows` replaces the rows of one partition of a user table inside the success
transaction of the materialization (I10, I11), so the table changes exactly when the ``succeeded``
row commits. Writers of the same table partition are serialized by a transaction-scoped advisory
lock, and a writer whose materialization is not (or no longer) the latest succeeded one of its
asset and partition (``finished_at DESC, id DESC``, I8) writes nothing: the table always holds the
output that ``latest()`` returns. :func:`read_rows` reads it back under the shared lock and refuses
to return rows that belong to another materialization.

The partition column receives the encoded partition key (``d:2025-01-01``, joinable with
``flowstone_materializations.partition_key``) when it is a string column (``text``, ``varchar``),
or the partition value itself (a ``date``, ``int``, ``timestamptz`` ...) for any other type.

**Retention**: :func:`output_gc_plan` lists the outputs that are not among the latest
``keep_last`` succeeded materializations of their asset and partition; :func:`output_gc_delete`
deletes those stored in ``flowstone_outputs``. Other IO managers delete theirs through
``IOManager.delete``.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pydantic_core
from psycopg import pq, sql
from psycopg.abc import Buffer
from psycopg.adapt import PyFormat, Transformer
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb

from flowstone import errors, partition_keys
from flowstone.identifiers import QualifiedName
from flowstone.io import pg_copy
from flowstone.io.base import PreparedOutput
from flowstone.store import base, records
from flowstone.store.pg import Q

__all__ = [
    "Column",
    "TableInfo",
    "describe_table",
    "output_delete",
    "output_gc_delete",
    "output_gc_plan",
    "output_get",
    "output_mark_deleted",
    "read_rows",
    "table_columns",
    "write_rows",
]

Conn = psycopg.Connection[Any]
"""Any row factory: the rows-mode functions also run on connections of the caller's choosing."""

_TABLE_KINDS = {"r": "table", "p": "partitioned table"}
_KIND_NAMES = {"v": "view", "m": "materialized view", "f": "foreign table", "S": "sequence", "i": "index"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a user table, from the catalog."""

    name: str
    data_type: str
    """The type as Postgres prints it (``format_type``), e.g. ``numeric(10,2)``."""
    type_name: str
    """The type's name in ``pg_type`` (``jsonb``, ``date``, ``text``, ...)."""
    type_category: str
    """``pg_type.typcategory``: ``S`` for string types."""
    type_oid: int
    """The type's oid (binary COPY sends each value in the binary form of exactly this type)."""
    generated: bool
    identity_always: bool

    @property
    def is_string(self) -> bool:
        """A string type (``text``, ``varchar``, ``char``, ...)."""
        return self.type_category == "S"


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A user table as the catalog describes it (resolved through ``search_path``)."""

    table: QualifiedName
    oid: int
    columns: dict[str, Column]


# -- user tables ------------------------------------------------------------------------------


def describe_table(conn: Conn, table: QualifiedName) -> TableInfo:
    """The columns of ``table`` from the catalog; a missing table or a non-table is an error."""
    with (
        _translate(f"read the catalog entry of table {table}", table),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        rows = cur.execute(Q("output_table_columns"), {"schema": table.schema, "name": table.name}).fetchall()
    if not rows:
        raise errors.IOManagerError(
            f"table {table} does not exist (or is not visible to this database user); FlowStone does "
            "not create user tables: create it first",
            retryable=False,
            context={"table": str(table)},
        )
    kind = rows[0]["relkind"]
    if kind not in _TABLE_KINDS:
        raise errors.IOManagerError(
            f"{table} is a {_KIND_NAMES.get(kind, f'relation of kind {kind!r}')}, not a table",
            retryable=False,
            context={"table": str(table)},
        )
    columns = {
        r["column_name"]: Column(
            name=r["column_name"],
            data_type=r["data_type"],
            type_name=r["type_name"],
            type_category=r["type_category"],
            type_oid=int(r["type_oid"]),
            generated=r["generated"],
            identity_always=r["identity_always"],
        )
        for r in rows
        if r["column_name"] is not None
    }
    return TableInfo(table=table, oid=int(rows[0]["table_oid"]), columns=columns)


def table_columns(conn: Conn, table: QualifiedName) -> dict[str, Column]:
    """The columns of ``table`` by name, in table order (see :func:`describe_table`)."""
    return describe_table(conn, table).columns


def write_rows(
    conn: Conn,
    prepared: PreparedOutput,
    *,
    materialization_id: int,
    asset: str,
    partition_key: str,
) -> int | None:
    """Replace the rows of ``partition_key`` in ``prepared.rows_table`` with ``prepared.rows``.

    Must run inside the success transaction of ``materialization_id``, after its ``succeeded``
    update (I10, I11): the rows commit with the metadata or not at all. Returns the number of rows
    written, or ``None`` when the materialization is not the latest succeeded one of ``asset`` and
    ``partition_key`` (a newer output already committed, or the success update did not apply), in
    which case the table is left as it is. Raises :class:`~flowstone.errors.IOManagerError`
    (not retryable) for a missing table, unknown or generated columns, and values the table
    refuses; the caller's transaction must then roll back.
    """
    table, column = _rows_target(prepared)
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        raise errors.StoreError(
            "write_rows must run inside the success transaction of its materialization (I11)",
            retryable=False,
            asset=asset,
            context={"materialization_id": materialization_id},
        )
    info = describe_table(conn, table)
    _check_columns(info, column, prepared.rows_columns)
    target = info.columns[column]
    partition_value = _partition_value(target, partition_key, table)
    with (
        _translate(f"write the rows of asset {asset!r} into {table}", table),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute(Q("output_rows_lock"), {"lock_key": _lock_key(info, partition_key)})
        if _latest_id(cur, asset, partition_key) != materialization_id:
            return None
        cur.execute(
            sql.SQL("DELETE FROM {table} WHERE {column} = %(partition)s").format(
                table=table.sql(), column=sql.Identifier(column)
            ),
            {"partition": partition_value},
        )
        if prepared.frame is not None:
            return _copy_frame(conn, cur, info, prepared, partition_value)
        if not prepared.rows:
            return 0
        _copy_text(
            cur, info, prepared=prepared, column=column, partition_value=partition_value, rows=prepared.rows
        )
    return len(prepared.rows)


def _copy_text(
    cur: psycopg.Cursor[Any],
    info: TableInfo,
    *,
    prepared: PreparedOutput,
    column: str,
    partition_value: object,
    rows: Iterable[tuple[object, ...]],
) -> None:
    """Text COPY of Python row tuples: the server parses each value's text into its column type."""
    json_at = [i for i, name in enumerate(prepared.rows_columns) if _json_kind(info.columns[name])]
    names = sql.SQL(", ").join(sql.Identifier(c) for c in (column, *prepared.rows_columns))
    statement = sql.SQL("COPY {table} ({names}) FROM STDIN").format(table=info.table.sql(), names=names)
    with cur.copy(statement) as copy:
        for index, row in enumerate(rows):
            values = list(row)
            for i in json_at:
                values[i] = _json_value(info.columns[prepared.rows_columns[i]], values[i], index, info.table)
            copy.write_row((partition_value, *values))


def _copy_frame(
    conn: Conn, cur: psycopg.Cursor[Any], info: TableInfo, prepared: PreparedOutput, partition_value: object
) -> int:
    """Write an Arrow table with binary COPY, encoded column by column (:mod:`flowstone.io.pg_copy`);
    a column without a binary encoding there makes the whole frame go through text COPY instead."""
    frame = prepared.frame
    column = typing.cast(str, prepared.partition_column)
    rows = int(frame.num_rows)
    if rows == 0:
        return 0
    target = info.columns[column]
    oids = {c.type_name: c.type_oid for c in info.columns.values()}
    plan: pg_copy.Plan | None = None
    # Binary text is taken in the client encoding: only send UTF-8 text on a UTF-8 connection.
    if conn.info.encoding == "utf-8":
        try:
            constant = _binary_dump(conn, target.type_oid)(partition_value)
        except (psycopg.Error, TypeError, ValueError, OverflowError):
            pass  # e.g. a naive datetime partition into timestamptz: the server's rules, in text
        else:
            plan = pg_copy.plan(
                frame.select(list(prepared.rows_columns)).schema,
                [info.columns[c].type_name for c in prepared.rows_columns],
                lambda type_name: _binary_dump(conn, oids[type_name]) if type_name in oids else None,
            )
    if plan is None:
        rows_of = zip(*(frame.column(c).to_pylist() for c in prepared.rows_columns), strict=True)
        _copy_text(cur, info, prepared=prepared, column=column, partition_value=partition_value, rows=rows_of)
        return rows
    names = sql.SQL(", ").join(sql.Identifier(c) for c in (column, *prepared.rows_columns))
    statement = sql.SQL("COPY {table} ({names}) FROM STDIN (FORMAT BINARY)").format(
        table=info.table.sql(), names=names
    )
    try:
        with cur.copy(statement) as copy:
            for chunk in pg_copy.chunks(frame, plan, constant):
                copy.write(chunk)
    except (TypeError, ValueError, OverflowError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise errors.IOManagerError(
            f"write the rows of the frame into {info.table}: a value does not fit its column: {exc}",
            retryable=False,
            context={"table": str(info.table)},
        ) from exc
    return rows


def _binary_dump(conn: Conn, type_oid: int) -> Callable[[object], bytes]:
    """psycopg's binary dumper of ``type_oid``: one non-NULL value to its binary payload."""
    tx = Transformer(conn)
    tx.set_dumper_types([type_oid], pq.Format.BINARY)
    formats = [PyFormat.BINARY]

    def dump(value: object) -> bytes:
        return bytes(typing.cast(Buffer, tx.dump_sequence([value], formats)[0]))

    return dump


def read_rows(
    conn: Conn,
    table: QualifiedName,
    partition_column: str,
    *,
    asset: str,
    partition_key: str,
    materialization_id: int,
) -> list[dict[str, Any]]:
    """The rows of ``partition_key`` in ``table`` (every column, in no particular order).

    Raises :class:`~flowstone.errors.IOManagerError` (not retryable) when ``materialization_id`` is
    not the latest succeeded materialization of ``asset`` and ``partition_key``: a rows-mode table
    keeps only the latest output of each partition, and older versions are never passed off as
    the requested one.
    """
    with conn.transaction():
        info = describe_table(conn, table)
        if partition_column not in info.columns:
            raise _missing_columns(info, [partition_column])
        value = _partition_value(info.columns[partition_column], partition_key, table)
        with (
            _translate(f"read the rows of asset {asset!r} from {table}", table),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            cur.execute(Q("output_rows_lock_shared"), {"lock_key": _lock_key(info, partition_key)})
            latest = _latest_id(cur, asset, partition_key)
            if latest != materialization_id:
                now_holds = "no succeeded output" if latest is None else f"materialization {latest}"
                raise errors.IOManagerError(
                    f"table {table} no longer holds the output of materialization {materialization_id} "
                    f"for this partition (the latest is {now_holds}): a rows-mode table keeps only the "
                    "latest output of each partition",
                    retryable=False,
                    asset=asset,
                    partition=partition_key,
                    context={"materialization_id": materialization_id, "latest_id": latest},
                )
            query = sql.SQL("SELECT * FROM {table} WHERE {column} = %(partition)s").format(
                table=table.sql(), column=sql.Identifier(partition_column)
            )
            return cur.execute(query, {"partition": value}).fetchall()


def _rows_target(prepared: PreparedOutput) -> tuple[QualifiedName, str]:
    if prepared.format != "rows" or prepared.rows_table is None or prepared.partition_column is None:
        raise errors.StoreError(
            f"write_rows needs a rows-mode output (format 'rows' with a table and a partition "
            f"column), not format {prepared.format!r}",
            retryable=False,
        )
    return prepared.rows_table, prepared.partition_column


def _check_columns(info: TableInfo, partition_column: str, columns: Sequence[str]) -> None:
    missing = [c for c in (partition_column, *columns) if c not in info.columns]
    if missing:
        raise _missing_columns(info, missing)
    computed = [
        c
        for c in (partition_column, *columns)
        if info.columns[c].generated or info.columns[c].identity_always
    ]
    if computed:
        raise errors.IOManagerError(
            f"table {info.table}: column(s) {', '.join(map(repr, computed))} are generated by the "
            "database (GENERATED ALWAYS) and cannot be written; leave them out of the rows",
            retryable=False,
            context={"table": str(info.table), "columns": computed},
        )


def _missing_columns(info: TableInfo, missing: Sequence[str]) -> errors.IOManagerError:
    return errors.IOManagerError(
        f"table {info.table} has no column(s) {', '.join(map(repr, missing))}; its columns are "
        f"{', '.join(info.columns) or '(none)'}",
        retryable=False,
        context={"table": str(info.table), "missing": list(missing), "columns": list(info.columns)},
    )


def _partition_value(column: Column, partition_key: str, table: QualifiedName) -> object:
    """The encoded key for a string column; the typed partition value for any other type."""
    if column.is_string:
        return partition_key
    value = partition_keys.decode(partition_key)
    if value is None or isinstance(value, tuple):
        what = "an unpartitioned asset" if value is None else "a multi-dimensional partition"
        raise errors.IOManagerError(
            f"table {table}: partition column {column.name!r} is {column.data_type}, but {what} has "
            "no single typed value; use a text column (it receives the encoded partition key)",
            retryable=False,
            partition=partition_key,
            context={"table": str(table), "column": column.name},
        )
    return value


def _lock_key(info: TableInfo, partition_key: str) -> str:
    # The table's oid, not its spelling: "events" and "public.events" are the same rows.
    return f"flowstone_rows:{info.oid}:{partition_key}"


def _latest_id(cur: psycopg.Cursor[dict[str, Any]], asset: str, partition_key: str) -> int | None:
    """The id ``latest()`` returns for (asset, partition_key): the one definition of latest (I8)."""
    row = cur.execute(
        Q("materialization_latest"), {"asset": asset, "partition_key": partition_key}
    ).fetchone()
    return None if row is None else int(row["id"])


def _json_kind(column: Column) -> bool:
    return column.type_name in ("json", "jsonb")


def _json_value(column: Column, value: object, index: int, table: QualifiedName) -> object:
    if value is None:
        return None
    # Plain JSON for the user's own table (dates as ISO text, Decimals as numbers), not the typed
    # codec's tagged objects: other tools read these columns. Encoded here, not lazily by psycopg,
    # so that a bad value is reported with its row and column.
    try:
        text = json.dumps(pydantic_core.to_jsonable_python(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.OutputNotSerializableError(
            f"row {index}, column {column.name!r} of table {table}: the value is not JSON ({exc})",
            context={"table": str(table), "column": column.name, "row": index},
        ) from None
    wrapper = Jsonb if column.type_name == "jsonb" else Json
    return wrapper(text, dumps=_as_is)


def _as_is(text: object) -> str:
    return str(text)


@contextmanager
def _translate(action: str, table: QualifiedName) -> Iterator[None]:
    """Data errors and refusals of the user's table become IOManagerError (not retryable); lost
    connections, serialization failures and deadlocks propagate for the caller to retry."""
    try:
        yield
    except (
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.ProgrammingError,
        psycopg.NotSupportedError,
    ) as exc:
        raise errors.IOManagerError(
            f"{action}: {str(exc).strip()}",
            retryable=False,
            context={"table": str(table), "sqlstate": exc.sqlstate},
        ) from exc


# -- retention --------------------------------------------------------------------------------


def output_gc_plan(conn: Conn, keep_last: int) -> list[records.GcCandidate]:
    """Outputs no longer needed when keeping the latest ``keep_last`` succeeded per asset+partition.

    Per (asset, partition_key), succeeded materializations are ranked ``finished_at DESC, id DESC``
    (the order of ``latest()``, I8); those ranked after ``keep_last`` are returned, oldest first per
    partition. ``keep_last`` is at least 1, so the output ``latest()`` returns is never planned.
    Materializations of runs that still have unfinished steps are left out: a later step of the
    same run may still read them.
    """
    base.check_keep_last(keep_last)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(Q("output_gc_plan"), {"keep_last": keep_last}).fetchall()
    return [
        records.GcCandidate(
            materialization_id=r["id"],
            asset=r["asset"],
            partition_key=r["partition_key"],
            output_ref=r["output_ref"],
        )
        for r in rows
    ]


def output_gc_delete(conn: Conn, ids: Sequence[int]) -> list[int]:
    """Delete the ``flowstone_outputs`` rows of ``ids``; returns the ids actually deleted.

    The statement re-checks that every deleted output has a newer succeeded materialization of its
    asset and partition, so even a stale or wrong list cannot remove the output ``latest()``
    returns. Rows locked by a concurrent transaction are skipped (a later gc deletes them).
    """
    if not ids:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(Q("output_gc_delete"), {"ids": list(ids)}).fetchall()
    return sorted(r["materialization_id"] for r in rows)


def output_mark_deleted(conn: Conn, ids: Sequence[int], now: datetime | None) -> None:
    """Record that gc deleted the output versions of these materializations."""
    if ids:
        conn.execute(Q("output_mark_deleted"), {"ids": list(ids), "now": now})


def output_get(conn: Conn, materialization_id: int) -> tuple[str, object, bytes | None] | None:
    """(format, JSON value, bytes) of the output stored with a materialization, or ``None``."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q("output_get"), {"id": materialization_id}).fetchone()
    return None if row is None else (row["format"], row["value"], row["data"])


def output_delete(conn: Conn, materialization_id: int) -> None:
    """Remove the stored output of a materialization (idempotent)."""
    conn.execute(Q("output_delete"), {"id": materialization_id})
