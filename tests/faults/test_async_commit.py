"""ADR 0013 and ADR 0016 under a server crash (``immediate`` stop).

- A success that keeps a step for its job (a chain continuing) commits asynchronously; a crash
  before anything flushes it loses it, and nothing inconsistent remains: the step runs again and
  succeeds exactly once, with one output and its lineage.
- A success that ends its job finishes the job in the same transaction and commits durably: a
  crash right after it loses neither, and the step never runs twice.

The WAL writer flushes asynchronous commits every ``wal_writer_delay`` (200 ms by default); the
tests raise it to 10 s so that the crash certainly lands before that flush, and prove what was lost
by counting how often the functions ran."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest

from tests.faults.conftest import FaultServer
from tests.faults.test_faults import _pipeline, _wait_quietly, assert_consistent, stop_all
from tests.integration.queue_harness import Pipeline, eventually

pytestmark = pytest.mark.slow

BODY = """
from flowstone.queue import worker as worker_module

@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def raw(context: fs.AssetContext) -> int:
    (MARKERS / f"ran-raw-{context.partition}-{time.monotonic_ns()}").touch()
    return context.partition.toordinal()

@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def doubled(raw: int) -> int:
    return raw * 2

def after_job(job_id, outcomes):
    # Where ADR 0013's window was: the success committed, the task not yet returned.
    if not (MARKERS / "crashed").exists():
        (MARKERS / "in-window").touch()
        time.sleep(30)

worker_module.AFTER_JOB = after_job

defs = fs.Definitions(assets=[raw, doubled])
"""


# No durable commit may flush the window: no heartbeat, no stalled-job recovery, no continuation.
QUIET = "heartbeat_interval_s=60, stalled_after_s=120, continuation_steps=1"


@pytest.fixture
def slow_wal_writer(fault_server: FaultServer) -> Iterator[None]:
    def configure(value: str) -> None:
        with psycopg.connect(fault_server.url, autocommit=True) as admin:
            admin.execute(f"ALTER SYSTEM SET wal_writer_delay = '{value}'")
            admin.execute("SELECT pg_reload_conf()")

    configure("10s")
    try:
        yield
    finally:
        if not fault_server.running:
            fault_server.start()
        configure("200ms")


def _statuses_of(pipeline: Pipeline, run_id: str, asset: str) -> tuple[str, str]:
    """The step's status and its job's status."""
    ((status, job_status),) = pipeline.sql(
        "SELECT m.status, j.status FROM flowstone_materializations AS m "
        "JOIN procrastinate_jobs AS j ON j.id = m.job_id WHERE m.run_id = %s AND m.asset = %s",
        (run_id, asset),
    )
    return str(status), str(job_status)


def _crash_and_recover(fault_server: FaultServer, pipeline: Pipeline, run_id: str) -> None:
    """Stop the server with ``immediate`` (a crash), let the held step go on, restart the server,
    and check that the run of two steps ends with each succeeded once, consistently."""
    fault_server.stop("immediate")
    (pipeline.markers / "crashed").touch()
    time.sleep(1)
    fault_server.start()
    assert _wait_quietly(pipeline, run_id, timeout=120) == "succeeded", pipeline.logs()[-3000:]
    assert assert_consistent(pipeline, run_id, 2) == {"succeeded": 2}


def test_a_crash_right_after_a_success_that_finished_its_job_loses_neither(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path, slow_wal_writer: None
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, BODY, options=QUIET)
    try:
        pipeline.start_worker(concurrency=1)
        handle = pipeline.runtime.submit(["doubled"], [date(2025, 1, 1)], with_upstream=True)
        eventually((pipeline.markers / "in-window").exists, timeout=60, what="the task's end")
        # the success of `raw` finished its job in its own transaction: both are committed
        assert _statuses_of(pipeline, handle.run_id, "raw") == ("succeeded", "succeeded")
        _crash_and_recover(fault_server, pipeline, handle.run_id)
        # the commit was durable: the crash lost nothing, and `raw` ran once
        assert len(list(pipeline.markers.glob("ran-raw-*"))) == 1
        jobs = pipeline.sql(
            "SELECT status FROM procrastinate_jobs WHERE task_name = 'flowstone:run_step' ORDER BY id"
        )
        assert jobs == [("succeeded",), ("succeeded",)]
    finally:
        stop_all(pipeline)


WINDOW_CHAIN = """
@fs.asset
def first() -> int:
    (MARKERS / f"ran-first-{time.monotonic_ns()}").touch()
    return 1

@fs.asset
def second(first: int) -> int:
    # Runs in the job of `first` (continuation): the success of `first` kept this step and
    # committed asynchronously; nothing durable has been committed since.
    if not (MARKERS / "crashed").exists():
        (MARKERS / "in-window").touch()
        time.sleep(30)
    return first + 1

defs = fs.Definitions(assets=[first, second])
"""


def test_a_crash_after_a_success_that_kept_a_step_leaves_nothing_inconsistent(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path, slow_wal_writer: None
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, WINDOW_CHAIN, options="heartbeat_interval_s=60, stalled_after_s=120")
    try:
        pipeline.start_worker(concurrency=1)
        handle = pipeline.runtime.submit("second", with_upstream=True)
        eventually((pipeline.markers / "in-window").exists, timeout=60, what="the window")
        # the success of `first` is committed and visible, but not flushed; its job is not finished
        assert _statuses_of(pipeline, handle.run_id, "first") == ("succeeded", "doing")
        _crash_and_recover(fault_server, pipeline, handle.run_id)
        # the crash really lost the success of `first`: its function ran a second time
        assert len(list(pipeline.markers.glob("ran-first-*"))) == 2
        assert pipeline.runtime.load("second") == 2
    finally:
        stop_all(pipeline)


CHAIN = """
@fs.asset
def first() -> int:
    return 1

@fs.asset
def middle(context: fs.AssetContext, first: int) -> int:
    (MARKERS / f"middle-{context.attempt}").touch()
    if context.attempt == 1:
        time.sleep(60)
    return first + 1

@fs.asset
def last(middle: int) -> int:
    return middle + 1

defs = fs.Definitions(assets=[first, middle, last])
"""


def test_a_chain_runs_in_one_job_and_a_worker_killed_in_a_continued_step_loses_nothing(
    fault_db: tuple[str, str], tmp_path: Path
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, CHAIN)
    try:
        doomed = pipeline.start_worker(concurrency=1)
        handle = pipeline.runtime.submit("last", with_upstream=True)
        eventually((pipeline.markers / "middle-1").exists, timeout=60, what="the continued step")
        jobs = pipeline.sql("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'flowstone:run_step'")
        assert jobs == [(1,)]  # `middle` continues in the job of `first`: no job of its own
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        pipeline.start_worker(concurrency=1)
        assert _wait_quietly(pipeline, handle.run_id, timeout=90) == "succeeded", pipeline.logs()[-3000:]
        steps = {s.asset: s for s in handle.steps()}
        assert {name: s.status for name, s in steps.items()} == dict.fromkeys(steps, "succeeded")
        assert steps["middle"].attempt == 2
        assert pipeline.runtime.load("last") == 3
        outputs = pipeline.sql("SELECT count(*) FROM flowstone_outputs")
        assert outputs == [(3,)]
    finally:
        stop_all(pipeline)
