"""DataFrames in Postgres rows mode (issue 18): pandas, polars and Arrow frames written as rows of a
user table in the success transaction, loaded back as the frame the parameter asks for."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pytest

import flowstone as fs
from flowstone import errors

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-03")
AT = datetime(2025, 1, 1, 12, tzinfo=UTC)


def frame(kind: str) -> object:
    data = {
        "name": ["a", None, "日本語"],
        "amount": [Decimal("1.50"), None, Decimal("-3.25")],
        "at": [AT, None, AT],
        "tags": [["x", "y"], [], None],
    }
    table = pa.table(
        data,
        schema=pa.schema(
            [
                ("name", pa.string()),
                ("amount", pa.decimal128(10, 2)),
                ("at", pa.timestamp("us", tz="UTC")),
                ("tags", pa.list_(pa.string())),
            ]
        ),
    )
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        return pl.from_arrow(table)
    return table


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_frames_round_trip_through_rows_mode(database_url: str, tmp_path: Path, kind: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE frame_rows (partition_key text NOT NULL, name text, amount numeric(10, 2), "
            "at timestamptz, tags text[])"
        )

    @fs.asset(partitions=DAYS, io_manager="rows")
    def sales() -> object:
        return frame(kind)

    @fs.asset(partitions=DAYS)
    def as_polars(sales: pl.DataFrame) -> int:
        assert isinstance(sales, pl.DataFrame)
        assert sales.columns == ["name", "amount", "at", "tags"]
        assert sales["amount"].to_list() == [Decimal("1.50"), None, Decimal("-3.25")]
        assert sales["at"].to_list()[0] == AT
        assert sales["tags"].to_list() == [["x", "y"], [], None]
        return sales.height

    @fs.asset(partitions=DAYS)
    def as_pandas(sales: pd.DataFrame) -> int:
        assert isinstance(sales, pd.DataFrame)
        assert sales["name"].tolist()[2] == "日本語"
        return len(sales)

    defs = fs.Definitions(
        assets=[sales, as_polars, as_pandas],
        io_managers={
            "rows": fs.PostgresIOManager(table="frame_rows", mode="rows"),
            "default": fs.PostgresIOManager(),
        },
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        rt.materialize(["sales", "as_polars", "as_pandas"], date(2025, 1, 1)).unwrap()
        rt.materialize("sales", date(2025, 1, 1)).unwrap()  # again: replaces the partition's rows
        assert rt.load("as_polars", date(2025, 1, 1)) == 3
        assert rt.load("as_pandas", date(2025, 1, 1)) == 3
        latest = rt.latest("sales", date(2025, 1, 1))
        assert latest is not None
        assert latest.metadata["row_count"] == 3
        assert str(latest.metadata["content_hash"]).startswith("sha256:")
        assert [c["name"] for c in latest.metadata["columns"]] == ["name", "amount", "at", "tags"]
        loaded = rt.load("sales", date(2025, 1, 1))
        assert isinstance(loaded, list)  # no annotation on the loader: the rows as dicts
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM frame_rows").fetchone()
    assert count == (3,)


def test_a_frame_column_the_table_lacks_is_refused_with_nothing_written(
    database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE narrow_rows (partition_key text NOT NULL, name text)")

    @fs.asset(partitions=DAYS, io_manager="rows")
    def wide() -> pl.DataFrame:
        return pl.DataFrame({"name": ["a"], "extra": [1]})

    @fs.asset(partitions=DAYS, io_manager="rows2")
    def hostile() -> pl.DataFrame:
        return pl.DataFrame({"name; drop table narrow_rows": ["a"]})

    defs = fs.Definitions(
        assets=[wide, hostile],
        io_managers={
            "rows": fs.PostgresIOManager(table="narrow_rows", mode="rows"),
            "rows2": fs.PostgresIOManager(table="narrow_rows", mode="rows"),
        },
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        with pytest.raises(errors.IOManagerError, match="extra"):
            rt.materialize("wide", date(2025, 1, 1))
        with pytest.raises(errors.InvalidIdentifierError):
            rt.materialize("hostile", date(2025, 1, 1))
        assert rt.latest("wide", date(2025, 1, 1)) is None
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM narrow_rows").fetchone() == (0,)


def test_frames_loaded_from_rows_take_the_table_column_types(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE typed_frame_rows (partition_key text NOT NULL, n integer, amount numeric(10, 2), "
            "at timestamptz, day date, tags text[], id uuid, label varchar(20))"
        )

    @fs.asset(partitions=DAYS, io_manager="rows")
    def typed(context: fs.AssetContext) -> pa.Table:
        if context.partition == date(2025, 1, 2):  # an empty frame: no rows, still typed columns
            return pa.table({"n": pa.array([], pa.int32())})
        return pa.table({"n": [1, None], "amount": pa.array([None, None], pa.decimal128(10, 2))})

    expected = pa.schema(
        [
            ("n", pa.int32()),
            ("amount", pa.decimal128(10, 2)),
            ("at", pa.timestamp("us", tz="UTC")),
            ("day", pa.date32()),
            ("tags", pa.list_(pa.string())),
            ("id", pa.string()),
            ("label", pa.string()),
        ]
    )

    @fs.asset(partitions=DAYS)
    def check(typed: pa.Table) -> int:
        assert typed.schema.remove_metadata() == expected
        return typed.num_rows

    defs = fs.Definitions(
        assets=[typed, check],
        io_managers={
            "rows": fs.PostgresIOManager(table="typed_frame_rows", mode="rows"),
            "default": fs.PostgresIOManager(),
        },
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        rt.materialize(["typed", "check"], date(2025, 1, 1)).unwrap()
        rt.materialize(["typed", "check"], date(2025, 1, 2)).unwrap()
        assert rt.load("check", date(2025, 1, 1)) == 2
        assert rt.load("check", date(2025, 1, 2)) == 0
