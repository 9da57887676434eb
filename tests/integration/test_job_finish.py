"""ADR 0016: a job's last success finishes the job in its own transaction, so the worker does not
finish it again (one round trip and one durable commit per job fewer). The worker runs in this
process (``queue.process.run`` with ``wait=False``), so Procrastinate's finish can be counted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate import manager as procrastinate_manager

import flowstone as fs
from flowstone.queue import process
from flowstone.store import jobs as job_table

pytestmark = pytest.mark.slow

DAILY = fs.DailyPartitions(start="2000-01-01")


@fs.asset(partitions=DAILY)
def daily(context: fs.AssetContext) -> int:
    return context.partition.toordinal()


@fs.asset(partitions=DAILY)
def picky(context: fs.AssetContext) -> int:
    if context.partition.day == 2:
        raise ValueError("not the second")
    return context.partition.day


@fs.asset
def first() -> int:
    return 1


@fs.asset
def second(first: int) -> int:
    return first + 1


@fs.asset
def third(second: int) -> int:
    return second + 1


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    defs = fs.Definitions(assets=[daily, picky, first, second, third])
    rt = fs.FlowStone(defs, database_url=database_url, home=str(tmp_path))
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def finishes(monkeypatch: pytest.MonkeyPatch, database_url: str) -> list[tuple[int, str]]:
    """The step jobs that Procrastinate's own finish query finished, with their status (not the
    periodic maintenance jobs the worker also runs)."""
    calls: list[tuple[int, str]] = []
    original = procrastinate_manager.JobManager.finish_job_by_id_async

    async def counting(self: Any, job_id: int, status: Any, delete_job: bool) -> None:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT task_name FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()
        if row is not None and row[0] == "flowstone:run_step":
            calls.append((job_id, str(status.value)))
        await original(self, job_id=job_id, status=status, delete_job=delete_job)

    monkeypatch.setattr(procrastinate_manager.JobManager, "finish_job_by_id_async", counting)
    return calls


def drain(runtime: fs.FlowStone, url: str) -> None:
    """Run a worker in this process until the queue is empty."""
    code = process.run(
        runtime.services,
        runtime.procrastinate_app,
        url,
        queues=None,
        concurrency=2,
        wait=False,
        maintenance=False,
    )
    assert code == 0


def step_jobs(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT status::text, attempts FROM procrastinate_jobs "
            "WHERE task_name = 'flowstone:run_step' ORDER BY id"
        ).fetchall()
    return [(str(s), int(a)) for s, a in rows]


def test_each_jobs_last_success_finishes_it_and_the_worker_does_not(
    runtime: fs.FlowStone, database_url: str, finishes: list[tuple[int, str]]
):
    handle = runtime.backfill("daily", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 5))
    drain(runtime, database_url)
    assert handle.run().status == "succeeded"
    assert handle.status() == {"succeeded": 5}
    assert step_jobs(database_url) == [("succeeded", 1)] * 5  # as Procrastinate's finish leaves them
    assert finishes == []


def test_a_chain_runs_in_one_job_that_its_last_success_finishes(
    runtime: fs.FlowStone, database_url: str, finishes: list[tuple[int, str]]
):
    handle = runtime.submit("third", with_upstream=True)
    drain(runtime, database_url)
    assert handle.run().status == "succeeded"
    assert runtime.load("third") == 3
    assert step_jobs(database_url) == [("succeeded", 1)]  # continuation: one job for the chain
    assert finishes == []


def test_a_job_with_a_failed_step_is_finished_by_the_worker_as_failed(
    runtime: fs.FlowStone, database_url: str, finishes: list[tuple[int, str]]
):
    handle = runtime.backfill(
        "picky", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 3), partitions_per_job=3
    )
    drain(runtime, database_url)
    assert handle.status() == {"failed": 1, "succeeded": 2}
    assert step_jobs(database_url) == [("failed", 1)]
    assert [status for _, status in finishes] == ["failed"]


def test_with_procrastinates_own_job_manager_the_worker_finishes_every_job(
    runtime: fs.FlowStone, database_url: str, finishes: list[tuple[int, str]]
):
    app = runtime.procrastinate_app
    app.job_manager = procrastinate_manager.JobManager(connector=app.connector)
    handle = runtime.backfill("daily", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 3))
    drain(runtime, database_url)
    assert handle.status() == {"succeeded": 3}
    assert step_jobs(database_url) == [("succeeded", 1)] * 3
    assert [status for _, status in finishes] == ["succeeded"] * 3


def test_a_worker_that_deletes_its_jobs_deletes_those_their_success_finished(
    runtime: fs.FlowStone, database_url: str, finishes: list[tuple[int, str]]
):
    runtime.procrastinate_app.worker_defaults["delete_jobs"] = "always"
    handle = runtime.backfill("daily", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 3))
    drain(runtime, database_url)
    assert handle.status() == {"succeeded": 3}
    assert step_jobs(database_url) == []
    assert finishes == []


def test_the_finish_leaves_a_job_alone_unless_it_is_active_and_its_steps_succeeded(
    runtime: fs.FlowStone, database_url: str
):
    handle = runtime.backfill("daily", start=dt.date(2000, 1, 1), end=dt.date(2000, 1, 2))
    steps = handle.steps()
    with psycopg.connect(database_url, autocommit=True) as conn:
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM procrastinate_jobs ORDER BY id").fetchall()]
        # a step still queued: nothing happens
        assert job_table.job_finish_succeeded(conn, ids[0], [steps[0].id]).get() is False
        conn.execute(  # skipped (as a memoized step is) counts as done
            "UPDATE flowstone_materializations SET status = 'skipped', finished_at = now(), "
            """error = '{"type": "SkippedError", "message": "test"}' WHERE id = %s""",
            (steps[0].id,),
        )
        assert job_table.job_finish_succeeded(conn, ids[0], [steps[0].id]).get() is True
        # finished already, or no such job: nothing happens, and nothing is raised
        assert job_table.job_finish_succeeded(conn, ids[0], [steps[0].id]).get() is False
        assert job_table.job_finish_succeeded(conn, 10**9, [steps[0].id]).get() is False
    assert step_jobs(database_url) == [("succeeded", 0), ("todo", 0)]
