"""Retention: ``runtime.prune`` / ``flowstone db prune`` delete old finished runs with their steps
and outputs, never the versions kept per partition nor what a kept version read, leave unfinished
runs alone, prune ended queue jobs, and audit what they deleted (issue: 10 M materializations)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import prune as prune_mod

DAYS = fs.StaticPartitions(["a", "b"])


@fs.asset(partitions=DAYS)
def raw(context: fs.AssetContext) -> str:
    return f"raw-{context.partition}-{context.run_id}"


@fs.asset(partitions=DAYS)
def clean(raw: str) -> str:
    return raw.upper()


@fs.asset
def source() -> int:
    return 1


@fs.asset
def reader(source: int) -> int:
    return source + 1


DEFS = fs.Definitions([raw, clean, source, reader])
LATER = datetime.now(UTC) + timedelta(days=100)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    policy = fs.Retention(runs_days=90, keep_last_per_partition=2, jobs_days=7)
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path, retention=policy) as rt:
        yield rt


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])


def test_prune_keeps_the_last_versions_per_partition_and_deletes_the_rest(runtime: fs.FlowStone):
    url = runtime.require_database_url()
    runs = [
        runtime.materialize("clean", partition=p, with_upstream=True).run_id
        for _ in range(4)
        for p in ("a", "b")
    ]
    assert _count(url, "SELECT count(*) FROM flowstone_materializations") == 16

    dry = runtime.prune(dry_run=True)
    assert dry.dry_run
    assert dry.deleted["flowstone_materializations"] == 0  # nothing is 90 days old yet
    assert runtime.services.options.retention is not None
    report_later = prune_mod.prune(runtime.services, runtime.services.options.retention, now=LATER, pause_s=0)
    # 2 assets x 2 partitions keep their 2 newest versions: 8 of 16 rows stay
    assert report_later.deleted["flowstone_materializations"] == 8
    assert report_later.deleted["flowstone_runs"] == 4  # the 4 oldest runs lost every step
    assert _count(url, "SELECT count(*) FROM flowstone_materializations") == 8
    assert _count(url, "SELECT count(*) FROM flowstone_runs") == 4
    assert {r.run_id for r in runtime.history("clean", "a", limit=10)} == {runs[4], runs[6]}
    assert runtime.load("clean", "b").startswith("RAW-B-")  # latest() and its output untouched
    events = [e for e in runtime.audit.events() if e.event == "retention.pruned"]
    assert len(events) == 1
    assert events[0].details["flowstone_materializations"] == 8
    assert events[0].details["outputs"] == 8  # gc ran first with keep_last_per_partition
    again = prune_mod.prune(runtime.services, runtime.services.options.retention, now=LATER, pause_s=0)
    assert again.deleted == {
        "flowstone_materializations": 0,
        "flowstone_runs": 0,
        "procrastinate_jobs": 0,
        "flowstone_step_logs": 0,
    }


def test_prune_never_deletes_what_a_kept_version_read(runtime: fs.FlowStone):
    url = runtime.require_database_url()
    first = runtime.materialize("reader", with_upstream=True)  # reader v1 reads source v1
    for _ in range(3):
        runtime.materialize("source")  # source v2..v4: v1 is no longer among the last 2
    policy = fs.Retention(runs_days=90, keep_last_per_partition=1, jobs_days=None)
    report = prune_mod.prune(runtime.services, policy, now=LATER, pause_s=0)
    assert report.deleted["flowstone_materializations"] == 2  # source v2, v3
    source_v1 = first.step("source").id
    assert _count(url, f"SELECT count(*) FROM flowstone_materializations WHERE id = {source_v1}") == 1
    assert [n.materialization_id for n in runtime.lineage.upstream("reader")] == [source_v1]


def test_prune_leaves_unfinished_runs_and_prunes_old_jobs(runtime: fs.FlowStone):
    url = runtime.require_database_url()
    queued = runtime.submit("source")  # no worker: stays queued
    done = runtime.materialize("source")
    with psycopg.connect(url, autocommit=True) as conn:
        # a fortnight of ended jobs, one an hour, as if periodic tasks had run (time travel)
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "SELECT 'flowstone', 'flowstone:recover_stalled', '{}'::jsonb, 'succeeded' "
            "FROM generate_series(1, 336)"
        )
        conn.execute(  # ended k hours and a half ago, k = 0..335: clear of the window's edge
            "INSERT INTO procrastinate_events (job_id, type, at) "
            "SELECT id, 'succeeded', now() - (row_number() OVER (ORDER BY id) - 0.5) * interval '1 hour' "
            "FROM procrastinate_jobs WHERE task_name = 'flowstone:recover_stalled'"
        )
    policy = runtime.services.options.retention
    assert policy is not None
    report = prune_mod.prune(runtime.services, policy, now=datetime.now(UTC), pause_s=0)
    assert report.deleted["procrastinate_jobs"] == 336 - 7 * 24  # older than the 7-day window
    ticks = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'flowstone:recover_stalled'"
    assert _count(url, ticks) == 7 * 24
    assert _count(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'") == 1  # the queued run
    prune_mod.prune(runtime.services, runtime.services.options.retention, now=LATER, pause_s=0)
    assert queued.run().status == "queued"
    assert queued.status() == {"queued": 1}
    assert runtime.store.get_run(done.run_id) is not None  # its only step is the latest version


def test_db_prune_cli_dry_run_and_policy_flags(runtime: fs.FlowStone, database_url: str, tmp_path: Path):
    runtime.materialize("source")
    runtime.materialize("source")
    result = subprocess.run(
        [sys.executable, "-m", "flowstone.cli", "db", "prune", "--dry-run", "--runs-days", "0",
         "--keep-last", "1", "--database-url", database_url],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("prune (runs older than 0 days, keep the last 1 per partition")
    assert "would delete (first pass)" in result.stdout
    assert _count(database_url, "SELECT count(*) FROM flowstone_materializations") == 2  # nothing deleted
    real = subprocess.run(
        [sys.executable, "-m", "flowstone.cli", "db", "prune", "--runs-days", "0", "--keep-last", "1",
         "--database-url", database_url],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert real.returncode == 0, real.stderr
    assert "deleted 1 from flowstone_materializations, 1 from flowstone_runs" in real.stdout
    assert runtime.load("source") == 1
    with pytest.raises(fs.ConfigurationError, match="keep_last_per_partition must be at least 1"):
        fs.Retention(keep_last_per_partition=0)


def test_prune_deletes_step_logs_older_than_logs_days(runtime: fs.FlowStone):
    url = runtime.require_database_url()
    runtime.materialize("source")
    with psycopg.connect(url, autocommit=True) as conn:
        (mid,) = conn.execute("SELECT id FROM flowstone_materializations LIMIT 1").fetchone() or (None,)
        conn.execute(
            "INSERT INTO flowstone_step_logs (materialization_id, attempt, seq, at, stream, level, logger, "
            "message) SELECT %s, 1, n, now() - n * interval '1 day' + interval '1 hour', 'log', 'INFO', 'x', "
            "'line ' || n "
            "FROM generate_series(1, 40) AS n",
            (mid,),
        )
    policy = fs.Retention(runs_days=90, keep_last_per_partition=1, jobs_days=None, logs_days=30)
    report = prune_mod.prune(runtime.services, policy, now=datetime.now(UTC), pause_s=0)
    assert report.deleted["flowstone_step_logs"] == 10  # days 31..40
    assert _count(url, "SELECT count(*) FROM flowstone_step_logs") == 30


def test_prune_dry_run_counts_only_the_runs_whose_every_step_goes(runtime: fs.FlowStone):
    """A run goes once it has no step left: the dry run counts the runs whose steps the same pass
    deletes, not every old run (it counted both runs here, of which the pass deletes one)."""
    url = runtime.require_database_url()
    first = runtime.materialize("source").run_id
    runtime.materialize("source")
    with psycopg.connect(url, autocommit=True) as conn:  # the first run's step failed: prunable
        conn.execute("UPDATE flowstone_materializations SET status = 'failed' WHERE run_id = %s", (first,))
    policy = fs.Retention(runs_days=90, keep_last_per_partition=1, jobs_days=None)
    dry = prune_mod.prune(runtime.services, policy, dry_run=True, now=LATER, pause_s=0)
    assert dry.deleted["flowstone_materializations"] == 1
    assert dry.deleted["flowstone_runs"] == 1
    real = prune_mod.prune(runtime.services, policy, now=LATER, pause_s=0)
    assert real.deleted["flowstone_runs"] == 1
    assert runtime.store.get_run(first) is None


def test_prune_folds_the_status_counters_of_gone_sessions(runtime: fs.FlowStone):
    """Where no worker runs the maintenance round (in-process runs and a cron prune), the prune
    folds the status counters of sessions that are gone."""
    url = runtime.require_database_url()
    runtime.materialize("source")
    with psycopg.connect(url, autocommit=True) as conn:  # as if the writers were gone
        conn.execute("UPDATE flowstone_asset_status_counts SET shard = 2147483000")
    assert runtime.services.options.retention is not None
    prune_mod.prune(runtime.services, runtime.services.options.retention, pause_s=0)
    assert _count(url, "SELECT count(*) FROM flowstone_asset_status_counts WHERE shard <> 0") == 0
    assert runtime.store.reports.assets("source")["source"].by_status == {"succeeded": 1}  # type: ignore[attr-defined]
