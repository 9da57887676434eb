"""A large enqueue refreshes the statistics of ``procrastinate_jobs`` once it has committed, so that
Procrastinate's fetch walks its priority index instead of sorting every waiting job (a plan it
picks while the statistics say few jobs wait)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import results
from flowstone.queue import client
from flowstone.queue import worker as qworker
from flowstone.store import jobs as job_table


@fs.asset(partitions=fs.DailyPartitions(start="2000-01-01"))
def daily(context: fs.AssetContext) -> int:
    return context.partition.toordinal()


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    rt = fs.FlowStone(fs.Definitions(assets=[daily]), database_url=database_url, home=str(tmp_path))
    try:
        yield rt
    finally:
        rt.close()


def manual_analyses(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def days(n: int) -> list[dt.date]:
    return [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(n)]


def test_a_large_backfill_refreshes_the_queues_statistics(
    runtime: fs.FlowStone, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 20)
    before = manual_analyses(database_url)
    runtime.backfill("daily", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 19))  # 19 jobs
    assert manual_analyses(database_url) == before
    runtime.backfill("daily", start=dt.date(2001, 1, 1), end=dt.date(2001, 2, 9), partitions_per_job=2)
    assert manual_analyses(database_url) == before + 1  # 20 jobs of 2 partitions
    with psycopg.connect(database_url) as conn:
        (estimate,) = conn.execute(  # type: ignore[misc]
            "SELECT reltuples FROM pg_class WHERE relname = 'procrastinate_jobs'"
        ).fetchone()
    assert estimate >= 39  # the statistics count the jobs just enqueued


def test_a_large_submit_refreshes_the_queues_statistics(
    runtime: fs.FlowStone, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 20)
    before = manual_analyses(database_url)
    runtime.submit(["daily"], days(19))
    assert manual_analyses(database_url) == before
    runtime.submit(["daily"], days(20))
    assert manual_analyses(database_url) == before + 1


def test_a_submit_in_the_callers_transaction_leaves_the_statistics_alone(
    runtime: fs.FlowStone, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    # Not committed when the submit returns: the caller's commit comes later, so nothing to count yet.
    monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 1)
    before = manual_analyses(database_url)
    store = runtime.services.postgres()
    with store.transaction("a schedule's tick") as conn:
        client.submit(
            runtime.services,
            ["daily"],
            days(5),
            with_upstream=False,
            config=results.RunConfig(),
            tags=None,
            conn=conn,
        )
    assert manual_analyses(database_url) == before


def test_the_threshold_is_a_thousand_jobs():
    assert job_table.JOB_STATISTICS_AFTER == 1_000


def test_a_large_retry_refreshes_the_queues_statistics(
    runtime: fs.FlowStone, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 20)
    handle = runtime.submit(["daily"], days(19))
    handle.cancel()
    before = manual_analyses(database_url)
    runtime.retry(handle.run_id)  # 19 cancelled steps queued again
    assert manual_analyses(database_url) == before
    monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 19)
    handle.cancel()
    runtime.retry(handle.run_id)
    assert manual_analyses(database_url) == before + 1


@fs.asset
def root() -> int:
    return 1


@fs.asset(partitions=fs.DailyPartitions(start="2000-01-01"))
def leaf(context: fs.AssetContext, root: int) -> int:
    return root + context.partition.toordinal()


def test_a_success_that_defers_many_jobs_refreshes_the_queues_statistics(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # One success releases 25 partitions: one is kept by the running job (continuation), 24 are
    # deferred as jobs. The job runs in this process, so the threshold set here applies.
    rt = fs.FlowStone(fs.Definitions(assets=[root, leaf]), database_url=database_url, home=str(tmp_path))
    try:
        handle = rt.submit(["leaf"], days(25), with_upstream=True)
        ((job_id, queue, args),) = fetch_jobs(database_url)
        monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 24)
        before = manual_analyses(database_url)
        qworker.JobRunner(rt.services).run(args, job_id=job_id, queue=queue)
        assert len(fetch_jobs(database_url)) == 24
        assert manual_analyses(database_url) == before + 1
        assert handle.status()["succeeded"] >= 2  # root, and the leaf it kept
    finally:
        rt.close()


def test_a_success_that_defers_fewer_jobs_leaves_the_statistics_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    rt = fs.FlowStone(fs.Definitions(assets=[root, leaf]), database_url=database_url, home=str(tmp_path))
    try:
        rt.submit(["leaf"], days(25), with_upstream=True)
        ((job_id, queue, args),) = fetch_jobs(database_url)
        monkeypatch.setattr(job_table, "JOB_STATISTICS_AFTER", 25)  # 24 deferred, one kept
        before = manual_analyses(database_url)
        qworker.JobRunner(rt.services).run(args, job_id=job_id, queue=queue)
        assert manual_analyses(database_url) == before
    finally:
        rt.close()


def fetch_jobs(url: str) -> list[tuple[int, str, dict[str, str]]]:
    """The waiting step jobs, as a worker's fetch would take them (marked ``doing``)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE status = 'todo' "
            "AND task_name = 'flowstone:run_step' RETURNING id, queue_name, args"
        ).fetchall()
    return [(int(r[0]), str(r[1]), dict(r[2])) for r in rows]
