"""ADR 0013: a queued step's success commits asynchronously; the job's finish (a durable commit)
flushes it. A server crash (``immediate`` stop) between the two loses both, and nothing
inconsistent remains: the step runs again and succeeds exactly once, with one output and its
lineage; continued chains likewise.

The WAL writer flushes asynchronous commits every ``wal_writer_delay`` (200 ms by default); the test
raises it to 10 s so that the crash certainly lands before the flush, and proves it did: the function
ran twice."""

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
from tests.integration.queue_harness import eventually

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
    # The window of ADR 0013: the success committed (asynchronously), the job not yet finished.
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


def test_a_crash_between_the_success_and_the_job_finish_leaves_nothing_inconsistent(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path, slow_wal_writer: None
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, BODY, options=QUIET)
    try:
        pipeline.start_worker(concurrency=1)
        handle = pipeline.runtime.submit(["doubled"], [date(2025, 1, 1)], with_upstream=True)
        eventually((pipeline.markers / "in-window").exists, timeout=60, what="the window")
        # the success of `raw` is committed and visible, but not flushed
        ((status,),) = pipeline.sql(
            "SELECT status FROM flowstone_materializations WHERE run_id = %s AND asset = 'raw'",
            (handle.run_id,),
        )
        assert status == "succeeded"
        fault_server.stop("immediate")
        (pipeline.markers / "crashed").touch()
        time.sleep(1)
        fault_server.start()
        assert _wait_quietly(pipeline, handle.run_id, timeout=120) == "succeeded", pipeline.logs()[-3000:]
        assert assert_consistent(pipeline, handle.run_id, 2) == {"succeeded": 2}
        # the crash really lost the first success: the function ran a second time
        assert len(list(pipeline.markers.glob("ran-raw-*"))) == 2
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
