"""Synchronous execution: materialize, backfill_sync, latest/history/load, lineage — on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

import flowstone as fs
from flowstone import codec, partition_keys

U = partition_keys.UNPARTITIONED
CALLS: list[str] = []


@fs.asset
def numbers() -> list[int]:
    CALLS.append("numbers")
    return [1, 2, 3]


@fs.asset
def doubled(numbers: list[int]) -> list[int]:
    return [n * 2 for n in numbers]


@fs.asset
def squared(numbers: list[int]) -> list[int]:
    return [n * n for n in numbers]


@fs.asset
def report(context: fs.AssetContext, doubled: list[int], squared: list[int]) -> dict[str, int]:
    context.add_metadata(rows=len(doubled), total=Decimal("1.50"))
    return {"doubled": sum(doubled), "squared": sum(squared)}


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01", end="2025-01-31"))
def daily(context: fs.AssetContext, numbers: list[int]) -> dict[str, object]:
    day = context.partition
    assert isinstance(day, date)
    if day == date(2025, 1, 13):
        raise ValueError("unlucky day")
    return {"day": day.isoformat(), "n": len(numbers)}


@fs.asset
def broken(numbers: list[int]) -> int:
    raise RuntimeError("kaput")


@fs.asset
def after_broken(broken: int) -> int:
    return broken + 1


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01", end="2025-01-31"))
def summary_of(daily: dict[str, object]) -> str:
    return str(daily["day"])


DEFS = fs.Definitions(assets=[numbers, doubled, squared, report, daily, broken, after_broken, summary_of])


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store="memory", actor="tester")
    else:
        url = request.getfixturevalue("database_url")
        rt = fs.FlowStone(DEFS, database_url=url, home=tmp_path, actor="tester")
    with rt:
        yield rt


def test_diamond_runs_in_order_under_one_run_with_exact_lineage(runtime: fs.FlowStone):
    result = runtime.materialize("report", with_upstream=True)
    assert result.success
    assert [s.asset for s in result.steps] == ["numbers", "doubled", "squared", "report"]
    assert {s.run_id for s in result.steps} == {result.run_id}
    assert result.value("report") == {"doubled": 12, "squared": 14}
    report_row = result.step("report")
    # (and the hash of the stored value: the data version, as the asset set none)
    assert report_row.metadata == {
        "rows": 3,
        "total": {"$fs": "decimal", "v": "1.50"},
        "content_hash": codec.content_hash({"doubled": 12, "squared": 14}),
    }
    upstream = runtime.lineage.upstream("report")
    by_asset = {(n.depth, n.asset): n for n in upstream}
    assert by_asset[(1, "doubled")].materialization_id == result.step("doubled").id
    assert by_asset[(1, "squared")].materialization_id == result.step("squared").id
    assert by_asset[(2, "numbers")].materialization_id == result.step("numbers").id
    assert runtime.load("report") == {"doubled": 12, "squared": 14}
    latest = runtime.latest("report")
    assert latest is not None
    assert latest.id == report_row.id
    run = runtime.store.get_run(result.run_id)
    assert run is not None
    assert (run.status, run.requested_by) == ("succeeded", "tester")


def test_without_upstream_reads_the_latest_succeeded_materialization(runtime: fs.FlowStone):
    first = runtime.materialize("numbers")
    second = runtime.materialize("doubled")
    assert second.value("doubled") == [2, 4, 6]
    (edge,) = runtime.lineage.upstream("doubled")
    assert edge.materialization_id == first.step("numbers").id
    assert edge.run_id == first.run_id


def test_missing_upstream_is_a_recorded_dependency_error(runtime: fs.FlowStone):
    with pytest.raises(fs.DependencyNotReadyError, match="has no succeeded materialization"):
        runtime.materialize("doubled")
    assert runtime.latest("doubled") is None


def test_failure_skips_downstream_and_is_recorded_once(runtime: fs.FlowStone):
    result = runtime.materialize(["broken", "after_broken"], with_upstream=True, raise_on_error=False)
    assert not result.success
    assert result.status == "failed"
    statuses = {s.asset: s.status for s in result.steps}
    assert statuses == {"numbers": "succeeded", "broken": "failed", "after_broken": "skipped"}
    error = result.errors[("broken", U)]
    assert isinstance(error, fs.ExecutionError)
    assert "RuntimeError: kaput" in str(error)
    failed = result.step("broken")
    assert failed.error is not None
    assert failed.error["type"] == "ExecutionError"
    assert "Traceback" in failed.error["context"]["traceback"]
    skipped = result.step("after_broken")
    assert skipped.error is not None
    assert skipped.error["type"] == "DependencyFailedError"
    events = [e.event for e in runtime.store.audit_events(run_id=result.run_id)]
    assert events.count("materialization.failed") == 1
    assert events[0] == "run.requested"
    assert events[-1] == "run.finished"
    with pytest.raises(fs.ExecutionError, match="kaput"):
        result.unwrap()
    with pytest.raises(fs.ExecutionError):
        runtime.materialize("broken")


def test_partitioned_asset_needs_a_valid_partition(runtime: fs.FlowStone):
    with pytest.raises(fs.InvalidPartitionError, match="pass partition="):
        runtime.materialize("daily")
    with pytest.raises(fs.InvalidPartitionError):
        runtime.materialize("daily", partition="2024-12-31")
    result = runtime.materialize("daily", partition="2025-01-02", with_upstream=True)
    assert result.value("daily", date(2025, 1, 2)) == {"day": "2025-01-02", "n": 3}
    assert result.step("daily", date(2025, 1, 2)).partition_key == "d:2025-01-02"
    assert runtime.load("daily", date(2025, 1, 2)) == {"day": "2025-01-02", "n": 3}
    with pytest.raises(fs.InvalidPartitionError, match="not partitioned"):
        runtime.latest("numbers", partition="2025-01-02")


def test_history_is_newest_first(runtime: fs.FlowStone):
    runs = [runtime.materialize("numbers").run_id for _ in range(3)]
    assert [m.run_id for m in runtime.history("numbers", limit=2)] == runs[:0:-1]


def test_backfill_sync_counts_and_skips_done_partitions(runtime: fs.FlowStone):
    runtime.materialize("numbers")
    seen: list[tuple[int, int]] = []
    result = runtime.backfill_sync(
        "daily",
        start="2025-01-10",
        end="2025-01-15",
        max_workers=3,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (result.succeeded, result.failed, result.skipped) == (5, 1, 0)
    assert list(result.errors) == ["d:2025-01-13"]
    assert seen[-1] == (6, 6)
    again = runtime.backfill_sync("daily", start="2025-01-10", end="2025-01-15")
    assert (again.succeeded, again.failed, again.skipped) == (0, 1, 5)
    forced = runtime.backfill_sync("daily", partitions=["2025-01-10"], force=True)
    assert (forced.succeeded, forced.failed, forced.skipped) == (1, 0, 0)
    assert len(runtime.history("daily", "2025-01-10")) == 2
    downstream = runtime.materialize("summary_of", partition="2025-01-11")
    assert downstream.value("summary_of", "2025-01-11") == "2025-01-11"


def test_unknown_names_and_bad_run_config_are_refused_before_anything_runs(runtime: fs.FlowStone):
    with pytest.raises(fs.UnknownAssetError, match="numbrs"):
        runtime.materialize("numbrs")
    with pytest.raises(Exception, match="extra"):
        runtime.materialize("numbers", run_config={"resourcez": {}})
    assert runtime.store.list_runs() == []
