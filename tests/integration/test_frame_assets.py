"""DataFrames as assets through a real runtime on Postgres (issue 18): Parquet and DuckDB managers,
frame metadata in flowstone_materializations, several partitions loaded as one frame, and orphans
of attempts that never committed collected by gc."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import flowstone as fs
from flowstone import errors

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-02")


@fs.asset(partitions=DAYS)
def readings(context: fs.AssetContext) -> pl.DataFrame:
    day = context.partition
    assert isinstance(day, date)
    return pl.DataFrame({"sensor": ["a", "b"], "value": [day.day * 1.0, day.day * 2.0]})


@fs.asset(partitions=DAYS, io_manager="warehouse")
def cleaned(readings: pa.Table) -> pd.DataFrame:
    assert isinstance(readings, pa.Table)
    frame = readings.to_pandas()
    frame["value"] = frame["value"] * 10
    return frame


@fs.asset(partition_mapping={"cleaned": fs.AllPartitions()})
def summary(cleaned: pl.DataFrame) -> pl.DataFrame:
    assert isinstance(cleaned, pl.DataFrame)
    return cleaned.group_by("partition").agg(pl.col("value").sum()).sort("partition")


@fs.asset(partition_mapping={"readings": fs.AllPartitions()}, io_manager="values")
def as_dict(readings: dict[date, object]) -> int:
    # an annotation that is not a frame keeps the {partition: value} dict
    return sum(len(frame) for frame in readings.values())  # type: ignore[arg-type]


def definitions(tmp_path: Path) -> fs.Definitions:
    return fs.Definitions(
        assets=[readings, cleaned, summary, as_dict],
        io_managers={
            "default": fs.ParquetIOManager(tmp_path / "lake"),
            "warehouse": fs.DuckDBIOManager(tmp_path / "warehouse.duckdb", schema="analytics"),
            "values": fs.PostgresIOManager(),
        },
    )


def test_frames_flow_through_parquet_and_duckdb_with_metadata(database_url: str, tmp_path: Path) -> None:
    with fs.FlowStone(definitions(tmp_path), database_url=database_url, home=tmp_path) as rt:
        for day in (date(2025, 1, 1), date(2025, 1, 2)):
            rt.materialize(["readings", "cleaned"], partition=day).unwrap()
        rt.materialize(["summary", "as_dict"]).unwrap()
        result = rt.load("summary")
        assert isinstance(result, pl.DataFrame)
        assert result.to_dict(as_series=False) == {
            "partition": [date(2025, 1, 1), date(2025, 1, 2)],
            "value": [30.0, 60.0],
        }
        assert rt.load("as_dict") == 4
        latest = rt.latest("readings", date(2025, 1, 2))
        assert latest is not None
        meta = latest.metadata
        assert meta["row_count"] == 2
        assert [c["name"] for c in meta["columns"]] == ["sensor", "value"]
        assert meta["columns"][1]["type"] == "double"
        assert str(meta["content_hash"]).startswith("sha256:")
        assert latest.output_ref is not None
        assert meta["size_bytes"] == latest.output_ref["size_bytes"]
        cleaned_row = rt.latest("cleaned", date(2025, 1, 1))
        assert cleaned_row is not None
        assert cleaned_row.metadata["row_count"] == 2
        loaded = rt.load("cleaned", date(2025, 1, 1))
        assert isinstance(loaded, pd.DataFrame)  # the kind the asset returned
        assert loaded["value"].tolist() == [10.0, 20.0]


def test_an_attempt_that_never_committed_leaves_no_visible_output_and_gc_collects_it(
    database_url: str, tmp_path: Path
) -> None:
    with fs.FlowStone(definitions(tmp_path), database_url=database_url, home=tmp_path) as rt:
        row = rt.materialize("readings", partition=date(2025, 1, 1)).step("readings", date(2025, 1, 1))
        manager = rt.io_managers["default"]
        assert isinstance(manager, fs.ParquetIOManager)
        # attempt 2 of the same materialization wrote its file, then crashed before the success
        orphan = Path(manager.path_for("readings", row.partition_key, f"{row.id}-2"))
        pa_table = pa.table({"sensor": ["zzz"], "value": [-1.0]})
        import pyarrow.parquet as pq  # noqa: PLC0415

        pq.write_table(pa_table, orphan)
        visible = rt.load("readings", date(2025, 1, 1))
        assert isinstance(visible, pl.DataFrame)
        assert visible["sensor"].to_list() == ["a", "b"]  # the committed version, not the orphan
        assert rt.gc(dry_run=True).orphans == {"default": 1}
        assert orphan.exists()
        assert rt.gc().orphans == {"default": 1}
        assert not orphan.exists()
        assert Path(manager.path_for("readings", row.partition_key, row.id)).exists()


def test_a_non_frame_output_is_refused_and_recorded(database_url: str, tmp_path: Path) -> None:
    @fs.asset
    def not_a_frame() -> list[int]:
        return [1, 2]

    defs = fs.Definitions(
        assets=[not_a_frame], io_managers={"default": fs.ParquetIOManager(tmp_path / "lake")}
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        with pytest.raises(errors.OutputNotSerializableError, match="ParquetIOManager stores"):
            rt.materialize("not_a_frame")
        assert rt.latest("not_a_frame") is None
        assert not (tmp_path / "lake").exists()


def test_flowstone_status_shows_frame_metadata(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowstone import cli  # noqa: PLC0415

    with fs.FlowStone(definitions(tmp_path), database_url=database_url, home=tmp_path) as rt:
        rt.materialize("readings", partition=date(2025, 1, 1)).unwrap()
    capsys.readouterr()
    assert cli.main(["status", "readings", "--metadata", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "metadata of #" in out
    assert "row_count=2 columns=[sensor: large_string, value: double] size_bytes=" in out
    assert "content_hash=sha256:" in out
    assert cli.main(["status", "readings", "--database-url", database_url]) == 0
    assert "metadata of" not in capsys.readouterr().out


WEEK = fs.DailyPartitions(start="2025-01-01", end="2025-01-05")


@fs.asset(partitions=WEEK)
def sales(context: fs.AssetContext) -> pa.Table:
    day = context.partition
    assert isinstance(day, date)
    return pa.table({"amount": [day.day]})


@fs.asset(partitions=WEEK, partition_mapping={"sales": fs.TimeWindowRange(-2, 0)})
def rolling(sales: pl.DataFrame) -> pl.DataFrame:
    # the last three days (fewer at the start) as one frame with a `partition` column
    return sales.select(pl.col("amount").sum(), pl.col("partition").min().alias("first_day"))


def test_a_rolling_window_loads_as_one_frame(database_url: str, tmp_path: Path) -> None:
    defs = fs.Definitions(
        assets=[sales, rolling], io_managers={"default": fs.ParquetIOManager(tmp_path / "lake")}
    )
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        for day in WEEK.keys():  # noqa: SIM118 - partitions, not a dict
            rt.materialize("sales", day).unwrap()
        rt.materialize("rolling", date(2025, 1, 1)).unwrap()
        rt.materialize("rolling", date(2025, 1, 4)).unwrap()
        first = rt.load("rolling", date(2025, 1, 1))
        fourth = rt.load("rolling", date(2025, 1, 4))
        assert isinstance(first, pl.DataFrame)
        assert isinstance(fourth, pl.DataFrame)
        assert first.to_dicts() == [{"amount": 1, "first_day": date(2025, 1, 1)}]
        assert fourth.to_dicts() == [{"amount": 2 + 3 + 4, "first_day": date(2025, 1, 2)}]
        # lineage names the three upstream partitions it read
        upstream = rt.lineage.upstream("rolling", partition=date(2025, 1, 4), depth=1)
        assert sorted(n.partition_key for n in upstream) == ["d:2025-01-02", "d:2025-01-03", "d:2025-01-04"]


def test_a_success_write_that_fails_after_the_file_leaves_no_visible_output(
    database_url: str, tmp_path: Path
) -> None:
    """The Parquet file is written, then the success record is refused by the server: the output
    is invisible (no committed row names it), the next run works, and gc removes the orphan."""
    import psycopg  # noqa: PLC0415

    from tests.integration.test_consistency import REFUSE_ONE_SUCCESS  # noqa: PLC0415

    def refuse_the_success(step: fs.Materialization, ref: fs.OutputRef) -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(REFUSE_ONE_SUCCESS)

    with fs.FlowStone(definitions(tmp_path), database_url=database_url, home=tmp_path) as rt:
        day = date(2025, 1, 1)
        result = rt.materialize("readings", day, raise_on_error=False, _after_store=refuse_the_success)
        failed = result.step("readings", day)
        assert failed.status == "failed"
        manager = rt.io_managers["default"]
        assert isinstance(manager, fs.ParquetIOManager)
        orphan = Path(manager.path_for("readings", failed.partition_key, failed.id))
        assert orphan.exists()  # written before the success, which never committed
        assert rt.latest("readings", day) is None
        with pytest.raises(fs.DependencyNotReadyError):
            rt.load("readings", day)
        ok = rt.materialize("readings", day).step("readings", day)
        assert ok.status == "succeeded"
        assert rt.gc().orphans == {"default": 1}
        assert not orphan.exists()
        visible = rt.load("readings", day)
        assert isinstance(visible, pl.DataFrame)
        assert visible.height == 2
