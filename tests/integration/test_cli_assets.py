"""`flowstone materialize|backfill|status|lineage` as a user runs them: a subprocess, a pipeline
module in the working directory named by ``--defs module:attribute`` (or ``FLOWSTONE_DEFS``), and a
database named by ``FLOWSTONE_DATABASE_URL``.

Each subprocess costs about a second, so commands that do not depend on each other run in parallel
and each test groups many assertions.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from flowstone import partition_keys
from flowstone.store.postgres import PostgresStore

U = partition_keys.UNPARTITIONED

PIPELINE = textwrap.dedent(
    '''
    """A small pipeline for the CLI tests."""

    from datetime import date

    import flowstone as fs

    DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-01-10")


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


    @fs.asset(partitions=DAYS)
    def daily(context: fs.AssetContext, numbers: list[int]) -> str:
        day = context.partition
        context.add_metadata(partition_type=type(day).__name__)
        if day == date(2025, 1, 5):
            raise ValueError("bad day")
        return str(day)


    @fs.asset
    def broken(numbers: list[int]) -> int:
        raise RuntimeError("kaput")


    @fs.asset
    def after_broken(broken: int) -> int:
        return broken + 1


    defs = fs.Definitions(assets=[numbers, doubled, squared, report, daily, broken, after_broken])
    NOT_DEFS = 42
    '''
)

# A module holding a configured runtime: the CLI uses it as it is (here: its actor).
PIPELINE_RUNTIME = textwrap.dedent(
    """
    import flowstone as fs

    from pipeline import defs

    runtime = fs.FlowStone(defs, actor="from-module")
    """
)

# An asset that fails while the file ``fail-now`` exists in the working directory.
FLAKY_PIPELINE = textwrap.dedent(
    """
    from pathlib import Path

    import flowstone as fs


    @fs.asset
    def flaky() -> int:
        if Path("fail-now").exists():
            raise RuntimeError("asked to fail")
        return 1


    defs = fs.Definitions(assets=[flaky])
    """
)

STEP_LINE = re.compile(r"(?P<status>\w+) +(?P<asset>\w+) \[(?P<key>[^\]]*)\] #(?P<id>\d+)")
RUN_LINE = re.compile(r"run (?P<run_id>[0-9a-f-]{36}): (?P<status>\w+)")


@dataclass(frozen=True)
class Step:
    status: str
    asset: str
    key: str
    id: int


@dataclass(frozen=True)
class Cli:
    """Runs ``python -m flowstone.cli`` in the pipeline's directory."""

    cwd: Path
    env: dict[str, str]

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowstone.cli", *args],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env if env is None else env,
            timeout=120,
            check=False,
        )

    def many(self, *calls: Sequence[str]) -> list[subprocess.CompletedProcess[str]]:
        """Independent commands, run in parallel; results in the order given."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: self(*args), calls))


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "pipeline_rt.py").write_text(PIPELINE_RUNTIME)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTONE_")}
    env.update(
        FLOWSTONE_DATABASE_URL=database_url,
        FLOWSTONE_HOME=str(tmp_path / "home"),
        FLOWSTONE_ACTOR="cli-tester",
    )
    return Cli(cwd=tmp_path, env=env)


@pytest.fixture
def open_store(database_url: str) -> Callable[[], contextlib.closing[PostgresStore]]:
    """Opens a store on the test database (closed by the caller's ``with``)."""
    return lambda: contextlib.closing(PostgresStore(database_url))


DEFS = ("--defs", "pipeline:defs")


def _ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.splitlines()


def _steps(lines: list[str]) -> list[Step]:
    steps = []
    for line in lines[:-1]:
        match = STEP_LINE.fullmatch(line)
        assert match is not None, line
        steps.append(Step(match["status"], match["asset"], match["key"], int(match["id"])))
    return steps


def _run_line(lines: list[str]) -> tuple[str, str]:
    match = RUN_LINE.fullmatch(lines[-1])
    assert match is not None, lines[-1]
    return match["run_id"], match["status"]


def _one_error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single ``error: ...`` line on stderr of a command that failed cleanly."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_materialize_status_and_lineage(
    cli: Cli, open_store: Callable[[], contextlib.closing[PostgresStore]]
):
    first = cli("materialize", "report", "--with-upstream", *DEFS)
    lines = _ok(first)
    assert first.stderr == ""
    steps = _steps(lines)
    assert [(s.status, s.asset, s.key) for s in steps] == [  # keys decoded: "-" is unpartitioned
        ("succeeded", "numbers", "-"),
        ("succeeded", "doubled", "-"),
        ("succeeded", "squared", "-"),
        ("succeeded", "report", "-"),
    ]
    run_id, status = _run_line(lines)
    assert status == "succeeded"
    ids = {s.asset: s.id for s in steps}

    second = cli("materialize", "daily", "--partition", "2025-01-03", *DEFS)
    lines = _ok(second)
    (day,) = _steps(lines)
    assert (day.status, day.asset, day.key) == ("succeeded", "daily", "2025-01-03")
    _day_run, _ = _run_line(lines)

    with open_store() as s:
        for asset, step_id in ids.items():
            latest = s.latest(asset, U)
            assert latest is not None
            assert (latest.id, latest.run_id) == (step_id, run_id)
        latest_day = s.latest("daily", "d:2025-01-03")
        assert latest_day is not None
        assert latest_day.id == day.id
        assert latest_day.metadata["partition_type"] == "date"  # the asset got a date, not text
        run = s.get_run(run_id)
        assert run is not None
        assert (run.status, run.requested_by) == ("succeeded", "cli-tester")

    status_all, status_one, tree, down, daily_tree, depth_zero = cli.many(
        ("status", *DEFS),
        ("status", "report", *DEFS),
        ("lineage", "report", *DEFS),
        ("lineage", "numbers", "--downstream", "--depth", "1", *DEFS),
        ("lineage", "daily", "--partition", "d:2025-01-03", *DEFS),  # the stored key form works too
        ("lineage", "report", "--depth", "0", *DEFS),
    )

    table = _ok(status_all)  # one line per asset
    assert table[0].split() == [
        "ASSET",
        "SUCCEEDED",
        "FAILED",
        "ACTIVE",
        "MISSING",
        "LAST",
        "SUCCESS",
        "(UTC)",
        "NEWEST",
    ]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert len(rows) == len(table) - 1 == 7
    for asset in ("numbers", "doubled", "squared", "report"):
        asset_, succeeded, failed_, active, missing, day_, time_, *newest = rows[asset]
        assert (asset_, succeeded, failed_, active, missing) == (asset, "1", "0", "0", "0")
        assert newest == ["1", "succeeded"]
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day_)
        assert re.fullmatch(r"\d{2}:\d{2}:\d{2}", time_)
    assert rows["daily"][1:5] == ["1", "0", "0", "9"]  # 10 daily partitions, one succeeded
    for asset in ("broken", "after_broken"):
        assert rows[asset] == [asset, "0", "0", "0", "1", "-", "never", "materialized"]
    # in the order of the Definitions (topological, ties by name), never-materialized ones in place
    assert [line.split()[0] for line in table[1:]] == [
        "numbers",
        "broken",
        "after_broken",
        "daily",
        "doubled",
        "squared",
        "report",
    ]

    one = _ok(status_one)  # an asset's partitions
    assert one[0].split() == ["ASSET", "PARTITION", "STATUS", "LAST", "SUCCESS", "(UTC)", "MS", "RUN"]
    assert len(one) == 2
    assert one[1].split()[:3] == ["report", "-", "succeeded"]
    assert one[1].split()[-1] == run_id

    # numbers, read through doubled and through squared: both edges of the diamond are shown
    assert _ok(tree) == [
        f"report [-] #{ids['report']} succeeded",
        f"├── doubled [-] #{ids['doubled']} succeeded",
        f"│   └── numbers [-] #{ids['numbers']} succeeded",
        f"└── squared [-] #{ids['squared']} succeeded",
        f"    └── numbers [-] #{ids['numbers']} succeeded",
    ]
    assert _ok(down) == [
        f"numbers [-] #{ids['numbers']} succeeded",
        f"├── daily [2025-01-03] #{day.id} succeeded",
        f"├── doubled [-] #{ids['doubled']} succeeded",
        f"└── squared [-] #{ids['squared']} succeeded",
    ]
    assert _ok(daily_tree) == [
        f"daily [2025-01-03] #{day.id} succeeded",
        f"└── numbers [-] #{ids['numbers']} succeeded",
    ]
    assert _one_error_line(depth_zero) == "error: FlowStoneError: depth must be at least 1, got 0"


def test_failures_and_usage_errors(cli: Cli, open_store: Callable[[], contextlib.closing[PostgresStore]]):
    failed = cli("materialize", "broken", "after_broken", "--with-upstream", *DEFS)
    assert failed.returncode == 1
    lines = failed.stdout.splitlines()
    assert [(s.status, s.asset) for s in _steps(lines)] == [
        ("succeeded", "numbers"),
        ("failed", "broken"),
        ("skipped", "after_broken"),
    ]
    run_id, status = _run_line(lines)
    assert status == "failed"
    assert _one_error_line(failed) == (
        f"error: ExecutionError: RuntimeError: kaput (asset=broken, partition={U}, run_id={run_id})"
    )
    with open_store() as s:
        row = s.get_step(run_id, "broken", U)
        assert row is not None
        assert row.status == "failed"
        assert row.error is not None
        assert row.error["type"] == "ExecutionError"

    (
        unknown,
        unknown_status,
        never,
        bad_partition,
        unpartitioned_backfill,
        no_colon,
        no_module,
        not_defs,
        no_attribute,
    ) = cli.many(
        ("materialize", "numbrs", *DEFS),
        ("status", "numbrs", *DEFS),
        ("lineage", "broken", *DEFS),
        ("materialize", "daily", "--partition", "2025-01-11", *DEFS),
        ("backfill", "numbers", "--sync", *DEFS),
        ("status", "--defs", "pipeline"),
        ("status", "--defs", "no_such_pipeline:defs"),
        ("status", "--defs", "pipeline:NOT_DEFS"),
        ("status", "--defs", "pipeline:nothing_here"),
    )
    line = _one_error_line(unknown)
    assert line.startswith("error: UnknownAssetError: unknown asset 'numbrs'")
    assert "numbers" in line  # did you mean
    assert unknown.stdout == ""
    assert _one_error_line(unknown_status).startswith("error: UnknownAssetError: ")
    assert unknown_status.stdout == ""
    assert never.returncode == 1
    assert never.stdout.splitlines() == ["broken has no succeeded materialization"]
    line = _one_error_line(bad_partition)
    assert line.startswith("error: InvalidPartitionError: invalid partition '2025-01-11'")
    assert "after the last partition 2025-01-10" in line
    assert _one_error_line(unpartitioned_backfill) == (
        "error: InvalidPartitionError: asset 'numbers' is not partitioned (asset=numbers)"
    )
    assert _one_error_line(no_colon) == (
        "error: ConfigurationError: --defs must look like module:attribute, got 'pipeline'"
    )
    assert _one_error_line(no_module).startswith(
        "error: ConfigurationError: cannot import 'no_such_pipeline' (from --defs): No module named"
    )
    assert _one_error_line(not_defs).startswith(
        "error: ConfigurationError: pipeline:NOT_DEFS is int, not flowstone.Definitions"
    )
    assert _one_error_line(no_attribute) == (
        "error: ConfigurationError: module 'pipeline' has no attribute 'nothing_here'"
    )
    for result in (no_colon, no_module, not_defs, no_attribute):
        assert result.stdout == ""

    nothing, no_selection, bad_depth, no_command = cli.many(
        ("materialize", "numbers"),  # neither --defs nor FLOWSTONE_DEFS (not in the fixture's env)
        ("materialize", *DEFS),
        ("lineage", "report", "--depth", "deep", *DEFS),
        (),
    )
    assert _one_error_line(nothing) == (
        "error: ConfigurationError: no definitions given: pass --defs mypackage.pipeline:defs or set "
        "FLOWSTONE_DEFS"
    )
    for usage in (no_selection, bad_depth, no_command):
        assert usage.returncode == 2, usage.stderr
        assert usage.stdout == ""
        assert "usage: flowstone" in usage.stderr
        assert "Traceback" not in usage.stderr
    assert "invalid int value: 'deep'" in bad_depth.stderr
    assert "the following arguments are required: selection" in no_selection.stderr


def test_backfill_sync_and_flowstone_defs(
    cli: Cli, open_store: Callable[[], contextlib.closing[PostgresStore]]
):
    # --defs may name a configured FlowStone runtime: it is used as it is (its actor here)
    numbers = _ok(cli("materialize", "numbers", "--defs", "pipeline_rt:runtime"))
    numbers_run, _ = _run_line(numbers)

    backfill = cli(
        "backfill",
        "daily",
        "--sync",
        "--start",
        "2025-01-01",
        "--end",
        "2025-01-06",
        "--max-workers",
        "3",
        *DEFS,
    )
    assert backfill.returncode == 1  # one partition failed
    assert backfill.stdout.splitlines() == [
        "backfill daily: 5 succeeded, 1 failed, 0 skipped (already succeeded)"
    ]
    errors = [line for line in backfill.stderr.splitlines() if not line.startswith("backfill daily [")]
    assert errors == ["failed 2025-01-05: ValueError: bad day"]  # keys are shown decoded
    progress = [line for line in backfill.stderr.splitlines() if line.startswith("backfill daily [")]
    assert progress  # stderr is not a terminal: one line per tenth done
    assert " 6/6 " in progress[-1]
    assert "100.0%" in progress[-1]
    assert "Traceback" not in backfill.stderr

    # FLOWSTONE_DEFS instead of --defs; --quiet drops the progress display
    again = cli(
        "backfill",
        "daily",
        "--sync",
        "--partition",
        "2025-01-02",
        "--partition",
        "2025-01-07",
        "--quiet",
        env={**cli.env, "FLOWSTONE_DEFS": "pipeline:defs"},
    )
    assert _ok(again) == ["backfill daily: 1 succeeded, 0 failed, 1 skipped (already succeeded)"]
    assert again.stderr == ""

    with open_store() as s:
        done = s.succeeded_keys("daily", [f"d:2025-01-{d:02}" for d in range(1, 11)])
        assert done == {f"d:2025-01-{d:02}" for d in (1, 2, 3, 4, 6, 7)}
        latest = s.latest("daily", "d:2025-01-07")
        assert latest is not None
        assert latest.metadata["partition_type"] == "date"
        kinds = sorted((r.kind, r.requested_by) for r in s.list_runs())
        assert kinds == [("backfill", "cli-tester")] * 2 + [("materialize", "from-module")]
        assert [r.run_id for r in s.list_runs() if r.kind == "materialize"] == [numbers_run]


def test_a_bad_partition_error_names_the_asset(cli: Cli):
    results = cli.many(
        ("materialize", "daily", "--partition", "2025-13-01", *DEFS),
        ("materialize", "numbers", "daily", "--partition", "2025-13-01", *DEFS),
        ("backfill", "daily", "--sync", "--partition", "2025-13-01", *DEFS),
        ("lineage", "daily", "--partition", "2025-13-01", *DEFS),
    )
    for result in results:
        line = _one_error_line(result)
        assert line.startswith(
            "error: InvalidPartitionError: invalid partition '2025-13-01' for asset 'daily'"
        )
        assert line.endswith("(asset=daily, partition=2025-13-01)")
        assert result.stdout == ""


def test_status_shows_an_asset_that_only_failed_as_failed(cli: Cli):
    failed = cli("materialize", "broken", "--with-upstream", *DEFS)
    assert failed.returncode == 1
    broken_run, _ = _run_line(failed.stdout.splitlines())
    table = _ok(cli("status", "broken", *DEFS))
    assert len(table) == 2
    assert table[0].split() == ["ASSET", "PARTITION", "STATUS", "LAST", "SUCCESS", "(UTC)", "MS", "RUN"]
    asset, key, state, last_success, ms, run = table[1].split()
    assert (asset, key, state, last_success, run) == (
        "broken",
        "-",
        "failed",
        "-",
        broken_run,
    )  # "-": unpartitioned
    assert ms.isdigit()


def test_status_shows_the_newest_row_of_each_partition_with_its_last_success(cli: Cli):
    assert cli("materialize", "numbers", *DEFS).returncode == 0
    good, bad = cli.many(
        ("materialize", "daily", "--partition", "2025-01-03", *DEFS),
        ("materialize", "daily", "--partition", "2025-01-05", *DEFS),  # the asset raises on the 5th
    )
    good_run, _ = _run_line(_ok(good))
    assert bad.returncode == 1
    bad_run, _ = _run_line(bad.stdout.splitlines())
    table = _ok(cli("status", "daily", *DEFS))
    assert len(table) == 3
    rows = [line.split() for line in table[1:]]
    assert [r[:3] for r in rows] == [
        ["daily", "2025-01-03", "succeeded"],
        ["daily", "2025-01-05", "failed"],
    ]
    (_, _, _, day_, time_, ms, run), failed_row = rows
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day_)
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2}", time_)
    assert ms.isdigit()
    assert run == good_run
    assert failed_row[3] == "-"  # that partition never succeeded
    assert failed_row[-1] == bad_run


def test_status_shows_a_failure_after_a_success_with_the_last_success_time(
    cli: Cli, open_store: Callable[[], contextlib.closing[PostgresStore]]
):
    (cli.cwd / "flaky_pipeline.py").write_text(FLAKY_PIPELINE)
    flaky_defs = ("--defs", "flaky_pipeline:defs")
    never = _ok(cli("status", "flaky", *flaky_defs))
    assert never[1].split() == ["flaky", "-", "never", "-", "-", "-"]
    first = _ok(cli("materialize", "flaky", *flaky_defs))
    first_run, _ = _run_line(first)
    (cli.cwd / "fail-now").write_text("")
    second = cli("materialize", "flaky", *flaky_defs)
    assert second.returncode == 1
    second_run, _ = _run_line(second.stdout.splitlines())
    summary = _ok(cli("status", *flaky_defs))
    assert summary[1].split()[:5] == ["flaky", "1", "1", "0", "0"]  # succeeded once, newest failed
    assert summary[1].split()[-2:] == ["1", "failed"]
    table = _ok(cli("status", "--asset", "flaky", *flaky_defs))
    assert len(table) == 2
    asset, key, state, day_, time_, ms, run = table[1].split()
    # the newest row (the failure, its duration and run) with the time of the last success
    assert (asset, key, state, run) == ("flaky", "-", "failed", second_run)
    with open_store() as s:
        success = s.latest("flaky", U)
        assert success is not None
        assert success.run_id == first_run
        assert success.finished_at is not None
        failure = s.get_step(second_run, "flaky", U)
        assert failure is not None
        assert failure.duration_ms is not None
    assert f"{day_} {time_}" == success.finished_at.strftime("%Y-%m-%d %H:%M:%S")
    assert ms == f"{failure.duration_ms:.0f}"
