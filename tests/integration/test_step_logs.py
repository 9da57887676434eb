"""Step logs (flowstone_step_logs): capture of logging and stdout/stderr per attempt, in order, bounded,
thread-safe, flushed while the step runs and with its outcome; runtime.logs and `flowstone logs`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import cli, partition_keys

U = partition_keys.UNPARTITIONED


@fs.asset
def talker(context: fs.AssetContext) -> int:
    context.log.info("line 1")
    print("line 2")
    logging.getLogger("user.module").warning("line 3 %s", "formatted")
    print("line 4", file=sys.stderr)
    context.log.info("line 5", extra={"rows": 5, "tags": ("a", 1)})
    return 5


@fs.asset
def failing(context: fs.AssetContext) -> int:
    context.log.info("about to fail")
    print("partial line without newline", end="")
    raise ValueError("boom")


DEFS = fs.Definitions(assets=[talker, failing])
EXPECTED = [
    ("log", "INFO", "flowstone.asset.talker", "line 1"),
    ("stdout", "INFO", "stdout", "line 2"),
    ("log", "WARNING", "user.module", "line 3 formatted"),
    ("stderr", "WARNING", "stderr", "line 4"),
    ("log", "INFO", "flowstone.asset.talker", "line 5"),
]


def _shape(logs: list[fs.StepLog]) -> list[tuple[str, str, str, str]]:
    return [(g.line.stream, g.line.level, g.line.logger, g.line.message) for g in logs]


@pytest.fixture
def pg_runtime(database_url: str) -> Iterator[fs.FlowStone]:
    with fs.FlowStone(DEFS, database_url=database_url) as rt:
        yield rt


@pytest.mark.parametrize("kind", ["memory", "postgres"])
def test_three_log_lines_and_two_prints_are_stored_in_order_under_the_attempt(
    kind: str, request: pytest.FixtureRequest
):
    rt = request.getfixturevalue("pg_runtime") if kind == "postgres" else fs.FlowStone(DEFS, store="memory")
    result = rt.materialize("talker")
    logs = rt.logs(result.run_id)
    assert _shape(logs) == EXPECTED
    assert [g.line.seq for g in logs] == [1, 2, 3, 4, 5]
    assert {(g.asset, g.partition_key, g.line.attempt) for g in logs} == {("talker", U, 1)}
    assert logs[-1].line.extra == {"rows": 5, "tags": ["a", 1]}
    assert rt.logs(result.run_id, "talker") == logs
    assert rt.logs(result.run_id, "failing") == []


def test_the_sql_of_docs_sql_md_reads_the_lines(pg_runtime: fs.FlowStone, database_url: str):
    result = pg_runtime.materialize("talker")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT m.asset, l.attempt, l.seq, l.stream, l.level, l.logger, l.message, l.extra
            FROM flowstone_step_logs AS l
            JOIN flowstone_materializations AS m ON m.id = l.materialization_id
            WHERE m.run_id = %s
            ORDER BY m.id, l.attempt, l.seq
            """,
            (result.run_id,),
        ).fetchall()
    assert [(r[3], r[4], r[5], r[6]) for r in rows] == EXPECTED
    assert rows[-1][7] == {"rows": 5, "tags": ["a", 1]}


def test_a_failing_step_keeps_its_lines_and_its_full_traceback(pg_runtime: fs.FlowStone):
    result = pg_runtime.materialize("failing", raise_on_error=False)
    logs = pg_runtime.logs(result.run_id, "failing")
    assert [g.line.message for g in logs] == ["about to fail", "partial line without newline"]
    (step,) = result.steps
    assert step.error is not None
    assert "ValueError: boom" in step.error["context"]["traceback"]
    assert "in failing" in step.error["context"]["traceback"]


def test_logs_flush_while_the_step_runs(database_url: str):
    """Lines reach the database at least every second while the step is still running."""
    release = threading.Event()

    @fs.asset
    def waiter(context: fs.AssetContext) -> int:
        context.log.info("before the wait")
        assert release.wait(timeout=20)
        return 1

    def seen() -> list[str]:
        with psycopg.connect(database_url) as conn:
            return [r[0] for r in conn.execute("SELECT message FROM flowstone_step_logs").fetchall()]

    with fs.FlowStone(fs.Definitions(assets=[waiter]), database_url=database_url) as rt:
        runner = threading.Thread(target=rt.materialize, args=("waiter",))
        runner.start()
        try:
            deadline = time.monotonic() + 5
            while seen() != ["before the wait"]:
                assert time.monotonic() < deadline, "the line was not flushed while the step ran"
                time.sleep(0.1)
            (step,) = rt.store.history("waiter", U)
            assert step.status == "running"
        finally:
            release.set()
            runner.join()
        assert seen() == ["before the wait"]  # written once


def test_a_million_lines_store_the_bound_plus_one_marker_in_bounded_memory(database_url: str):
    @fs.asset
    def chatty(context: fs.AssetContext) -> int:
        before = _rss_kib()
        for i in range(1_000_000):
            print(f"line {i} of a chatty asset")
        context.add_metadata(rss_growth_kib=_rss_kib() - before)
        return 1

    settings = fs.StepLogSettings(echo=False)
    with fs.FlowStone(fs.Definitions(assets=[chatty]), database_url=database_url, step_logs=settings) as rt:
        result = rt.materialize("chatty")
        logs = rt.logs(result.run_id)
        (step,) = result.steps
    assert len(logs) == settings.max_lines + 1
    assert [g.line.message for g in logs[:2]] == ["line 0 of a chatty asset", "line 1 of a chatty asset"]
    marker = logs[-1].line
    assert (marker.stream, marker.seq) == ("flowstone", settings.max_lines + 1)
    assert "truncated" in marker.message
    # A million kept lines would take hundreds of MiB; the bound keeps a few MiB at most.
    assert step.metadata["rss_growth_kib"] < 32 * 1024, step.metadata


def test_the_bound_counts_bytes_and_logging_records_too(database_url: str):
    @fs.asset
    def big(context: fs.AssetContext) -> int:
        for i in range(1000):
            context.log.info("record %d", i)
        return 1

    @fs.asset
    def wide(context: fs.AssetContext) -> int:
        context.log.info("x" * 600)
        context.log.info("y" * 600)  # over 1,000 bytes: the marker instead
        print("z")
        return 1

    settings = fs.StepLogSettings(max_lines=50, max_bytes=1000, echo=False)
    with fs.FlowStone(
        fs.Definitions(assets=[big, wide]), database_url=database_url, step_logs=settings
    ) as rt:
        logs = rt.logs(rt.materialize("big").run_id)
        assert [g.line.message for g in logs[:50]] == [f"record {i}" for i in range(50)]
        assert len(logs) == 51
        assert logs[-1].line.stream == "flowstone"
        logs = rt.logs(rt.materialize("wide").run_id)
        assert [g.line.message[:1] for g in logs] == ["x", "s"]  # "step log truncated: ..."


def test_concurrent_steps_in_one_process_never_mix(database_url: str, capsys: pytest.CaptureFixture[str]):
    @fs.asset(partitions=fs.StaticPartitions(["p0", "p1", "p2", "p3"]))
    def parts(context: fs.AssetContext) -> str:
        for i in range(300):
            if i % 2:
                print(f"{context.partition} {i}")
            else:
                context.log.info("%s %d", context.partition, i)
            if i % 50 == 0:
                time.sleep(0.002)  # let the other threads interleave
        return str(context.partition)

    settings = fs.StepLogSettings(echo=False)
    with fs.FlowStone(fs.Definitions(assets=[parts]), database_url=database_url, step_logs=settings) as rt:
        result = rt.backfill_sync("parts", partitions=["p0", "p1", "p2", "p3"], max_workers=4)
        for partition in ["p0", "p1", "p2", "p3"]:
            logs = rt.logs(result.run_id, "parts", partition)
            assert [g.line.message for g in logs] == [f"{partition} {i}" for i in range(300)]
            assert [g.line.seq for g in logs] == list(range(1, 301))
        capsys.readouterr()
        assert (
            cli.main(["logs", result.run_id, "parts", "--partition", "p2", "--database-url", database_url])
            == 0
        )
        shown = capsys.readouterr().out.splitlines()
        assert [line.rsplit(": ", 1)[1] for line in shown] == [f"p2 {i}" for i in range(300)]
        assert all("parts[s:p2]#1" in line for line in shown)


def test_disabled_capture_stores_nothing(database_url: str):
    with fs.FlowStone(DEFS, database_url=database_url, step_logs=fs.StepLogSettings(enabled=False)) as rt:
        assert rt.logs(rt.materialize("talker").run_id) == []


def test_cli_logs_prints_a_runs_lines(
    pg_runtime: fs.FlowStone, database_url: str, capsys: pytest.CaptureFixture[str]
):
    result = pg_runtime.materialize("talker")
    capsys.readouterr()
    assert cli.main(["logs", result.run_id, "--database-url", database_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert lines[0].endswith("INFO    talker#1 flowstone.asset.talker: line 1")
    assert lines[3].endswith("WARNING talker#1 stderr: line 4")
    assert cli.main(["logs", result.run_id, "talker", "--json", "--database-url", database_url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["message"] for r in rows] == [e[3] for e in EXPECTED]
    # --follow on a finished run prints what there is and returns
    assert cli.main(["logs", result.run_id, "--follow", "--database-url", database_url]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert cli.main(["logs", result.run_id, "failing", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == ""


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_cli_follow_prints_lines_as_a_run_goes_and_stops_when_it_ends(database_url: str, tmp_path: Path):
    release = threading.Event()

    @fs.asset
    def slow(context: fs.AssetContext) -> int:
        context.log.info("before")
        assert release.wait(timeout=30)
        context.log.info("after")
        return 1

    with fs.FlowStone(fs.Definitions(assets=[slow]), database_url=database_url) as rt:
        results: list[fs.RunResult] = []
        runner = threading.Thread(target=lambda: results.append(rt.materialize("slow")))
        runner.start()
        try:
            deadline = time.monotonic() + 10
            while not (runs := rt.store.list_runs()) or not rt.logs(runs[0].run_id):
                assert time.monotonic() < deadline, "no line flushed"
                time.sleep(0.1)
            follower = subprocess.Popen(
                [sys.executable, "-m", "flowstone.cli", "logs", runs[0].run_id, "--follow"],
                env={**os.environ, "FLOWSTONE_DATABASE_URL": database_url, "FLOWSTONE_HOME": str(tmp_path)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)
            assert follower.poll() is None  # the run goes on: so does --follow
        finally:
            release.set()
            runner.join()
        out, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert [line.rsplit(": ", 1)[1] for line in out.splitlines()] == ["before", "after"]


def test_between_steps_logging_is_exactly_as_configured():
    """The capture handler sits on the root logger only while a step runs (basicConfig, which does
    nothing once the root logger has a handler, still works after a run)."""
    from flowstone import capture  # noqa: PLC0415 - the module under test

    before = list(logging.getLogger().handlers)
    rt = fs.FlowStone(DEFS, store="memory")
    assert len(rt.logs(rt.materialize("talker").run_id)) == 5
    assert logging.getLogger().handlers == before
    assert capture._handler not in logging.getLogger().handlers
