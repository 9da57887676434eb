"""The operator commands through the real CLI, against real Postgres, with a real worker where
the command needs one: runs, run, cancel, retry, backfill of several assets, graph, status, exit
statuses, and the messages that tell the user what to do (issue: operating from the command line).

The CLI is run without --defs wherever the command only reads or decides: the definitions come
from the snapshot the pipeline's runtime published."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import cli as cli_mod
from tests.integration.queue_harness import Pipeline, eventually

BODY = """
from datetime import timedelta

@fs.asset
def source() -> int:
    return 1

@fs.asset(group="core", owners=["team-data"])
def left(source: int) -> int:
    return source + 1

@fs.asset
def right(source: int) -> int:
    return source + 2

@fs.asset
def join(left: int, right: int) -> int:
    return left * right

@fs.asset
def fragile(source: int) -> int:
    if not (MARKERS / "fixed").exists():
        raise ValueError("the input file is missing")
    return source

@fs.asset
def after_fragile(fragile: int) -> int:
    return fragile + 1

@fs.asset
def gate(context: fs.AssetContext, source: int) -> int:
    context.require_approval("ship it?", timeout=timedelta(hours=1))
    return source

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-31")

@fs.asset(partitions=DAYS)
def raw(context: fs.AssetContext) -> str:
    return str(context.partition)

@fs.asset(partitions=DAYS)
def clean(raw: str) -> str:
    return raw.upper()

defs = fs.Definitions(assets=[source, left, right, join, fragile, after_fragile, gate, raw, clean])
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, BODY) as p:
        yield p


def cli(p: Pipeline, *args: str, defs: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``flowstone ARGS`` in the pipeline's directory; ``--defs`` only when asked (the others read
    the published definitions)."""
    extra = ("--defs", f"{p.name}:runtime") if defs else ()
    return subprocess.run(
        [sys.executable, "-m", "flowstone.cli", *args, *extra],
        cwd=p.dir,
        env=p.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_id(text: str) -> str:
    match = re.search(r"run ([0-9a-f-]{36})", text)
    assert match is not None, text
    return match.group(1)


def test_submit_wait_run_runs_and_exit_statuses(pipeline: Pipeline):  # noqa: PLR0915 - one story
    pipeline.start_worker()
    ok = cli(pipeline, "submit", "join", "--with-upstream", "--wait", "--timeout", "60", defs=True)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    run_id = _run_id(ok.stdout)
    assert f"run {run_id}: succeeded {{'succeeded': 4}}" in ok.stdout
    # stderr is not a terminal: a progress line per tenth done, with the counts
    assert f"run {run_id[:8]}: 4/4 done, 0 failed, 0 waiting for approval" in ok.stderr

    bad = cli(pipeline, "submit", "after_fragile", "--with-upstream", "--wait", "--timeout", "60", defs=True)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    bad_id = _run_id(bad.stdout)
    # the first errors are in the summary, with what to do next
    assert "failed: fragile [-] ExecutionError: ValueError: the input file is missing" in bad.stderr
    assert f"flowstone retry {bad_id}" in bad.stderr
    assert "Traceback" not in bad.stderr

    gated = cli(pipeline, "submit", "gate", "--with-upstream", "--wait", "--timeout", "60", defs=True)
    assert gated.returncode == 3, (gated.stdout, gated.stderr)  # waiting for approval
    assert "flowstone approvals list" in gated.stderr

    # runs: newest first, filters, limit; no --defs needed
    listed = cli(pipeline, "runs")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN", "KIND", "STATUS"]
    assert [line.split()[0] for line in lines[1:]][:3] == [_run_id(gated.stdout), bad_id, run_id]
    failed_only = cli(pipeline, "runs", "--status", "failed").stdout.splitlines()[1:]
    assert [line.split()[0] for line in failed_only] == [bad_id]
    by_asset = cli(pipeline, "runs", "--asset", "left").stdout.splitlines()[1:]
    assert [line.split()[0] for line in by_asset] == [run_id]
    assert len(cli(pipeline, "runs", "--limit", "1").stdout.splitlines()) == 2
    assert cli(pipeline, "runs", "--since", "1h").stdout.count("\n") == 4
    assert "(no runs match)" in cli(pipeline, "runs", "--since", "2999-01-01").stdout
    negative = cli(pipeline, "runs", "--limit", "-1")
    assert negative.returncode == 2
    assert "--limit: must be at least 1, got -1" in negative.stderr

    # run: steps with attempt, duration, error; what to do next
    shown = cli(pipeline, "run", bad_id)
    assert shown.returncode == 1
    assert f"run {bad_id}: failed" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if line.startswith("fragile "))
    assert row.split()[:4] == ["fragile", "-", "failed", "1"]
    assert row.endswith("ExecutionError: ValueError: the input file is missing")
    assert re.search(r"after_fragile +- +skipped", shown.stdout)
    assert f"flowstone retry {bad_id}" in shown.stdout
    waiting = cli(pipeline, "run", _run_id(gated.stdout))
    assert waiting.returncode == 3
    assert "waiting for approval:" in waiting.stdout
    assert "gate [-]: ship it?" in waiting.stdout
    assert "flowstone approvals approve" in waiting.stdout

    # retry: same run, new attempt, succeeded steps kept
    pipeline.touch("fixed")
    retried = cli(pipeline, "retry", bad_id, "--wait", "--timeout", "60")
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    steps = {s.asset: s for s in pipeline.runtime.run(bad_id).steps()}
    assert (steps["fragile"].status, steps["fragile"].attempt) == ("succeeded", 2)
    assert (steps["source"].status, steps["source"].attempt) == ("succeeded", 1)  # kept
    assert steps["after_fragile"].status == "succeeded"
    nothing = cli(pipeline, "retry", bad_id)
    assert "nothing to retry" in nothing.stdout

    # retry --from: that asset and everything downstream, as a new run
    again = cli(pipeline, "retry", run_id, "--from", "left", "--wait", "--timeout", "60")
    assert again.returncode == 0, (again.stdout, again.stderr)
    new_id = _run_id(again.stdout.split("new run", 1)[1])
    new = pipeline.runtime.run(new_id)
    assert sorted(s.asset for s in new.steps()) == ["join", "left"]
    assert new.run().tags == {"retry_of": run_id, "from": "left"}

    # cancel: the step waiting for approval is cancelled, its request withdrawn
    gated_id = _run_id(gated.stdout)
    cancelled = cli(pipeline, "cancel", gated_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled 1 step(s)" in cancelled.stdout
    assert pipeline.runtime.run(gated_id).run().status == "cancelled"
    withdrawn = [a.status for a in pipeline.runtime.approvals.list(None) if a.run_id == gated_id]
    assert withdrawn == ["withdrawn"]


def test_wait_without_a_worker_says_so_and_times_out_with_status_4(pipeline: Pipeline):
    result = cli(pipeline, "submit", "source", "--wait", "--timeout", "1", defs=True)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert "warning: no worker is running" in result.stderr
    assert "flowstone worker --defs" in result.stderr
    assert "is still queued after 1 s (it goes on" in result.stderr


def test_backfill_of_several_assets_is_one_run_in_dependency_order(pipeline: Pipeline):
    whole = cli(pipeline, "backfill", "raw", "clean", defs=True)
    assert whole.returncode == 1
    assert "no range given: that would backfill every partition of 'raw' (31 partitions)" in whole.stderr
    plan = cli(
        pipeline,
        "backfill",
        "raw",
        "clean",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-05",
        "--dry-run",
        defs=True,
    )
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines() == [
        "plan: 10 step(s) in one run, in dependency order (nothing was enqueued)",
        "  raw                            5 partition(s)  2025-01-01 .. 2025-01-05",
        "  clean                          5 partition(s)  2025-01-01 .. 2025-01-05",
    ]
    assert pipeline.sql("SELECT count(*) FROM flowstone_runs") == [(0,)]
    pipeline.start_worker()
    done = cli(
        pipeline,
        "backfill",
        "clean",
        "--with-upstream",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-05",
        defs=True,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    run_id = _run_id(done.stdout)
    assert pipeline.sql("SELECT count(*) FROM flowstone_runs") == [(1,)]
    assert pipeline.runtime.run(run_id).status() == {"succeeded": 10}
    assert pipeline.runtime.load("clean", "2025-01-03") == "2025-01-03".upper()
    everything = cli(pipeline, "backfill", "raw", "clean", "--all", "--no-wait", defs=True)
    assert everything.returncode == 0, everything.stderr
    assert "52 step(s) planned" in everything.stdout  # 31 days x 2 assets, 5 days done


def test_status_graph_and_partitions_decoded(pipeline: Pipeline):
    pipeline.runtime.materialize("raw", "2025-01-02")
    pipeline.runtime.materialize("left", with_upstream=True)
    summary = cli(pipeline, "status")
    assert summary.returncode == 0, summary.stderr
    rows = {line.split()[0]: line.split() for line in summary.stdout.splitlines()[1:]}
    assert rows["raw"][1:5] == ["1", "0", "0", "30"]
    assert rows["left"][1:5] == ["1", "0", "0", "0"]
    assert rows["join"][-2:] == ["never", "materialized"]
    parts = cli(pipeline, "status", "--asset", "raw").stdout.splitlines()
    assert parts[1].split()[:3] == ["raw", "2025-01-02", "succeeded"]  # decoded, not d:2025-01-02
    assert cli(pipeline, "status", "--asset", "raw", "--status", "failed").stdout.splitlines()[1:] == []
    only_failed = cli(pipeline, "status", "--status", "failed").stdout.splitlines()
    assert only_failed[1:] == []

    tree = cli(pipeline, "graph", "+join")
    assert tree.returncode == 0, tree.stderr
    assert tree.stdout.splitlines() == ["source", "├── left", "│   └── join", "└── right", "    └── join"]
    mermaid = cli(pipeline, "graph", "join", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD")
    dot = cli(pipeline, "graph", "raw", "clean", "--format", "dot").stdout.splitlines()
    assert dot == [
        "digraph flowstone {",
        "    rankdir=LR;",
        '    "raw";',
        '    "clean";',
        '    "raw" -> "clean";',
        "}",
    ]


def test_messages_that_tell_the_user_what_to_do(pipeline: Pipeline, tmp_path: Path):
    unpartitioned_submit = cli(pipeline, "submit", "source", "--partition", "2025-01-01", defs=True)
    unpartitioned_materialize = cli(pipeline, "materialize", "source", "--partition", "2025-01-01", defs=True)
    for result in (unpartitioned_submit, unpartitioned_materialize):
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "error: InvalidPartitionError: asset 'source' is not partitioned: leave out --partition"
        )
    missing = cli(pipeline, "materialize", "raw", defs=True)
    assert missing.returncode == 1
    assert "pass --partition" in missing.stderr
    assert "partition=" not in missing.stderr.replace("--partition", "")

    zero = cli(pipeline, "worker", "--concurrency", "0", defs=True)
    assert zero.returncode == 1
    assert zero.stderr.strip() == "error: ConfigurationError: --concurrency must be at least 1, got 0"

    bad_url = cli(pipeline, "runs", "--database-url", "postgres//localhost/db")  # a typo: no ':'

    assert bad_url.returncode == 1
    assert bad_url.stderr.count("\n") == 1
    assert bad_url.stderr.startswith("error: ConfigurationError: the database URL is not a valid PostgreSQL")

    schedule = cli(pipeline, "schedules", "pause", "nightly")
    assert schedule.returncode == 1
    assert schedule.stderr.startswith("error: UnknownScheduleError: there is no schedule 'nightly'")

    help_text = cli(pipeline, "--help").stdout
    for line in ("0  succeeded", "2  usage error", "3  the run is waiting for an approval", "4  timed out"):
        assert line in help_text
    for command in ("runs", "run", "cancel", "retry", "backfill", "graph", "status"):
        sub = cli(pipeline, command, "--help")
        assert sub.returncode == 0
        assert "example: flowstone" in sub.stdout, command


def test_a_new_embedded_database_is_announced():
    # Outside pytest's own temporary root: that one is private to root (0700), which the embedded
    # server's own system user cannot enter once another pytest session resets it.
    tmp_path = Path(tempfile.mkdtemp(prefix="flowstone-announce-"))
    tmp_path.chmod(0o755)
    (tmp_path / "tiny.py").write_text(
        "import flowstone as fs\n\n@fs.asset\ndef one() -> int:\n    return 1\n\n"
        "defs = fs.Definitions([one])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTONE_DATABASE_URL"}
    env["FLOWSTONE_HOME"] = str(tmp_path / ".flowstone")
    try:
        first = subprocess.run(
            [sys.executable, "-m", "flowstone.cli", "materialize", "one", "--defs", "tiny:defs"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert f"created a new embedded database in {tmp_path / '.flowstone'}" in first.stderr
        second = subprocess.run(
            [sys.executable, "-m", "flowstone.cli", "runs"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert "created a new embedded database" not in second.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "flowstone.cli", "db", "stop"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_watch_redraws_until_the_run_ends(pipeline: Pipeline):
    handle = pipeline.runtime.submit("source")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstone.cli", "run", handle.run_id, "--watch", "0.2"],
        cwd=pipeline.dir, env=pipeline.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    eventually(lambda: handle.run().status == "queued", what="the run to be queued")
    pipeline.start_worker()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    frames = out.split("--- ")
    assert len(frames) >= 2  # drawn at least once while queued, then when it ended
    assert f"run {handle.run_id}: succeeded" in frames[-1]


def test_status_and_runs_print_in_under_a_second_with_10k_materializations(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    days = fs.DailyPartitions(start="1990-01-01")

    @fs.asset(partitions=days)
    def history(context: fs.AssetContext) -> str:
        return str(context.partition)

    @fs.asset
    def total() -> int:
        return 0

    with fs.FlowStone(fs.Definitions([history, total]), database_url=database_url, home=tmp_path) as rt:
        keys = days.keys()[:10_000]
        for start in range(0, len(keys), 1_000):  # ten runs of 1,000 partitions
            rt.backfill("history", keys[start : start + 1_000], partitions_per_job=100)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE flowstone_materializations SET status = 'succeeded', started_at = now(), "
                "finished_at = now() + interval '1 ms', "
                'output_ref = \'{"manager": "default", "uri": "x", "version": "1"}\' '
                "WHERE id % 20 <> 0"
            )
            conn.execute(
                "UPDATE flowstone_materializations SET status = 'failed', finished_at = now(), "
                'error = \'{"type": "ValueError", "message": "bad"}\' WHERE id % 20 = 0'
            )
            count = conn.execute("SELECT count(*) FROM flowstone_materializations").fetchone()
        assert count == (10_000,)
    url = ("--database-url", database_url)
    timings = {}
    for command in (
        ["status"],
        ["status", "--asset", "history"],
        ["runs", "--limit", "50"],
        ["runs", "--status", "queued"],
    ):
        capsys.readouterr()
        started = time.perf_counter()
        assert cli_mod.main([*command, *url]) == 0
        timings[" ".join(command)] = time.perf_counter() - started
        out = capsys.readouterr().out
        assert out.count("\n") > 1, command
    print(f"cli timings with 10k materializations: {timings}")  # shown with -s
    assert max(timings.values()) < 1.0, timings


def test_the_worker_log_is_one_line_per_step_and_tracebacks_need_verbose(pipeline: Pipeline):
    pipeline.start_worker()
    assert pipeline.runtime.submit("left", with_upstream=True).wait(timeout=60).status == "succeeded"
    assert pipeline.runtime.submit("fragile", with_upstream=True).wait(timeout=60).status == "failed"
    time.sleep(2.5)  # idle ticks of the periodic tasks happen meanwhile
    pipeline.stop()
    log = pipeline.logs()
    lines = log.splitlines()
    assert sum("step source [__unpartitioned__] started" in line for line in lines) == 2, log  # two runs
    assert sum("step.succeeded" in line and "asset=left " in line for line in lines) == 1, log
    fragile = [line for line in lines if "asset=fragile" in line or "step fragile" in line]
    assert len(fragile) == 2, log  # its start, and one line with the error
    assert "step.failed" in fragile[1]
    assert "error=ValueError: the input file is missing" in fragile[1]
    assert "Traceback" not in log
    assert "recover_stalled" not in log  # nothing per idle tick
    assert "ended with status" not in log  # Procrastinate's per-job lines


def test_the_worker_log_with_verbose_has_the_traceback(pipeline: Pipeline):
    pipeline.start_worker(args=("--verbose",))
    assert pipeline.runtime.submit("fragile", with_upstream=True).wait(timeout=60).status == "failed"
    pipeline.stop()
    log = pipeline.logs()
    assert "Traceback" in log
    assert "ended with status" in log
