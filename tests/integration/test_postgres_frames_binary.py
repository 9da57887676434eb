"""Frames in Postgres rows mode go through binary COPY encoded from the Arrow columns (issue 18):
every supported column type lands exactly, values that do not fit are refused with nothing
written, and pairs without a binary form keep text COPY and the server's rules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

import flowstone as fs
from flowstone import errors
from flowstone.io import pg_copy

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-03")
DAY = date(2025, 1, 1)
NAIVE_8AM = datetime(2025, 1, 1, 8)  # noqa: DTZ001 - naive on purpose: a timestamp column
NAIVE_2000 = datetime(2000, 1, 1)  # noqa: DTZ001 - same
NAIVE_NOON = datetime(2025, 1, 1, 12)  # noqa: DTZ001 - same


@pytest.fixture
def binary_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many binary COPY streams were encoded (our own encoder wrapped, the database untouched)."""
    calls: list[int] = []
    real = pg_copy.chunks

    def counted(table: Any, plan: pg_copy.Plan, constant: bytes, batch_rows: int = 1000) -> Iterator[bytes]:
        calls.append(table.num_rows)
        return real(table, plan, constant, batch_rows)  # small batches: several per frame

    monkeypatch.setattr(pg_copy, "chunks", counted)
    return calls


def run(
    database_url: str, tmp_path: Path, ddl: str, make: Any, partition_column: str = "partition_key"
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE frame_rows ({ddl})")

    @fs.asset(partitions=DAYS, io_manager="rows")
    def sales() -> pa.Table:
        return make()

    defs = fs.Definitions(
        assets=[sales],
        io_managers={
            "rows": fs.PostgresIOManager(table="frame_rows", mode="rows", partition_column=partition_column)
        },
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        rt.materialize("sales", DAY).unwrap()


def test_every_supported_column_type_lands_exactly(
    database_url: str, tmp_path: Path, binary_batches: list[int]
) -> None:
    at = datetime(2025, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
    frame = pa.table(
        {
            "i2": pa.array([1, None, -32768], pa.int64()),
            "i4": pa.array([2**31 - 1, 0, None], pa.int64()),
            "i8": pa.array([None, -(2**63), 2**63 - 1], pa.int64()),
            "r": pa.array([1.5, None, -0.0], pa.float32()),
            "d": pa.array([float("inf"), 2.25, None], pa.float64()),
            "fi": pa.array([1, 2, None], pa.int32()),  # integers into a float column
            "b": pa.array([True, False, None]),
            "t": pa.array(["", None, "日本語 \\ \t\n"]),
            "v": pa.array(["abc", "x", None], pa.large_string()),
            "c": pa.array(["ab", None, "xyz"]),
            "cat": pa.array(["Adelie", None, "Adelie"]).dictionary_encode(),
            "raw": pa.array([b"\x00\xff", b"", None], pa.binary()),
            "day": pa.array([date(1999, 12, 31), None, date(2000, 1, 1)], pa.date32()),
            "at": pa.array(
                [at, None, datetime(1969, 7, 20, 20, 17, tzinfo=UTC)], pa.timestamp("ns", tz="Europe/Paris")
            ),
            "naive": pa.array([NAIVE_8AM, None, NAIVE_2000], pa.timestamp("ms")),
            "amount": pa.array([Decimal("1.50"), None, Decimal("-3.25")], pa.decimal128(10, 2)),
            "tags": pa.array([["x", None], [], None], pa.list_(pa.string())),
            "nums": pa.array([[1, 2], None, [3]], pa.list_(pa.int64())),
        }
    )
    ddl = (
        "partition_key text NOT NULL, i2 smallint, i4 integer, i8 bigint, r real, d double precision, "
        "fi double precision, b boolean, t text, v varchar(5), c char(3), cat text, raw bytea, day date, "
        "at timestamptz, naive timestamp, amount numeric(10, 2), tags text[], nums integer[]"
    )
    run(database_url, tmp_path, ddl, lambda: frame)
    assert binary_batches == [3]
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = conn.execute(
            f"SELECT {', '.join(frame.column_names)}, partition_key FROM frame_rows"
        ).fetchall()
    assert [row[:-1] for row in rows] == [
        (1, 2**31 - 1, None, 1.5, float("inf"), 1.0, True, "", "abc", "ab ", "Adelie", b"\x00\xff",
         date(1999, 12, 31), at, NAIVE_8AM, Decimal("1.50"), ["x", None], [1, 2]),
        (None, 0, -(2**63), None, 2.25, 2.0, False, None, "x", None, None, b"", None, None, None, None,
         [], None),
        (-32768, None, 2**63 - 1, -0.0, None, None, None, "日本語 \\ \t\n", None, "xyz", "Adelie", None,
         date(2000, 1, 1), datetime(1969, 7, 20, 20, 17, tzinfo=UTC), NAIVE_2000, Decimal("-3.25"),
         None, [3]),
    ]  # fmt: skip
    assert {row[-1] for row in rows} == {"d:2025-01-01"}


def test_a_large_frame_in_many_batches_and_a_typed_partition_column(
    database_url: str, tmp_path: Path, binary_batches: list[int]
) -> None:
    n = 10_007  # ten full batches of 1,000 rows and a short one
    frame = pa.table({"n": pa.array(range(n), pa.int64()), "s": pa.array([str(i) for i in range(n)])})
    run(database_url, tmp_path, "day date NOT NULL, n integer, s text", lambda: frame, partition_column="day")
    assert binary_batches == [n]
    with psycopg.connect(database_url) as conn:
        stats = conn.execute(
            "SELECT count(*), sum(n), count(DISTINCT s), min(day), max(day) FROM frame_rows"
        ).fetchone()
        mismatched = conn.execute("SELECT count(*) FROM frame_rows WHERE s <> n::text").fetchone()
    assert stats == (n, n * (n - 1) // 2, n, DAY, DAY)
    assert mismatched == (0,)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("n integer", pa.array([1, 2**40], pa.int64()), "does not fit"),
        ("n varchar(2)", pa.array(["ok", "too long"]), "too long"),
        ("n numeric(3, 1)", pa.array([Decimal("1.5"), Decimal("12345.6")], pa.decimal128(10, 1)), "overflow"),
    ],
)
def test_a_value_that_does_not_fit_is_refused_with_nothing_written(
    database_url: str,
    tmp_path: Path,
    binary_batches: list[int],
    *,
    column: str,
    values: pa.Array,
    message: str,
) -> None:
    with pytest.raises(errors.IOManagerError, match=message):
        run(database_url, tmp_path, f"partition_key text NOT NULL, {column}", lambda: pa.table({"n": values}))
    assert binary_batches == [2]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM frame_rows").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM flowstone_latest_materializations").fetchone() == (0,)


def test_pairs_without_a_binary_form_keep_text_copy_and_the_server_rules(
    database_url: str, tmp_path: Path, binary_batches: list[int]
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', 'Asia/Tokyo', false)")
        dbname = conn.info.dbname
        conn.execute(f"ALTER DATABASE \"{dbname}\" SET TimeZone = 'Asia/Tokyo'")
    frame = pa.table(
        {
            "at": pa.array([NAIVE_NOON], pa.timestamp("us")),  # naive into timestamptz
            "id": pa.array(["5f0c3c9e-8f43-4c8b-9a68-3f7a2f5f3a10"]),  # text into uuid
            "n": pa.array(["7"]),  # text into integer: the server parses it
            "amount": pa.array([1.25]),  # a float into numeric
        }
    )
    ddl = "partition_key text NOT NULL, at timestamptz, id uuid, n integer, amount numeric(5, 2)"
    run(database_url, tmp_path, ddl, lambda: frame)
    assert binary_batches == []
    with psycopg.connect(database_url) as conn:
        query = "SELECT at AT TIME ZONE 'Asia/Tokyo', id::text, n, amount FROM frame_rows"
        row = conn.execute(query).fetchone()
    assert row == (NAIVE_NOON, "5f0c3c9e-8f43-4c8b-9a68-3f7a2f5f3a10", 7, Decimal("1.25"))


def test_plan_covers_the_common_types_and_refuses_the_rest() -> None:
    schema = pa.schema(
        [("i", pa.int64()), ("f", pa.float64()), ("s", pa.string()), ("t", pa.timestamp("us", "UTC"))]
    )
    plan = pg_copy.plan(schema, ["int8", "float8", "text", "timestamptz"], lambda _name: None)
    assert plan is not None
    assert [c.kind for c in plan.columns] == ["fixed", "fixed", "text", "timestamp"]
    for pg_type, arrow_type in [
        ("int4", pa.float64()),  # a float into an integer column: the server decides, in text
        ("timestamptz", pa.timestamp("us")),
        ("timestamp", pa.timestamp("us", "UTC")),
        ("jsonb", pa.string()),
        ("uuid", pa.string()),
        ("numeric", pa.decimal128(5, 2)),  # no dump given
        ("bool", pa.int8()),
    ]:
        assert pg_copy.plan(pa.schema([("x", arrow_type)]), [pg_type], lambda _name: None) is None, pg_type

    def dump(_value: object) -> bytes:
        return b""

    for pg_type, arrow_type in [
        ("numeric", pa.float64()),  # psycopg's numeric dumper takes Decimals only: the server parses
        ("_int4", pa.list_(pa.string())),
        ("_text", pa.list_(pa.list_(pa.string()))),  # nested lists keep text COPY
        ("_numeric", pa.list_(pa.float64())),
    ]:
        assert pg_copy.plan(pa.schema([("x", arrow_type)]), [pg_type], lambda _name: dump) is None, pg_type
    for pg_type, arrow_type in [
        ("numeric", pa.decimal128(5, 2)),
        ("_int4", pa.list_(pa.int64())),
        ("_text", pa.large_list(pa.string())),
        ("_float8", pa.list_(pa.int32())),
    ]:
        assert pg_copy.plan(pa.schema([("x", arrow_type)]), [pg_type], lambda _name: dump) is not None, (
            pg_type
        )
