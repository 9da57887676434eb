"""The Postgres IO manager through the runtime: typed round trips through JSONB, rows in a user
table, atomicity with the success record (I10, I11), and retention (gc)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pydantic
import pytest

import flowstone as fs


class Event(pydantic.BaseModel):
    name: str
    at: datetime


VALUE = {
    "day": date(2025, 1, 2),
    "at": datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    "naive": datetime(2025, 1, 2, 3, 4),  # noqa: DTZ001 - naive datetimes must round-trip too
    "price": Decimal("12.340"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "raw": b"\x00\xffbytes",
    "nested": (1, ("a", (date(2025, 1, 1),))),
    "big": 2**70,
}


@fs.asset
def typed() -> dict[str, object]:
    return VALUE


@fs.asset
def events() -> list[Event]:
    return [Event(name="a", at=datetime(2025, 1, 1, tzinfo=UTC))]


@fs.asset
def reads_events(events: list[Event]) -> str:
    return events[0].name


@fs.asset(io_manager="blobs")
def blob() -> bytes:
    return b"\x00\x01binary"


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"), io_manager="table")
def daily_rows(context: fs.AssetContext) -> list[dict[str, object]]:
    n = 2 if context.partition == date(2025, 1, 1) else 1
    return [{"name": f"row{i}", "amount": Decimal(i)} for i in range(n)]


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def total(daily_rows: list[dict[str, object]]) -> int:
    return len(daily_rows)


@fs.asset
def counter() -> int:
    return 1


DEFS = fs.Definitions(
    assets=[typed, events, reads_events, blob, daily_rows, total, counter],
    io_managers={
        "blobs": fs.PostgresIOManager(format="bytes"),
        "table": fs.PostgresIOManager(table="analytics.daily_rows", mode="rows"),
    },
)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA analytics")
        conn.execute(
            "CREATE TABLE analytics.daily_rows "
            "(partition_key text NOT NULL, name text NOT NULL, amount numeric)"
        )
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        yield rt


def test_typed_values_round_trip_through_jsonb(runtime: fs.FlowStone, database_url: str):
    runtime.materialize("typed")
    assert runtime.load("typed") == VALUE
    loaded = runtime.load("typed")
    assert isinstance(loaded, dict)
    assert type(loaded["nested"]) is tuple
    with psycopg.connect(database_url) as conn:
        ((value,),) = conn.execute("SELECT value FROM flowstone_outputs").fetchall()
    assert value["day"] == {"$fs": "date", "v": "2025-01-02"}  # readable in SQL
    runtime.materialize(["events", "reads_events"])
    assert runtime.load("events") == [Event(name="a", at=datetime(2025, 1, 1, tzinfo=UTC))]
    assert runtime.load("reads_events") == "a"
    runtime.materialize("blob")
    assert runtime.load("blob") == b"\x00\x01binary"


def test_rows_mode_replaces_the_rows_of_the_partition(runtime: fs.FlowStone, database_url: str):
    runtime.materialize(["daily_rows", "total"], "2025-01-01")
    runtime.materialize(["daily_rows", "total"], "2025-01-02")
    assert runtime.load("total", "2025-01-01") == 2
    runtime.materialize("daily_rows", "2025-01-01")  # again: replaces, does not append
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT partition_key, name, amount FROM analytics.daily_rows ORDER BY 1, 2"
        ).fetchall()
    assert rows == [
        ("d:2025-01-01", "row0", Decimal(0)),
        ("d:2025-01-01", "row1", Decimal(1)),
        ("d:2025-01-02", "row0", Decimal(0)),
    ]


def test_i11_a_failing_lineage_insert_leaves_neither_output_nor_record(
    runtime: fs.FlowStone, database_url: str
):
    runtime.materialize("events")
    runtime.materialize("daily_rows", "2025-01-03")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION test_fail_lineage() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'lineage insert failed (injected)'; END $$;
            CREATE TRIGGER test_fail_lineage BEFORE INSERT ON flowstone_lineage
                FOR EACH ROW EXECUTE FUNCTION test_fail_lineage();
            """
        )
    result = runtime.materialize("reads_events", raise_on_error=False)
    row = result.step("reads_events")
    assert row.status == "failed"
    assert row.error is not None
    assert "lineage insert failed" in row.error["message"]
    with psycopg.connect(database_url) as conn:
        outputs = conn.execute(
            "SELECT count(*) FROM flowstone_outputs WHERE materialization_id = %s", (row.id,)
        ).fetchone()
    assert outputs == (0,)
    assert runtime.latest("reads_events") is None


def test_gc_keeps_the_latest_versions_and_reads_still_work(
    runtime: fs.FlowStone, database_url: str, tmp_path: Path
):
    for _ in range(4):
        runtime.materialize("counter")
    dry = runtime.gc(keep_last=2, dry_run=True)
    assert (dry.planned, dry.deleted) == (2, {"default": 2})
    report = runtime.gc(keep_last=2)
    assert report.deleted == {"default": 2}
    with psycopg.connect(database_url) as conn:
        ((left,),) = conn.execute("SELECT count(*) FROM flowstone_outputs").fetchall()
    assert left == 2
    assert runtime.load("counter") == 1
    assert runtime.gc(keep_last=2).planned == 0
    with pytest.raises(fs.ConfigurationError, match="keep_last"):
        runtime.gc(keep_last=0)


def test_gc_of_the_filesystem_manager_deletes_old_files(database_url: str, tmp_path: Path):
    defs = fs.Definitions(assets=[counter], io_managers={"default": fs.FilesystemIOManager(tmp_path / "out")})
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        for _ in range(3):
            rt.materialize("counter")
        assert len(list((tmp_path / "out").rglob("*.json"))) == 3
        assert rt.gc(keep_last=1).deleted == {"default": 2}
        assert len(list((tmp_path / "out").rglob("*.json"))) == 1
        assert rt.load("counter") == 1


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"), io_manager="counts")
def typed_rows(context: fs.AssetContext) -> list[dict[str, int]]:
    return [{"n": 1}, {"n": 2}]


def test_rows_mode_loads_validate_the_asset_type_without_the_partition_column(
    database_url: str, tmp_path: Path
):
    """An asset declared ``-> list[dict[str, int]]`` loads back as that type: the partition column
    FlowStone adds is not part of what the asset returned (0.2 refused it with OutputDecodeError)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE typed_counts (partition_key text NOT NULL, n int NOT NULL)")
    defs = fs.Definitions(
        assets=[typed_rows], io_managers={"counts": fs.PostgresIOManager(table="typed_counts", mode="rows")}
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        rt.materialize("typed_rows", "2025-01-01")
        assert sorted(rt.load("typed_rows", "2025-01-01"), key=lambda r: r["n"]) == [{"n": 1}, {"n": 2}]  # type: ignore[arg-type]
