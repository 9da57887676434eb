"""``runtime.lineage``: upstream, downstream and impact walks, on both stores.

Pipeline::

    numbers ─┬─ doubled ─┬─ report ── final
             └─ squared ─┘
    numbers ── daily (days) ─┬─ delta (days, reads the previous day: TimeWindowOffset(-1))
                             └─ rollup (unpartitioned, reads every day: AllPartitions())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest

import flowstone as fs
from flowstone import partition_keys

U = partition_keys.UNPARTITIONED
DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-04")
ALL_DAYS = [date(2025, 1, d) for d in range(1, 5)]
RECEIVED: list[dict[object, object]] = []


@fs.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@fs.asset
def doubled(numbers: list[int]) -> list[int]:
    return [n * 2 for n in numbers]


@fs.asset
def squared(numbers: list[int]) -> list[int]:
    return [n * n for n in numbers]


@fs.asset
def report(doubled: list[int], squared: list[int]) -> int:
    return sum(doubled) + sum(squared)


@fs.asset
def final(report: int) -> int:
    return report + 1


@fs.asset(partitions=DAYS)
def daily(context: fs.AssetContext, numbers: list[int]) -> int:
    day = context.partition
    assert isinstance(day, date)
    return day.day * 100 + len(numbers)


@fs.asset(partitions=DAYS, partition_mapping={"daily": fs.TimeWindowOffset(-1)})
def delta(daily: int) -> int:
    return daily


@fs.asset(partition_mapping={"daily": fs.AllPartitions()})
def rollup(daily: dict[date, int]) -> int:
    RECEIVED.append(dict(daily))
    return sum(daily.values())


DEFS = fs.Definitions(assets=[numbers, doubled, squared, report, final, daily, delta, rollup])


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store="memory", actor="tester")
    else:
        url = request.getfixturevalue("database_url")
        rt = fs.FlowStone(DEFS, database_url=url, home=tmp_path, actor="tester")
    with rt:
        yield rt


def _walk(nodes: list[fs.LineageNode]) -> list[tuple[int, str, str, int]]:
    """(depth, asset, partition_key, via id) of each node, in the order returned."""
    return [(n.depth, n.asset, n.partition_key, n.via_materialization_id) for n in nodes]


def _ids(result: fs.RunResult) -> dict[str, int]:
    return {s.asset: s.id for s in result.steps}


def test_upstream_of_a_diamond_with_depth_caps(runtime: fs.FlowStone):
    run = runtime.materialize("final", with_upstream=True)
    ids = _ids(run)
    assert ids["doubled"] < ids["squared"]  # planned in topological order, ties by name
    full = runtime.lineage.upstream("final")
    # each row once, at its nearest depth: numbers is reached through doubled and through squared,
    # and is listed once, via the smaller id of the two
    assert _walk(full) == [
        (1, "report", U, ids["final"]),
        (2, "doubled", U, ids["report"]),
        (2, "squared", U, ids["report"]),
        (3, "numbers", U, ids["doubled"]),
    ]
    assert [n.materialization_id for n in full] == [
        ids["report"],
        ids["doubled"],
        ids["squared"],
        ids["numbers"],
    ]
    assert [n.input_name for n in full] == ["report", "doubled", "squared", "numbers"]
    assert {n.run_id for n in full} == {run.run_id}
    assert {n.status for n in full} == {"succeeded"}
    assert all(n.partition is None for n in full)
    assert runtime.lineage.upstream("final", depth=1) == full[:1]
    assert runtime.lineage.upstream("final", depth=2) == full[:3]
    assert runtime.lineage.upstream("final", depth=3) == full
    assert runtime.lineage.upstream("final", depth=1000) == full  # capped at MAX_DEPTH, not an error
    assert runtime.lineage.upstream("numbers") == []  # a root read nothing
    # the other edge of the diamond is kept: numbers was also read by squared
    assert [n.also_via_materialization_ids for n in full] == [(), (), (), (ids["squared"],)]


def test_downstream_of_a_diamond_with_depth_caps(runtime: fs.FlowStone):
    ids = _ids(runtime.materialize("final", with_upstream=True))
    assert ids["doubled"] < ids["squared"]
    full = runtime.lineage.downstream("numbers")
    # report read numbers through doubled and through squared: once, via the smaller id (doubled)
    assert _walk(full) == [
        (1, "doubled", U, ids["numbers"]),
        (1, "squared", U, ids["numbers"]),
        (2, "report", U, ids["doubled"]),
        (3, "final", U, ids["report"]),
    ]
    assert [n.materialization_id for n in full] == [ids[a] for a in ("doubled", "squared", "report", "final")]
    assert [n.input_name for n in full] == ["numbers", "numbers", "doubled", "report"]
    assert runtime.lineage.downstream("numbers", depth=1) == full[:2]
    assert runtime.lineage.downstream("numbers", depth=2) == full[:3]
    assert runtime.lineage.downstream("numbers", depth=3) == full
    assert runtime.lineage.downstream("final") == []


def test_walks_start_from_the_latest_succeeded_materialization(runtime: fs.FlowStone):
    assert runtime.lineage.upstream("report") == []  # never materialized
    assert runtime.lineage.downstream("numbers") == []
    first = runtime.materialize("report", with_upstream=True)
    second = runtime.materialize("numbers")
    # numbers' latest (second run) was read by nobody yet
    assert runtime.lineage.downstream("numbers") == []
    # report's latest still points at the numbers of the first run
    (numbers_node,) = [n for n in runtime.lineage.upstream("report") if n.asset == "numbers"]
    assert numbers_node.materialization_id == first.step("numbers").id
    assert numbers_node.run_id == first.run_id
    third = runtime.materialize("doubled")
    (reader,) = runtime.lineage.downstream("numbers")
    assert (reader.asset, reader.materialization_id, reader.run_id) == (
        "doubled",
        third.step("doubled").id,
        third.run_id,
    )
    assert reader.via_materialization_id == second.step("numbers").id


@pytest.mark.parametrize("depth", [0, -1])
def test_depth_below_one_is_an_error(runtime: fs.FlowStone, depth: int):
    runtime.materialize("report", with_upstream=True)
    with pytest.raises(fs.FlowStoneError, match=f"depth must be at least 1, got {depth}"):
        runtime.lineage.upstream("report", depth=depth)
    with pytest.raises(fs.FlowStoneError, match="depth must be at least 1"):
        runtime.lineage.downstream("numbers", depth=depth)


def test_depth_below_one_is_an_error_even_before_anything_was_materialized(runtime: fs.FlowStone):
    with pytest.raises(fs.FlowStoneError, match="depth must be at least 1, got 0"):
        runtime.lineage.upstream("report", depth=0)
    with pytest.raises(fs.FlowStoneError, match="depth must be at least 1, got -1"):
        runtime.lineage.downstream("numbers", depth=-1)


def test_unknown_asset_and_bad_partitions_are_refused(runtime: fs.FlowStone):
    with pytest.raises(fs.UnknownAssetError, match="numbrs"):
        runtime.lineage.upstream("numbrs")
    with pytest.raises(fs.UnknownAssetError):
        runtime.lineage.impact("numbrs")
    with pytest.raises(fs.InvalidPartitionError, match="pass partition="):
        runtime.lineage.upstream("daily")
    with pytest.raises(fs.InvalidPartitionError):
        runtime.lineage.downstream("daily", partition="2024-12-31")


def test_with_upstream_plans_the_previous_day_for_a_time_window_offset(runtime: fs.FlowStone):
    result = runtime.materialize("delta", partition="2025-01-03", with_upstream=True)
    assert [(s.asset, s.partition_key, s.status) for s in result.steps] == [
        ("numbers", U, "succeeded"),
        ("daily", "d:2025-01-02", "succeeded"),  # the previous day, not the 3rd
        ("delta", "d:2025-01-03", "succeeded"),
    ]
    assert result.value("delta", date(2025, 1, 3)) == 203
    assert runtime.latest("daily", "2025-01-03") is None
    up = runtime.lineage.upstream("delta", date(2025, 1, 3))
    assert [(n.depth, n.asset, n.partition) for n in up] == [
        (1, "daily", date(2025, 1, 2)),
        (2, "numbers", None),
    ]
    assert up[0].materialization_id == result.step("daily", "2025-01-02").id
    down = runtime.lineage.downstream("daily", "2025-01-02")
    assert [(n.asset, n.partition, n.input_name) for n in down] == [("delta", date(2025, 1, 3), "daily")]
    (read_numbers,) = runtime.lineage.downstream("numbers", depth=1)
    assert (read_numbers.asset, read_numbers.partition, read_numbers.input_name) == (
        "daily",
        date(2025, 1, 2),
        "numbers",
    )
    assert read_numbers.via_materialization_id == result.step("numbers").id


def test_all_partitions_reads_a_dict_with_one_lineage_edge_per_partition(runtime: fs.FlowStone):
    RECEIVED.clear()
    result = runtime.materialize("rollup", with_upstream=True)
    assert [(s.asset, s.partition) for s in result.steps] == [
        ("numbers", None),
        *[("daily", d) for d in ALL_DAYS],
        ("rollup", None),
    ]
    (received,) = RECEIVED
    assert received == {d: d.day * 100 + 3 for d in ALL_DAYS}
    assert all(type(k) is date for k in received)
    assert result.value("rollup") == sum(d.day * 100 + 3 for d in ALL_DAYS)
    rollup_id = result.step("rollup").id
    direct = runtime.lineage.upstream("rollup", depth=1)
    assert [(n.asset, n.partition, n.input_name, n.via_materialization_id) for n in direct] == [
        ("daily", d, "daily", rollup_id) for d in ALL_DAYS
    ]
    assert [n.materialization_id for n in direct] == [result.step("daily", d).id for d in ALL_DAYS]
    # and numbers once, though every day read it: via the smallest id among the days
    first_day = min(n.materialization_id for n in direct)
    assert [
        (n.depth, n.asset, n.materialization_id, n.via_materialization_id, n.input_name)
        for n in runtime.lineage.upstream("rollup")[4:]
    ] == [(2, "numbers", result.step("numbers").id, first_day, "numbers")]
    for day in ALL_DAYS:
        (reader,) = runtime.lineage.downstream("daily", day)
        assert (reader.asset, reader.materialization_id, reader.partition) == ("rollup", rollup_id, None)


def test_all_partitions_reads_the_latest_of_each_partition_across_runs(runtime: fs.FlowStone):
    RECEIVED.clear()
    runtime.materialize("numbers")
    backfill = runtime.backfill_sync("daily")
    assert (backfill.succeeded, backfill.failed, backfill.skipped) == (4, 0, 0)
    redo = runtime.materialize("daily", partition="2025-01-02")
    result = runtime.materialize("rollup")
    assert [s.asset for s in result.steps] == ["rollup"]
    assert set(RECEIVED[0]) == set(ALL_DAYS)
    edges = {n.partition: n for n in runtime.lineage.upstream("rollup", depth=1)}
    assert set(edges) == set(ALL_DAYS)
    assert edges[date(2025, 1, 2)].run_id == redo.run_id
    assert {edges[d].run_id for d in ALL_DAYS if d != date(2025, 1, 2)} == {backfill.run_id}


def test_impact_reports_who_read_the_current_version(runtime: fs.FlowStone):
    impact = runtime.lineage.impact("numbers")
    # nothing materialized: unpartitioned downstream assets appear with no latest row; partitioned
    # ones have no partition to report. Rows follow the graph's topological order (ties by name).
    assert [
        (r.depth, r.asset, r.partition_key, r.latest_materialization_id, r.read_start) for r in impact
    ] == [
        (1, "doubled", U, None, False),
        (2, "rollup", U, None, False),
        (1, "squared", U, None, False),
        (2, "report", U, None, False),
        (3, "final", U, None, False),
    ]
    assert {r.latest_status for r in impact} == {None}

    first = runtime.materialize("final", with_upstream=True)
    rows = {r.asset: r for r in runtime.lineage.impact("numbers")}
    assert list(rows) == ["doubled", "rollup", "squared", "report", "final"]
    for name in ("doubled", "squared", "report", "final"):
        assert rows[name].latest_materialization_id == first.step(name).id
        assert rows[name].latest_status == "succeeded"
        assert rows[name].read_start is True, name
    assert rows["final"].depth == 3
    assert rows["rollup"].read_start is False

    runtime.materialize("numbers")  # a new version nobody has read yet
    assert [(r.asset, r.read_start) for r in runtime.lineage.impact("numbers")] == [
        ("doubled", False),
        ("rollup", False),
        ("squared", False),
        ("report", False),
        ("final", False),
    ]

    runtime.materialize(["doubled", "report"])  # report now reads the new numbers through doubled
    read = {r.asset: r.read_start for r in runtime.lineage.impact("numbers")}
    assert read == {"doubled": True, "squared": False, "report": True, "rollup": False, "final": False}

    # impact of a mid-graph asset lists only its own downstream
    assert [(r.depth, r.asset, r.read_start) for r in runtime.lineage.impact("report")] == [
        (1, "final", False)
    ]


def test_impact_of_a_partition(runtime: fs.FlowStone):
    runtime.materialize("numbers")
    runtime.backfill_sync("daily")
    runtime.materialize("rollup")
    runtime.materialize("delta", partition="2025-01-02")
    rows = runtime.lineage.impact("daily", date(2025, 1, 2))
    assert [(r.depth, r.asset, r.partition_key, r.latest_status) for r in rows] == [
        (1, "delta", "d:2025-01-02", "succeeded"),
        (1, "rollup", U, "succeeded"),
    ]
    # delta [2025-01-02] read the 1st (TimeWindowOffset(-1)); rollup read every day
    assert [r.read_start for r in rows] == [False, True]
    runtime.materialize("daily", partition="2025-01-02")  # a new version of the 2nd
    assert [r.read_start for r in runtime.lineage.impact("daily", "2025-01-02")] == [False, False]
    # an unpartitioned start lists every materialized partition of a partitioned downstream
    by_key = {(r.asset, r.partition_key): r for r in runtime.lineage.impact("numbers")}
    assert [k for k in by_key if k[0] == "daily"] == [("daily", f"d:{d.isoformat()}") for d in ALL_DAYS]
    assert by_key[("delta", "d:2025-01-02")].depth == 2
    assert by_key[("daily", "d:2025-01-02")].read_start is True


def test_impact_of_a_partition_that_was_never_materialized(runtime: fs.FlowStone):
    runtime.materialize("numbers")
    runtime.materialize("daily", partition="2025-01-02")
    runtime.materialize("delta", partition="2025-01-03")
    rows = runtime.lineage.impact("daily", "2025-01-04")
    assert [(r.asset, r.partition_key, r.latest_materialization_id) for r in rows] == [
        ("delta", "d:2025-01-04", None),
        ("rollup", U, None),
    ]


def test_impact_read_start_follows_every_path(runtime: fs.FlowStone, tmp_path: Path):
    @fs.asset
    def a() -> int:
        return 1

    @fs.asset
    def b(a: int) -> int:
        return a + 1

    @fs.asset(deps=["a"])  # ordering-only edge a -> x: the graph distance a -> x is 1
    def x(b: int) -> int:
        return b + 1

    rt = fs.FlowStone(fs.Definitions(assets=[a, b, x]), store=runtime.store, home=tmp_path)
    result = rt.materialize("x", with_upstream=True)
    assert [n.materialization_id for n in rt.lineage.upstream("x") if n.asset == "a"] == [result.step("a").id]
    assert {r.asset: r.read_start for r in rt.lineage.impact("a")} == {"b": True, "x": True}


def test_a_row_reachable_at_two_depths_is_listed_once_at_the_nearest(runtime: fs.FlowStone, tmp_path: Path):
    @fs.asset
    def a() -> int:
        return 1

    @fs.asset
    def b(a: int) -> int:
        return a + 1

    @fs.asset
    def c(a: int, b: int) -> int:  # reads a directly (depth 1) and through b (depth 2)
        return a + b

    rt = fs.FlowStone(fs.Definitions(assets=[a, b, c]), store=runtime.store, home=tmp_path)
    ids = _ids(rt.materialize("c", with_upstream=True))
    up = rt.lineage.upstream("c")
    assert [(n.depth, n.asset, n.materialization_id, n.via_materialization_id, n.input_name) for n in up] == [
        (1, "a", ids["a"], ids["c"], "a"),
        (1, "b", ids["b"], ids["c"], "b"),
    ]
    down = rt.lineage.downstream("a")
    assert [
        (n.depth, n.asset, n.materialization_id, n.via_materialization_id, n.input_name) for n in down
    ] == [
        (1, "b", ids["b"], ids["a"], "a"),
        (1, "c", ids["c"], ids["a"], "a"),
    ]


def test_results_hold_plain_strings_and_typed_partition_values(runtime: fs.FlowStone):
    runtime.materialize("rollup", with_upstream=True)
    runtime.materialize("delta", partition="2025-01-02")
    nodes = [
        *runtime.lineage.upstream("rollup"),
        *runtime.lineage.downstream("numbers"),
        *runtime.lineage.upstream("delta", "2025-01-02"),
    ]
    impact = [*runtime.lineage.impact("numbers"), *runtime.lineage.impact("daily", "2025-01-02")]
    assert len(nodes) > 10
    assert len(impact) > 5
    allowed = {
        "depth": (int,),
        "asset": (str,),
        "partition": (date, type(None)),
        "partition_key": (str,),
        "materialization_id": (int,),
        "latest_materialization_id": (int, type(None)),
        "run_id": (str,),
        "status": (str,),
        "latest_status": (str, type(None)),
        "finished_at": (datetime,),
        "via_materialization_id": (int,),
        "also_via_materialization_ids": (tuple,),
        "input_name": (str,),
        "read_start": (bool,),
    }
    for item in [*nodes, *impact]:
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            assert type(value) in allowed[f.name], (f.name, type(value))
    assert all(type(i) is int for n in nodes for i in n.also_via_materialization_ids)
    partitions = {n.partition for n in nodes}
    assert None in partitions
    assert {date(2025, 1, 1), date(2025, 1, 2)} <= partitions
    for n in nodes:
        assert n.partition == partition_keys.decode(n.partition_key)
        assert n.finished_at is not None
        assert n.finished_at.tzinfo is not None
