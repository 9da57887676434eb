"""Durable execution with real Procrastinate workers (subprocesses) on real Postgres."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone.queue import jobs as queue_mod
from flowstone.queue import worker as worker_mod
from tests.integration.queue_harness import Pipeline, eventually

pytestmark = pytest.mark.slow

DIAMOND = """
@fs.asset
def source() -> int:
    return 1

@fs.asset
def left(source: int) -> int:
    return source + 1

@fs.asset
def right(source: int) -> int:
    return source + 2

@fs.asset
def join(left: int, right: int) -> int:
    return left * right

@fs.asset
def top(join: int) -> int:
    return join + 100

@fs.asset
def broken(source: int) -> int:
    raise RuntimeError("kaput")

@fs.asset
def after_broken(broken: int) -> int:
    return broken

@fs.asset(retry=fs.RetryPolicy(max_attempts=3, backoff_s=0.2, jitter=False))
def flaky(source: int) -> int:
    marker = MARKERS / "flaky-attempts"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts < 2:
        raise ConnectionError("transient")
    return attempts

@fs.asset
def slow(source: int) -> int:
    (MARKERS / "slow-started").touch()
    deadline = time.monotonic() + 60
    while not (MARKERS / "slow-release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return source

@fs.asset
def after_slow(slow: int) -> int:
    return slow

@fs.asset(partitions=fs.DailyPartitions(start="2020-01-01", end="2025-12-31"))
def daily(context: fs.AssetContext) -> str:
    return str(context.partition)

defs = fs.Definitions(
    assets=[source, left, right, join, top, broken, after_broken, flaky, slow, after_slow, daily]
)
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, DIAMOND) as p:
        yield p


def test_i1_job_args_in_procrastinate_jobs_are_exactly_three_strings(pipeline: Pipeline):
    handle = pipeline.runtime.submit("top", with_upstream=True)
    rows = pipeline.sql("SELECT task_name, queue_name, args FROM procrastinate_jobs")
    assert len(rows) == 1  # only the step with no upstream is enqueued at submit
    task_name, queue_name, args = rows[0]
    assert (task_name, queue_name) == (queue_mod.TASK_NAME, queue_mod.DEFAULT_QUEUE)
    assert args == {"run_id": handle.run_id, "asset": "source", "partition": "__unpartitioned__"}
    assert all(isinstance(v, str) for v in args.values())
    assert queue_mod.JobArgs.model_validate(args).asset == "source"
    assert handle.status() == {"pending": 4, "queued": 1}
    assert handle.run().status == "queued"
    (details,) = pipeline.sql("SELECT details FROM flowstone_audit_log WHERE event = 'run.requested'")
    assert details[0]["steps"] == 5
    (config,) = pipeline.sql("SELECT config FROM flowstone_runs WHERE run_id = %s", (handle.run_id,))
    assert config == ({},)


def test_i1_submit_is_one_transaction(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch):
    enqueuer = pipeline.runtime.services.jobs
    original = type(enqueuer).defer_steps

    def defer_then_fail(self, conn, run_id, items, **options):
        original(self, conn, run_id, items, **options)
        raise RuntimeError("injected failure after the defer")

    monkeypatch.setattr(type(enqueuer), "defer_steps", defer_then_fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        pipeline.runtime.submit("top", with_upstream=True, run_config={"resources": {}})
    for table in (
        "procrastinate_jobs",
        "flowstone_runs",
        "flowstone_materializations",
        "flowstone_step_edges",
    ):
        assert pipeline.sql(f"SELECT count(*) FROM {table}") == [(0,)], table


def test_i14_diamond_dag_runs_with_fan_in_and_each_join_enqueued_once(pipeline: Pipeline):
    for _ in range(4):
        pipeline.start_worker(concurrency=2)
    handles = [pipeline.runtime.submit("top", with_upstream=True) for _ in range(5)]
    for handle in handles:
        run = handle.wait(timeout=60)
        assert run.status == "succeeded", (handle.status(), pipeline.logs())
        assert handle.status() == {"succeeded": 5}
    assert pipeline.runtime.load("top") == 106
    rows = pipeline.sql(
        "SELECT args->>'run_id', count(*) FROM procrastinate_jobs "
        "WHERE task_name = %s AND args->>'asset' = 'join' GROUP BY 1",
        (queue_mod.TASK_NAME,),
    )
    # Each join is released once: it gets one job, or (continuation, ADR 0013) it runs in the job
    # of the branch whose success made it ready, with that job's id; never both, never twice.
    assert all(n == 1 for _, n in rows)
    joins = pipeline.sql(
        "SELECT m.run_id::text, m.attempt, j.args->>'asset' FROM flowstone_materializations AS m "
        "JOIN procrastinate_jobs AS j ON j.id = m.job_id WHERE m.asset = 'join'"
    )
    assert len(joins) == 5
    assert {attempt for _, attempt, _ in joins} == {1}
    own_job = {run for run, _ in rows}
    assert all((run in own_job) == (job_asset == "join") for run, _, job_asset in joins)
    lineage = {n.asset for n in pipeline.runtime.lineage.upstream("top")}
    assert lineage == {"join", "left", "right", "source"}


def test_failure_skips_downstream_and_fails_the_job_without_retry(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit(["broken", "after_broken"], with_upstream=True)
    run = handle.wait(timeout=60)
    assert run.status == "failed"
    assert handle.status() == {"failed": 1, "skipped": 1, "succeeded": 1}
    ((error, attempt),) = pipeline.sql(
        "SELECT error, attempt FROM flowstone_materializations WHERE asset = 'broken'"
    )
    assert error["type"] == "ExecutionError"
    assert attempt == 1
    # The job that ran it (its own, or by continuation the one whose success made it ready, ADR
    # 0013) fails without retry.
    ((status, attempts),) = pipeline.sql(
        "SELECT j.status, j.attempts FROM procrastinate_jobs AS j "
        "JOIN flowstone_materializations AS m ON m.job_id = j.id WHERE m.asset = 'broken'"
    )
    assert (status, attempts) == ("failed", 1)
    events = [e.event for e in pipeline.runtime.store.audit_events(run_id=handle.run_id)]
    assert events.count("materialization.failed") == 1


def test_retry_succeeds_on_attempt_two(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit("flaky", with_upstream=True)
    assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()
    ((attempt, error),) = pipeline.sql(
        "SELECT attempt, error FROM flowstone_materializations WHERE asset = 'flaky'"
    )
    assert (attempt, error) == (2, None)
    assert pipeline.runtime.load("flaky") == 2
    # Attempt 1 may have run in source's job (continuation, ADR 0013): the retry then got a job of
    # its own; either way the job that ran attempt 2 is flaky's and no job failed.
    ((job_asset, job_status),) = pipeline.sql(
        "SELECT j.args->>'asset', j.status FROM procrastinate_jobs AS j "
        "JOIN flowstone_materializations AS m ON m.job_id = j.id WHERE m.asset = 'flaky'"
    )
    assert (job_asset, job_status) == ("flaky", "succeeded")
    assert pipeline.sql("SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'") == [(0,)]
    events = [e.event for e in pipeline.runtime.store.audit_events(run_id=handle.run_id)]
    assert events.count("materialization.retrying") == 1
    assert events.count("materialization.failed") == 0


def test_sigkill_mid_step_is_recovered_by_another_worker(pipeline: Pipeline):
    victim = pipeline.start_worker(concurrency=1)
    handle = pipeline.runtime.submit(["slow", "after_slow"], with_upstream=True)
    eventually((pipeline.markers / "slow-started").exists, what="slow step to start")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    (pipeline.markers / "slow-started").unlink()
    pipeline.touch("slow-release")
    pipeline.start_worker(concurrency=2)
    run = handle.wait(timeout=60)
    assert run.status == "succeeded", (handle.status(), pipeline.logs())
    ((attempt,),) = pipeline.sql("SELECT attempt FROM flowstone_materializations WHERE asset = 'slow'")
    assert attempt == 2  # the killed attempt, then the reclaim
    assert len(pipeline.runtime.history("slow")) == 1
    # Outputs are written in the success statement (Postgres IO manager): exactly one exists.
    assert pipeline.sql("SELECT count(*) FROM flowstone_outputs WHERE asset = 'slow'") == [(1,)]


def test_cancel_stops_later_steps_and_lets_the_running_one_finish(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit(["slow", "after_slow"], with_upstream=True)
    eventually((pipeline.markers / "slow-started").exists, what="slow step to start")
    assert handle.run().status == "running"  # queued until its first step was claimed
    assert handle.cancel() == 1
    pipeline.touch("slow-release")
    run = handle.wait(timeout=60)
    assert run.status == "cancelled"
    assert handle.status() == {"cancelled": 1, "succeeded": 2}
    assert pipeline.runtime.latest("after_slow") is None


def test_queued_backfill_records_every_partition(pipeline: Pipeline):
    handle = pipeline.runtime.backfill("daily", start="2021-01-01", end="2023-09-27", partitions_per_job=10)
    assert pipeline.sql("SELECT count(*) FROM procrastinate_jobs") == [(100,)]
    (details,) = pipeline.sql("SELECT details FROM flowstone_audit_log WHERE event = 'run.requested'")
    assert details[0]["steps"] == 1000
    pipeline.start_worker(concurrency=4)
    assert handle.wait(timeout=120).status == "succeeded", pipeline.logs()
    assert pipeline.sql(
        "SELECT count(*) FROM flowstone_materializations WHERE asset = 'daily' AND status = 'succeeded'"
    ) == [(1000,)]
    assert pipeline.runtime.load("daily", "2022-02-02") == "2022-02-02"
    # A batch starts with one line, not one per partition (a backfill's log would double).
    logs = pipeline.logs()
    assert logs.count("10 steps of daily [") == 100, logs[-2000:]
    assert "step daily [" not in logs
    again = pipeline.runtime.backfill("daily", start="2021-01-01", end="2023-09-27", partitions_per_job=10)
    assert again.wait(timeout=10).status == "succeeded"
    assert again.status() == {}


@pytest.fixture
def unswept(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    """The diamond with the recovery sweep's timer far away: it runs once at worker start only."""
    with Pipeline(tmp_path, database_url, DIAMOND, options="recovery_interval_s=3600") as p:
        yield p


def test_i3_job_with_unknown_asset_fails_cleanly_and_touches_nothing_else(unswept: Pipeline):
    # The recovery sweep settles steps whose job ended (it would re-enqueue the bad run's real
    # steps); here it is kept out of the way to see what the rejected jobs themselves touched.
    pipeline = unswept
    good = pipeline.runtime.submit("source")
    bad = pipeline.runtime.submit("left", with_upstream=True)
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET args = jsonb_set(args, '{asset}', '\"os.system\"') "
            "WHERE args->>'run_id' = %s",
            (bad.run_id,),
        )
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('flowstone', %s, 0, NULL, NULL, %s::jsonb, NULL)]"
            "::procrastinate_job_to_defer_v1[])",
            (
                queue_mod.TASK_NAME,
                json.dumps({"run_id": bad.run_id, "asset": "x", "partition": "p", "extra": 1}),
            ),
        )
    pipeline.start_worker()
    assert good.wait(timeout=60).status == "succeeded"
    eventually(
        lambda: pipeline.sql("SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'") == [(2,)],
        what="both bad jobs to fail",
    )
    assert "rejected job" in pipeline.logs()
    statuses = pipeline.sql("SELECT status, attempts FROM procrastinate_jobs WHERE status = 'failed'")
    assert all(attempts == 1 for _, attempts in statuses)  # never retried
    assert bad.status() == {"pending": 1, "queued": 1}  # its real steps are untouched
    # The sweep then gives the real steps a new job of their own, and the run finishes.
    worker_mod.maintain(pipeline.runtime.services)
    assert bad.wait(timeout=60).status == "succeeded", pipeline.logs()


def test_procrastinate_cli_worker_runs_flowstone_jobs(pipeline: Pipeline):
    pipeline.start_worker(procrastinate_cli=True)
    handle = pipeline.runtime.submit("join", with_upstream=True)
    assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()
    assert pipeline.runtime.load("join") == 6


def test_run_handle_rebuild_and_wait_timeout(pipeline: Pipeline):
    handle = pipeline.runtime.submit("source")
    same = pipeline.runtime.run(handle.run_id)
    assert same.run_id == handle.run_id
    with pytest.raises(TimeoutError, match="still queued"):
        same.wait(timeout=0.3)
    with pytest.raises(fs.FlowStoneError, match="does not exist"):
        pipeline.runtime.run("00000000-0000-0000-0000-000000000000")


def test_two_fetch_loops_in_one_process_register_run_and_stop_together(pipeline: Pipeline):
    """``--fetch-loops 2``: two Procrastinate workers in one process, each registered with its
    share of the concurrency; both take jobs; SIGTERM stops both (their rows go) with status 0."""
    proc = pipeline.start_worker(concurrency=4, args=("--fetch-loops", "2"))
    eventually(
        lambda: len(pipeline.sql("SELECT id FROM procrastinate_workers")) == 2, what="two registered workers"
    )
    handles = [pipeline.runtime.submit("join", with_upstream=True) for _ in range(4)]
    for handle in handles:
        assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()
    assert "fetch-loops=2" in pipeline.logs()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert pipeline.sql("SELECT count(*) FROM procrastinate_workers") == [(0,)]


@pytest.mark.parametrize("loops", ["1", "2"])
def test_one_shot_worker_drains_successors_deferred_after_its_fetch_found_nothing(
    pipeline: Pipeline, loops: str
):
    """A fetch loop ends when a fetch finds nothing, which happens while a running step has yet to
    defer its successors (here: ``right`` while ``source`` runs): ``--one-shot`` drains again while
    jobs wait, so it exits only with the whole run done (it left two steps behind before)."""
    handle = pipeline.runtime.submit("join", with_upstream=True)
    proc = pipeline.start_worker(concurrency=4, args=("--fetch-loops", loops, "--one-shot"))
    assert proc.wait(timeout=60) == 0, pipeline.logs()
    assert handle.status() == {"succeeded": 4}


def test_worker_refuses_more_fetch_loops_than_its_concurrency(pipeline: Pipeline):
    proc = pipeline.start_worker(concurrency=2, args=("--fetch-loops", "3"))
    assert proc.wait(timeout=60) != 0
    assert "--fetch-loops must be between 1 and --concurrency (2), got 3" in pipeline.logs()
