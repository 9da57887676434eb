"""Memoization records a ``skipped`` step that points at the reused materialization (ADR 0015):
a success for the run, whose steps downstream are released and read the reused row, while every
other skip (an upstream failed, a blocking check failed) still fails the run. In-process on both
stores, and on a real worker with a retry of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import partition_keys
from flowstone.store.memory import MemoryStore

from .queue_harness import Pipeline

U = partition_keys.UNPARTITIONED
IO = fs.MemoryIOManager()
CALLS: list[str] = []
STATE = {"seed": "v1", "fail_reader": False}


@fs.asset
def seed(context: fs.AssetContext) -> int:
    context.add_metadata(data_version=STATE["seed"])
    return 10


@fs.asset(memoize=True, code_version="1")
def expensive(seed: int) -> int:
    CALLS.append("expensive")
    return seed * 2


@fs.asset
def reader(expensive: int) -> int:
    if STATE["fail_reader"]:
        raise RuntimeError("reader fails")
    return expensive + 1


@fs.asset
def other(seed: int) -> int:
    return seed


@fs.asset
def join(reader: int, other: int) -> int:
    return reader + other


DEFS = fs.Definitions(assets=[seed, expensive, reader, other, join], io_managers={"default": IO})


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    CALLS.clear()
    STATE.update(seed="v1", fail_reader=False)
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store=MemoryStore())
    else:
        rt = fs.FlowStone(DEFS, database_url=request.getfixturevalue("database_url"), home=tmp_path)
    with rt:
        yield rt


def test_a_memoized_step_is_a_skip_that_points_at_the_reused_materialization(runtime: fs.FlowStone):
    first = runtime.materialize("join", with_upstream=True)
    reused = first.step("expensive")
    again = runtime.materialize("join", with_upstream=True)
    assert CALLS == ["expensive"]
    memo = again.step("expensive")
    assert (memo.status, memo.memoized_from, memo.output_ref) == ("skipped", reused.id, None)
    assert memo.memoized
    assert memo.ok
    assert memo.error is None
    assert again.status == "succeeded"
    assert again.errors == {}
    assert again.value("expensive") == 20  # in-process: the reused value
    assert again.value("join") == 31
    # downstream was released and read the reused row: its lineage points at it
    read = runtime.store.lineage_upstream(again.step("reader").id, max_depth=1)
    assert [(r.asset, r.id) for r in read] == [("expensive", reused.id)]
    # the reused row stays the latest: nothing was stored, readers stay fresh
    assert runtime.latest("expensive").id == reused.id
    assert runtime.store.lineage_upstream(memo.id, max_depth=1) == []
    assert [r for r in runtime.staleness() if r.status != "fresh"] == []
    events = [(e.event, e.materialization_id) for e in runtime.store.audit_events(run_id=again.run_id)]
    assert ("materialization.memoized", memo.id) in events
    assert ("materialization.succeeded", memo.id) not in events


def test_an_ordinary_skip_still_fails_the_run_and_skips_downstream(runtime: fs.FlowStone):
    runtime.materialize("join", with_upstream=True)
    STATE["fail_reader"] = True
    failed = runtime.materialize("join", with_upstream=True, raise_on_error=False)
    assert failed.step("expensive").memoized  # memoized upstream of the failure
    assert failed.step("reader").status == "failed"
    skipped = failed.step("join")
    assert (skipped.status, skipped.memoized_from) == ("skipped", None)
    assert failed.status == "failed"


def test_new_input_data_runs_the_function_again(runtime: fs.FlowStone):
    runtime.materialize("reader", with_upstream=True)
    STATE["seed"] = "v2"
    again = runtime.materialize("reader", with_upstream=True)
    assert CALLS == ["expensive", "expensive"]
    assert (again.step("expensive").status, again.step("expensive").memoized_from) == ("succeeded", None)


@fs.asset_check(asset="guarded", blocking=True)
def positive(value: int) -> bool:
    return value > 0


@fs.asset(memoize=True, code_version="1")
def guarded() -> int:
    CALLS.append("guarded")
    return -1


@fs.asset
def after_guard(guarded: int) -> int:
    return guarded


def test_a_materialization_that_failed_a_blocking_check_is_never_reused(database_url: str, tmp_path: Path):
    CALLS.clear()
    defs = fs.Definitions(assets=[guarded, after_guard], asset_checks=[positive])
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        for _ in range(2):
            result = rt.materialize("after_guard", with_upstream=True, raise_on_error=False)
            assert result.step("after_guard").status == "skipped"
            assert result.step("after_guard").memoized_from is None
        assert CALLS == ["guarded", "guarded"]  # the function ran again: its checks too


def test_the_schema_allows_memoized_from_only_on_skipped_steps(database_url: str, tmp_path: Path):
    CALLS.clear()
    STATE.update(seed="v1", fail_reader=False)
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        first = rt.materialize("reader", with_upstream=True)
        again = rt.materialize("reader", with_upstream=True)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="memoized_skip"):
            conn.execute(
                "UPDATE flowstone_materializations SET memoized_from = %s WHERE id = %s",
                (first.step("expensive").id, again.step("reader").id),
            )
        conn.rollback()
        # the reused row cannot go while a memoized skip points at it (pruning leaves it alone)
        reused = first.step("expensive").id
        conn.execute("DELETE FROM flowstone_lineage WHERE upstream_materialization_id = %s", (reused,))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="memoized_from"):
            conn.execute("DELETE FROM flowstone_materializations WHERE id = %s", (reused,))


WORKER_BODY = """
@fs.asset
def seed(context: fs.AssetContext) -> int:
    context.add_metadata(data_version="v1")
    return 10

@fs.asset(memoize=True, code_version="1")
def expensive(seed: int) -> int:
    (MARKERS / f"expensive-{time.time_ns()}").touch()
    return seed * 2

@fs.asset
def reader(expensive: int) -> int:
    if (MARKERS / "fail").exists():
        raise RuntimeError("reader fails")
    return expensive + 1

defs = fs.Definitions(assets=[seed, expensive, reader])
"""


def test_a_worker_records_a_memoized_skip_and_a_retry_keeps_it(tmp_path: Path, database_url: str):
    pipeline = Pipeline(tmp_path, database_url, WORKER_BODY)
    try:
        rt = pipeline.runtime
        pipeline.start_worker(concurrency=2)
        first = rt.submit(["seed", "expensive", "reader"])
        assert first.wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
        pipeline.touch("fail")
        second = rt.submit(["seed", "expensive", "reader"])
        assert second.wait(timeout=60).status == "failed", pipeline.logs()[-3000:]
        assert len(list(pipeline.markers.glob("expensive-*"))) == 1  # called once, on the first run
        reused = rt.store.get_step(first.run_id, "expensive", U)
        memo = rt.store.get_step(second.run_id, "expensive", U)
        assert (memo.status, memo.memoized_from) == ("skipped", reused.id)
        (pipeline.markers / "fail").unlink()
        retried = rt.retry(second.run_id)  # reopens the failed reader, never the memoized skip
        assert retried.wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
        assert rt.store.get_step(second.run_id, "expensive", U) == memo
        reader_row = rt.store.get_step(second.run_id, "reader", U)
        assert reader_row.status == "succeeded"
        read = rt.store.lineage_upstream(reader_row.id, max_depth=1)
        assert [(r.asset, r.id) for r in read] == [("expensive", reused.id)]
        assert rt.load("reader") == 21
    finally:
        pipeline.stop()


def test_the_run_page_and_flowstone_run_show_the_memoized_skip(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    import httpx  # noqa: PLC0415

    from flowstone import cli  # noqa: PLC0415
    from flowstone.ui import app as app_mod  # noqa: PLC0415
    from tests.integration.ui_harness import LiveServer  # noqa: PLC0415

    CALLS.clear()
    STATE.update(seed="v1", fail_reader=False)
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        first = rt.materialize("reader", with_upstream=True)
        again = rt.materialize("reader", with_upstream=True)
    reused = first.step("expensive").id
    capsys.readouterr()
    assert cli.main(["run", again.run_id, "--database-url", database_url]) == 0
    shown = capsys.readouterr().out
    assert f"run {again.run_id}: succeeded" in shown
    line = next(x for x in shown.splitlines() if x.startswith("expensive "))
    assert line.split()[2] == "skipped"
    assert f"memoized from #{reused}" in line
    ui_rt = fs.FlowStone.from_database(database_url=database_url, actor="alice")
    server = LiveServer(app_mod.create_app(ui_rt))
    try:
        with httpx.Client(base_url=server.url, timeout=30) as ui:
            page = ui.get(f"/runs/{again.run_id}")
            assert page.status_code == 200
            assert f"memoized from #{reused}" in page.text
            steps = ui.get(f"/api/runs/{again.run_id}").json()["steps"]
            assert {s["asset"]: s["memoized_from"] for s in steps}["expensive"] == reused
            assets = {a["name"]: a["status"] for a in ui.get("/api/assets").json()["assets"]}
            assert assets["expensive"] == "succeeded"  # its newest step is the memoized skip
    finally:
        server.stop()
        ui_rt.close()
