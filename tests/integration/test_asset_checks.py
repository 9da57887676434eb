"""Asset checks: run in the step attempt, recorded with the success, a failing blocking check skips
the steps downstream (and only those), in-process on both stores and with a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import cli, errors
from flowstone.status import StepStatus
from tests.integration.queue_harness import Pipeline

FLAGS = {"left_ok": False}


@fs.asset
def source() -> list[int]:
    return [1, 2, 3]


@fs.asset_check(blocking=True)
def left_is_valid(left: list[int]) -> fs.CheckResult:
    """the left branch is all positive"""
    return fs.CheckResult(FLAGS["left_ok"], metadata={"rows": len(left)}, description="left rows")


@fs.asset(checks=[left_is_valid])
def left(source: list[int]) -> list[int]:
    return [-n for n in source]


@fs.asset
def right(source: list[int]) -> list[int]:
    return [n * 10 for n in source]


@fs.asset
def join(left: list[int], right: list[int]) -> int:
    return sum(left) + sum(right)


@fs.asset
def after_join(join: int) -> int:
    return join + 1


@fs.asset_check(asset="right", severity="warning", blocking=True)
def right_is_small(context: fs.AssetContext, value: list[int]) -> bool:
    assert context.asset == "right"
    return max(value) < 10  # fails: recorded as a warning, blocks nothing


@fs.asset_check(asset="right")
def right_explodes(value: list[int]) -> bool:
    raise ValueError("the check itself broke")


DEFS = fs.Definitions(
    assets=[source, left, right, join, after_join], asset_checks=[right_is_small, right_explodes]
)


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    FLAGS["left_ok"] = False
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store="memory", actor="tester")
    else:
        url = request.getfixturevalue("database_url")
        rt = fs.FlowStone(DEFS, database_url=url, home=tmp_path, actor="tester")
    with rt:
        yield rt


def test_a_blocking_check_failing_on_the_left_branch_skips_the_join_and_only_the_join(
    runtime: fs.FlowStone,
):
    result = runtime.materialize("after_join", with_upstream=True, raise_on_error=False)
    status = {s.asset: s.status for s in result.steps}
    assert status == {
        "source": StepStatus.SUCCEEDED,
        "left": StepStatus.SUCCEEDED,  # the asset itself succeeded: its check failed
        "right": StepStatus.SUCCEEDED,
        "join": StepStatus.SKIPPED,
        "after_join": StepStatus.SKIPPED,
    }
    join_row = result.step("join")
    assert join_row.error is not None
    assert join_row.error["type"] == "CheckBlockedError"
    assert "left_is_valid" in join_row.error["message"]
    assert join_row.error["context"]["check"] == "left_is_valid"
    results = {(r.asset, r.check_name): r for r in runtime.check_results(run_id=result.run_id)}
    assert set(results) == {
        ("left", "left_is_valid"),
        ("right", "right_is_small"),
        ("right", "right_explodes"),
    }
    left_result = results[("left", "left_is_valid")]
    assert (left_result.passed, left_result.blocking, left_result.severity) == (False, True, "error")
    assert left_result.metadata == {"rows": 3}
    assert left_result.description == "left rows"
    assert left_result.materialization_id == result.step("left").id
    warning = results[("right", "right_is_small")]
    assert (warning.passed, warning.severity) == (False, "warning")
    raised = results[("right", "right_explodes")]
    assert raised.passed is False
    assert raised.error is not None
    assert "the check itself broke" in raised.error["message"]


def test_materialize_raises_the_blocking_check_by_name(runtime: fs.FlowStone):
    with pytest.raises(fs.CheckBlockedError, match="left_is_valid") as raised:
        runtime.materialize("join", with_upstream=True)
    assert raised.value.asset == "join"
    assert raised.value.context["check"] == "left_is_valid"


def test_passing_checks_release_downstream(runtime: fs.FlowStone):
    FLAGS["left_ok"] = True
    result = runtime.materialize("after_join", with_upstream=True, raise_on_error=False)
    assert result.step("join").status == StepStatus.SUCCEEDED
    assert result.step("after_join").status == StepStatus.SUCCEEDED
    latest = runtime.check_results("left", latest=True)
    assert [(r.check_name, r.passed) for r in latest] == [("left_is_valid", True)]
    assert runtime.check_results("left", check="nope") == []


def test_check_results_rows_are_in_sql_with_constraints(database_url: str, tmp_path: Path):
    FLAGS["left_ok"] = False
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        result = rt.materialize("left", with_upstream=True)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT check_name, passed, severity, blocking, metadata FROM flowstone_check_results"
        ).fetchall()
        assert rows == [("left_is_valid", False, "error", True, {"rows": 3})]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO flowstone_check_results (materialization_id, asset, partition_key, run_id,"
                " check_name, passed, severity, blocking) VALUES (%s, 'left', '__unpartitioned__', %s,"
                " 'left_is_valid', true, 'error', true)",
                (result.step("left").id, result.run_id),
            )


def test_check_definitions_are_validated():
    with pytest.raises(errors.DefinitionError, match="unknown asset 'nope'"):
        fs.Definitions(
            assets=[source], asset_checks=[fs.asset_check(asset="nope", name="c")(lambda value: True)]
        )
    with pytest.raises(errors.DefinitionError, match="severity"):
        fs.asset_check(asset="source", name="c", severity="fatal")(lambda value: True)  # type: ignore[arg-type]
    with pytest.raises(errors.DefinitionError, match="two checks named"):
        fs.Definitions(
            assets=[left, source],
            asset_checks=[fs.asset_check(asset="left", name="left_is_valid")(lambda v: True)],
        )
    with pytest.raises(errors.DefinitionError, match="functions of this asset"):
        fs.asset(name="x", checks=[right_is_small])(lambda: 1)


WORKER_BODY = """
@fs.asset
def raw() -> list[int]:
    return [1, -2, 3]

@fs.asset_check(asset="raw", blocking=True)
def no_negatives(value: list[int]) -> fs.CheckResult:
    bad = [n for n in value if n < 0]
    return fs.CheckResult(not bad, metadata={"negatives": len(bad)})

@fs.asset
def cleaned(raw: list[int]) -> list[int]:
    return raw

@fs.asset
def other() -> int:
    return 1

defs = fs.Definitions(assets=[raw, cleaned, other], asset_checks=[no_negatives])
"""


def test_a_worker_runs_checks_and_a_blocking_failure_skips_downstream(tmp_path: Path, database_url: str):
    pipeline = Pipeline(tmp_path, database_url, WORKER_BODY)
    try:
        pipeline.start_worker(concurrency=2)
        handle = pipeline.runtime.submit(["cleaned", "other"], with_upstream=True)
        assert handle.wait(timeout=60).status == "failed", pipeline.logs()[-3000:]
        rows = pipeline.sql(
            "SELECT asset, status, error->>'type' FROM flowstone_materializations WHERE run_id = %s"
            " ORDER BY asset",
            (handle.run_id,),
        )
        assert rows == [
            ("cleaned", "skipped", "CheckBlockedError"),
            ("other", "succeeded", None),
            ("raw", "succeeded", None),
        ]
        checks = pipeline.sql("SELECT asset, check_name, passed, metadata FROM flowstone_check_results")
        assert checks == [("raw", "no_negatives", False, {"negatives": 1})]
    finally:
        pipeline.stop()


def test_flowstone_checks_and_status_read_the_published_definitions(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    FLAGS["left_ok"] = False
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        run = rt.materialize("left", with_upstream=True)
    capsys.readouterr()
    url = ["--database-url", database_url]
    assert cli.main(["checks", *url]) == 0  # no --defs: the snapshot in the database
    lines = capsys.readouterr().out.splitlines()
    left_line = next(line for line in lines if line.startswith("left ") and "left_is_valid" in line)
    assert "failed" in left_line
    assert " yes " in left_line  # blocking
    never = [line for line in lines if "never" in line]  # right's checks did not run
    assert {line.split()[1] for line in never} == {"right_is_small", "right_explodes"}
    assert cli.main(["checks", "left", "--fail-on-error", *url]) == 1
    assert cli.main(["checks", "--run", run.run_id, *url]) == 0
    assert "left_is_valid" in capsys.readouterr().out
    assert cli.main(["status", *url]) == 0
    status = capsys.readouterr().out
    assert "checks (latest per partition): 0 passed, 1 failed (blocking: left:left_is_valid)" in status
