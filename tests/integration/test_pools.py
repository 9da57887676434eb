"""Concurrency pools and priorities, enforced by Postgres at claim time, with real worker
processes (issue: pools, priorities and rate limits)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from tests.integration.queue_harness import Pipeline, eventually

BODY = """
import json

KEYS = [f"k{i:03d}" for i in range(200)]
REGIONS = fs.StaticPartitions([f"{r}-{i}" for r in ("eu", "us") for i in range(10)])

def _record(name: str, key: str, hold_s: float) -> None:
    started = time.time()
    time.sleep(hold_s)
    with open(MARKERS / f"{name}.jsonl", "a") as out:
        out.write(json.dumps([key, started, time.time()]) + "\\n")

@fs.asset(partitions=fs.StaticPartitions(KEYS), pool="warehouse")
def load(context: fs.AssetContext) -> str:
    _record("load", str(context.partition), 0.02)
    return str(context.partition)

@fs.asset(partitions=REGIONS, pool="tenant", pool_key=lambda ctx: str(ctx.partition).split("-")[0])
def per_region(context: fs.AssetContext) -> str:
    _record("per_region", str(context.partition), 0.05)
    return str(context.partition)

@fs.asset(pool="solo")
def slow_solo() -> int:
    (MARKERS / "slow-started").touch()
    deadline = time.monotonic() + 60
    while not (MARKERS / "slow-release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 1

@fs.asset(pool="solo")
def after_solo() -> int:
    return 2

@fs.asset(partitions=fs.StaticPartitions([f"b{i:04d}" for i in range(5000)]))
def bulk(context: fs.AssetContext) -> str:
    time.sleep(0.01)
    _record("bulk", str(context.partition), 0)
    return str(context.partition)

@fs.asset(partitions=fs.StaticPartitions([f"c{i:03d}" for i in range(100)]), pool="api")
def calls(context: fs.AssetContext) -> str:
    _record("calls", str(context.partition), 0)
    return str(context.partition)

@fs.asset
def urgent() -> int:
    _record("urgent", "-", 0)
    return 1

defs = fs.Definitions(
    assets=[load, per_region, slow_solo, after_solo, bulk, calls, urgent],
    pools=[
        fs.Pool("warehouse", limit=2),
        fs.Pool("tenant", limit=1),
        fs.Pool("solo", limit=1),
        fs.RateLimit("api", limit=20, period_s=2),
    ],
)
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, BODY) as p:
        yield p


def _intervals(pipeline: Pipeline, name: str) -> list[tuple[str, float, float]]:
    path = pipeline.markers / f"{name}.jsonl"
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []  # type: ignore[misc]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, delta in events:  # an end sorts before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


def test_a_pool_of_2_holds_across_3_workers_of_concurrency_8(pipeline: Pipeline):
    for _ in range(3):
        pipeline.start_worker(concurrency=8)
    handle = pipeline.runtime.backfill("load")
    assert handle.wait(timeout=240).status == "succeeded", pipeline.logs()[-3000:]
    intervals = _intervals(pipeline, "load")
    assert len(intervals) == 200
    assert _max_overlap([(s, e) for _, s, e in intervals]) <= 2
    # steps that found the pool full gave their worker thread back: their job ended and the
    # release of a slot deferred a new one
    jobs = pipeline.sql(
        "SELECT count(*) FROM procrastinate_jobs WHERE args->>'run_id' = %s", (handle.run_id,)
    )[0][0]
    assert jobs > 200
    assert pipeline.sql("SELECT count(*) FROM flowstone_pool_holders") == [(0,)]
    assert pipeline.sql("SELECT count(*) FROM flowstone_pool_waiters") == [(0,)]
    steps = pipeline.sql(
        "SELECT max(attempt), min(attempt) FROM flowstone_materializations WHERE run_id = %s",
        (handle.run_id,),
    )
    assert steps == [(1, 1)]  # waiting for a slot is not an attempt


def test_a_pool_key_gives_each_key_its_own_limit(pipeline: Pipeline):
    pipeline.start_worker(concurrency=8)
    handle = pipeline.runtime.backfill("per_region")
    assert handle.wait(timeout=120).status == "succeeded", pipeline.logs()[-3000:]
    intervals = _intervals(pipeline, "per_region")
    for region in ("eu", "us"):
        assert _max_overlap([(s, e) for k, s, e in intervals if k.startswith(region)]) == 1
    # the two regions did run at the same time
    assert _max_overlap([(s, e) for _, s, e in intervals]) == 2


def test_a_sigkilled_worker_does_not_leak_its_slot(pipeline: Pipeline):
    first = pipeline.start_worker(concurrency=2)
    slow = pipeline.runtime.submit("slow_solo")
    eventually((pipeline.markers / "slow-started").exists, what="the slow step to start")
    after = pipeline.runtime.submit("after_solo")  # once the slow one holds the slot
    eventually(
        lambda: pipeline.sql("SELECT count(*) FROM flowstone_pool_waiters") == [(1,)],
        what="the second step to wait for the slot",
    )
    assert after.status() == {"queued": 1}
    first.send_signal(signal.SIGKILL)
    first.wait()
    pipeline.start_worker(concurrency=2)
    pipeline.touch("slow-release")
    assert slow.wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
    assert after.wait(timeout=60).status == "succeeded", pipeline.logs()[-3000:]
    assert pipeline.sql("SELECT count(*) FROM flowstone_pool_holders") == [(0,)]


def test_pools_cli_lists_and_raising_a_limit_wakes_the_waiters(pipeline: Pipeline):
    pipeline.start_worker(concurrency=4)
    slow = pipeline.runtime.submit("slow_solo")
    eventually((pipeline.markers / "slow-started").exists, what="the slow step to start")
    after = pipeline.runtime.submit("after_solo")  # once the slow one holds the slot
    eventually(
        lambda: pipeline.sql("SELECT count(*) FROM flowstone_pool_waiters") == [(1,)],
        what="the second step to wait for the slot",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowstone.cli", *args],
            cwd=pipeline.dir, env=pipeline.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    listed = cli("pools")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["solo"][1:] == ["1", "code", "-", "1", "1"]
    assert rows["warehouse"][1:] == ["2", "code", "-", "0", "0"]
    shown = cli("run", after.run_id)
    assert "waiting_pool (solo)" in shown.stdout
    raised = cli("pools", "set", "solo", "2")
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.strip().startswith("pool solo: limit 2 per key (set by ")
    assert after.wait(timeout=30).status == "succeeded"  # woken at once, while slow still runs
    assert slow.run().status == "running"
    pipeline.touch("slow-release")
    assert slow.wait(timeout=60).status == "succeeded"
    assert cli("pools", "unset", "solo").stdout.strip() == "pool solo: limit 1 per key (from the code)"
    unknown = cli("pools", "set", "nope", "3")
    assert unknown.returncode == 1
    assert "there is no pool 'nope'" in unknown.stderr


def test_a_rate_limit_of_20_per_2_seconds_holds_over_100_steps(pipeline: Pipeline):
    for _ in range(2):
        pipeline.start_worker(concurrency=8)
    handle = pipeline.runtime.backfill("calls")
    assert handle.wait(timeout=120).status == "succeeded", pipeline.logs()[-3000:]
    starts = sorted(start for _, start, _ in _intervals(pipeline, "calls"))
    assert len(starts) == 100
    # Measured at the function's start, a little after the slot was taken in Postgres: a window of
    # 1.8 s here covers at most 2 s of takes as long as that delay varies by under 0.2 s.
    busiest = max(sum(1 for t in starts if first <= t < first + 1.8) for first in starts)
    assert busiest <= 20
    assert starts[-1] - starts[0] >= 7.5  # 100 starts at 20 per 2 s take at least 8 s
    attempts = pipeline.sql(
        "SELECT max(attempt) FROM flowstone_materializations WHERE run_id = %s", (handle.run_id,)
    )
    assert attempts == [(1,)]  # waiting for the window is not an attempt


def test_a_high_priority_submit_overtakes_a_queued_backfill(pipeline: Pipeline):
    backfill = pipeline.runtime.backfill("bulk")  # 5,000 jobs queued
    pipeline.start_worker(concurrency=1)
    eventually(
        lambda: len(_intervals(pipeline, "bulk")) >= 20, what="the worker to be busy with the backfill"
    )
    submitted = time.time()
    urgent = pipeline.runtime.submit("urgent", priority=10)
    assert urgent.wait(timeout=60).status == "succeeded"
    (urgent_start,) = [start for _, start, _ in _intervals(pipeline, "urgent")]
    assert urgent_start - submitted <= 1.0  # ahead of the ~4,980 backfill jobs still queued
    done_before = sum(1 for _, start, _ in _intervals(pipeline, "bulk") if start < urgent_start)
    assert done_before < 200
    priorities = pipeline.sql(
        "SELECT DISTINCT priority FROM procrastinate_jobs WHERE args->>'run_id' = %s", (urgent.run_id,)
    )
    assert priorities == [(10,)]
    backfill.cancel()


def test_in_process_runs_respect_pools_and_definitions_are_checked(database_url: str, tmp_path: Path):
    @fs.asset(pool="db")
    def one() -> int:
        return 1

    defs = fs.Definitions([one], pools=[fs.Pool("db", limit=1)])
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        assert rt.materialize("one").value("one") == 1
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT pool, code_limit FROM flowstone_pools").fetchall() == [("db", 1)]
            assert conn.execute("SELECT count(*) FROM flowstone_pool_holders").fetchone() == (0,)
    with pytest.raises(fs.DefinitionError, match="uses pool 'nope', which is not in Definitions"):
        fs.Definitions([fs.asset(lambda: 1, name="x", pool="nope")])
    with pytest.raises(fs.DefinitionError, match="priority must be a whole number from -999 to 999"):
        fs.asset(lambda: 1, name="y", priority=5000)
    with pytest.raises(fs.DefinitionError, match="limit must be a whole number"):
        fs.Pool("p", limit=-1)


def test_a_pooled_asset_cannot_share_jobs_between_partitions(pipeline: Pipeline):
    with pytest.raises(fs.ConfigurationError, match="partitions_per_job must be 1"):
        pipeline.runtime.backfill("load", partitions_per_job=10)
