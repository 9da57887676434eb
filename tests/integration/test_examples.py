"""Every example in examples/ runs, against a fresh test database, and says what its docstring says.

Each example reads ``FLOWSTONE_DATABASE_URL`` (else it would start the embedded Postgres of
``FLOWSTONE_HOME``): both are pointed at this test's database and temporary directory. Examples are
run twice where their docstring promises that they can run again on the same database.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from examples import (
    approvals,
    dataframes,
    partitions_and_backfill,
    postgres_io,
    quickstart,
    resources,
    schedules_and_sensors,
)
from tests import pg


@pytest.fixture
def example_db(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path / "home"))
    return database_url


@pytest.fixture
def no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-memory examples: an unreachable database URL proves that they never open one."""
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("no_database")
def test_quickstart(capsys: pytest.CaptureFixture[str]):
    values = quickstart.main()
    assert values["revenue_by_customer"] == {"ada": 42, "cyd": 50}
    assert values["top_customer"] == "cyd"
    assert list(values) == ["raw_orders", "clean_orders", "revenue_by_customer", "top_customer"]
    out = capsys.readouterr().out
    assert ": succeeded" in out
    assert "runtime.load('top_customer') -> 'cyd'" in out


@pytest.mark.usefixtures("no_database")
def test_resources(capsys: pytest.CaptureFixture[str]):
    summaries = resources.main()
    assert summaries == ["Lisbon: up to 12.0 C", "Oslo: up to 68.0 F"]
    assert resources.EVENTS == ["setup Lisbon (C)", "teardown Lisbon", "setup Oslo (F)", "teardown Oslo"]
    out = capsys.readouterr().out
    assert "refused: resource 'weather' has no setting 'citty'" in out


def test_approvals(example_db: str, capsys: pytest.CaptureFixture[str]):
    for _ in range(2):  # runnable again on the same database
        value = approvals.main()
        assert value == {"sent": 3, "total": Decimal("2200.49"), "approved_by": "finance-lead"}
    out = capsys.readouterr().out
    assert out.count(": waiting_approval") == 2
    assert "refused: 'intern' may not decide" in out
    assert "approved by finance-lead (totals checked)" in out
    assert pg.count(example_db, "SELECT count(*) FROM flowstone_approvals WHERE status = 'approved'") == 2
    assert pg.count(example_db, "SELECT count(*) FROM flowstone_runs WHERE status <> 'succeeded'") == 0


def test_postgres_io(example_db: str, capsys: pytest.CaptureFixture[str]):
    expected_rows = [
        (date(2025, 3, 1), "cake", 8, Decimal("34.00")),
        (date(2025, 3, 1), "soup", 11, Decimal("66.00")),
        (date(2025, 3, 1), "tea", 3, Decimal("10.50")),
        (date(2025, 3, 2), "cake", 4, Decimal("17.00")),
        (date(2025, 3, 2), "soup", 7, Decimal("42.00")),
        (date(2025, 3, 2), "tea", 10, Decimal("35.00")),
    ]
    for _ in range(2):  # again: the table exists, each day's rows are replaced, not appended
        result = postgres_io.main()
        assert result["rows"] == expected_rows
    assert isinstance(result["price_list"], postgres_io.PriceList)
    assert result["summaries"] == {
        "2025-03-01": {"revenue": Decimal("110.50"), "best_seller": "soup"},
        "2025-03-02": {"revenue": Decimal("94.00"), "best_seller": "soup"},
    }
    out = capsys.readouterr().out
    assert "  EUR  3.50" in out  # the JSONB of the model, read in SQL
    assert pg.count(example_db, "SELECT count(*) FROM shop.daily_sales") == 6


def test_schedules_and_sensors(example_db: str, capsys: pytest.CaptureFixture[str]):
    first = schedules_and_sensors.main()
    assert len(first["nightly_sales_report"]) == 2
    assert len(first["new_order_files"]) == 3
    out = capsys.readouterr().out
    assert "-> nightly_sales_report: sales_report [2025-06-01]" in out
    assert "02:00:40+0200) -> nothing" in out  # the same tick again: fired once
    assert "imported_orders [2025-06-01], new_order_files: imported_orders [2025-06-02]" in out
    assert "07:00:30+0000) -> nothing" in out  # the sensor is not due yet
    assert "cursor 2025-06-04T06:00:00+00:00, 3 request(s)" in out
    assert out.count(" succeeded: ") == 5
    assert "'loaded orders-2025-06-03.csv'" in out
    # Again on the same database: those ticks and those files were handled.
    again = schedules_and_sensors.main()
    assert again == {"nightly_sales_report": [], "new_order_files": []}
    assert "nothing fired" in capsys.readouterr().out
    assert pg.count(example_db, "SELECT count(*) FROM flowstone_runs WHERE status <> 'succeeded'") == 0


@pytest.mark.slow
def test_partitions_and_backfill(example_db: str, capsys: pytest.CaptureFixture[str]):
    stats = partitions_and_backfill.main()  # starts a `flowstone worker --one-shot` subprocess
    assert list(stats) == [f"2025-01-0{d}" for d in range(1, 8)]
    assert stats["2025-01-03"] == {"min": -2.5, "max": 5.5, "mean": 1.5}
    out = capsys.readouterr().out
    assert "2025-01-01..2025-01-07: 6 succeeded, 0 failed, 1 skipped" in out
    assert "steps {'queued': 6}" in out
    assert "succeeded {'succeeded': 6}" in out
    assert stats == partitions_and_backfill.main()  # again: every partition is skipped
    out = capsys.readouterr().out
    assert "0 succeeded, 0 failed, 7 skipped" in out
    assert "nothing to queue" in out
    succeeded = "SELECT count(*) FROM flowstone_materializations WHERE asset = %s AND status = 'succeeded'"
    # 2025-01-01 twice (materialized by each run of the example) + 6 from the queued backfill
    assert pg.count(example_db, succeeded, ("daily_stats",)) == 8
    assert pg.count(example_db, succeeded, ("hourly_temperatures",)) == 8


def test_dataframes(example_db: str, capsys: pytest.CaptureFixture[str]):
    for _ in range(2):  # runnable again: new immutable Parquet versions, DuckDB partitions replaced
        result = dataframes.main()
        assert result["report"] == {"Adelie": 151, "Gentoo": 123, "Chinstrap": 68}
        summary = result["summary"]
        assert list(summary.columns) == ["species", "nests_2007", "nests_2008", "nests_2009"]
        assert summary["nests_2008"].tolist() == [50, 46, 18]
    out = capsys.readouterr().out
    assert "raw_penguins: 344 rows [studyName: large_string" in out
    assert "cleaned: 342 rows [species: dictionary<" in out
    assert pg.count(example_db, "SELECT count(*) FROM flowstone_runs WHERE status <> 'succeeded'") == 0
    assert pg.count(example_db, "SELECT count(*) FROM flowstone_materializations WHERE asset = 'nests'") == 6
