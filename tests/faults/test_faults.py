"""Fault injection with real worker processes and a real Postgres that the tests disturb: connection
kill storms, server stops (fast and immediate) and a 30 s outage, a worker that gives up, a
SIGKILLed in-process run, and recovery ahead of a 3,000-job backlog.

After each: every planned step succeeded exactly once or failed with a recorded error, the run is
finished, no output is duplicated or missing, and lineage is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowstone as fs
from flowstone.queue import worker
from tests.faults.conftest import FaultServer
from tests.integration.queue_harness import Pipeline, eventually

pytestmark = pytest.mark.slow

BODY = """
PAUSE = float(os.environ.get("FLOWSTONE_TEST_PAUSE", "0.02"))

@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def raw(context: fs.AssetContext) -> int:
    time.sleep(PAUSE)
    return context.partition.toordinal()

@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def doubled(raw: int) -> int:
    time.sleep(PAUSE)
    return raw * 2

defs = fs.Definitions(assets=[raw, doubled])
"""

DAYS = [date(2025, 1, 1) + timedelta(days=i) for i in range(100)]


def _pipeline(
    tmp_path: Path, url: str, body: str = BODY, *, pause: float = 0.02, options: str = ""
) -> Pipeline:
    os.environ["FLOWSTONE_TEST_PAUSE"] = str(pause)
    pipeline = Pipeline(tmp_path, url, body, options=options)
    pipeline.env["FLOWSTONE_TEST_PAUSE"] = str(pause)
    return pipeline


def assert_consistent(pipeline: Pipeline, run_id: str, planned: int) -> dict[str, int]:
    """The fault suite's invariants for one run; returns its step counts by status."""
    rows = pipeline.sql(
        "SELECT id, asset, status, error FROM flowstone_materializations WHERE run_id = %s", (run_id,)
    )
    assert len(rows) == planned
    counts: dict[str, int] = {}
    for _, _, status, error in rows:
        counts[status] = counts.get(status, 0) + 1
        assert status in ("succeeded", "failed", "skipped"), status  # nothing stuck
        if status != "succeeded":
            assert error is not None, status  # failures say why
            assert error["type"], error
    ((run_status,),) = pipeline.sql("SELECT status FROM flowstone_runs WHERE run_id = %s", (run_id,))
    assert run_status in ("succeeded", "failed")
    assert run_status == ("succeeded" if counts.get("succeeded") == planned else "failed")
    # exactly one output and one success event per succeeded step, none for the others
    outputs = pipeline.sql(
        "SELECT m.status, count(o.materialization_id) FROM flowstone_materializations AS m "
        "LEFT JOIN flowstone_outputs AS o ON o.materialization_id = m.id WHERE m.run_id = %s "
        "GROUP BY m.id, m.status",
        (run_id,),
    )
    assert all(n == (1 if status == "succeeded" else 0) for status, n in outputs), outputs
    events = pipeline.sql(
        "SELECT materialization_id, count(*) FROM flowstone_audit_log "
        "WHERE run_id = %s AND event = 'materialization.succeeded' GROUP BY materialization_id",
        (run_id,),
    )
    assert len(events) == counts.get("succeeded", 0)
    assert all(n == 1 for _, n in events)
    # every succeeded `doubled` read the succeeded `raw` of its day, in this run
    missing = pipeline.sql(
        "SELECT d.id FROM flowstone_materializations AS d "
        "LEFT JOIN flowstone_lineage AS l ON l.materialization_id = d.id "
        "LEFT JOIN flowstone_materializations AS r ON r.id = l.upstream_materialization_id "
        "  AND r.run_id = d.run_id AND r.asset = 'raw' AND r.partition_key = d.partition_key "
        "  AND r.status = 'succeeded' "
        "WHERE d.run_id = %s AND d.asset = 'doubled' AND d.status = 'succeeded' AND r.id IS NULL",
        (run_id,),
    )
    assert missing == []
    return counts


def test_connection_kill_storm_strands_no_step(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path
):
    url, name = fault_db
    pipeline = _pipeline(tmp_path, url)
    try:
        for _ in range(2):
            pipeline.start_worker(concurrency=4)
        handle = pipeline.runtime.submit(["doubled"], DAYS, with_upstream=True)
        stop = threading.Event()
        kills: list[int] = []

        def storm() -> None:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not stop.is_set():
                time.sleep(0.3)
                kills.append(fault_server.kill_connections(name))

        killer = threading.Thread(target=storm)
        killer.start()
        killer.join()
        assert sum(kills) > 20  # the storm hit
        run = _wait_quietly(pipeline, handle.run_id, timeout=120)
        counts = assert_consistent(pipeline, handle.run_id, 200)
        assert counts.get("succeeded", 0) >= 150, counts  # faults are retried, not just recorded
        assert run in ("succeeded", "failed")
        assert all(w.poll() is None for w in pipeline.workers), pipeline.logs()
    finally:
        stop_all(pipeline)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_strands_no_step_and_workers_go_on(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path, mode: str
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, pause=0.05)
    try:
        for _ in range(2):
            pipeline.start_worker(concurrency=4)
        # Both workers past their start-up before the restart: the restart is to hit running
        # workers (a worker starting during an outage waits for it too: startup.patience).
        eventually(lambda: pipeline.logs().count("Starting worker") >= 2, what="both workers started")
        handle = pipeline.runtime.submit(["doubled"], DAYS[:40], with_upstream=True)
        eventually(lambda: _succeeded(pipeline, handle.run_id) >= 10, what="work under way")
        fault_server.stop(mode)
        time.sleep(3)
        fault_server.start()
        assert _wait_quietly(pipeline, handle.run_id, timeout=120) == "succeeded", pipeline.logs()
        counts = assert_consistent(pipeline, handle.run_id, 80)
        assert counts == {"succeeded": 80}
        assert all(w.poll() is None for w in pipeline.workers), pipeline.logs()
    finally:
        stop_all(pipeline)


def test_a_worker_rides_out_a_30_second_outage(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, pause=0.05)
    try:
        pipeline.start_worker(concurrency=4)
        handle = pipeline.runtime.submit(["doubled"], DAYS[:30], with_upstream=True)
        eventually(lambda: _succeeded(pipeline, handle.run_id) >= 5, what="work under way")
        fault_server.stop("fast")
        time.sleep(30)
        assert pipeline.workers[0].poll() is None, pipeline.logs()
        fault_server.start()
        status = _wait_quietly(pipeline, handle.run_id, timeout=120)
        failures = pipeline.sql(
            "SELECT asset, partition_key, attempt, error FROM flowstone_materializations "
            "WHERE run_id = %s AND status <> 'succeeded'",
            (handle.run_id,),
        )
        assert status == "succeeded", failures
        assert assert_consistent(pipeline, handle.run_id, 60) == {"succeeded": 60}
        assert pipeline.workers[0].poll() is None
        logs = pipeline.logs()
        assert "waiting for the database" in logs
        assert "the database is back" in logs
    finally:
        stop_all(pipeline)


def test_a_worker_notices_an_outage_within_seconds(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path
):
    # Its fetch loops stop when their listener fails; each then unregisters its worker, which
    # waited for a connection for the connector pool's whole timeout (10 s) before the process
    # could notice the outage. Two loops (concurrency 4), both bounded.
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url)
    try:
        pipeline.start_worker(concurrency=4, args=("--outage-timeout", "60"))
        eventually(lambda: pipeline.logs().count("Starting worker") >= 2, what="both loops started")
        time.sleep(1)  # listening
        fault_server.stop("fast")
        stopped = time.monotonic()
        while "waiting for the database" not in pipeline.logs():
            assert time.monotonic() - stopped < 7, pipeline.logs()
            time.sleep(0.05)
        assert pipeline.logs().count("could not unregister worker") == 2, pipeline.logs()
        fault_server.start()
        eventually(lambda: "the database is back" in pipeline.logs(), what="the worker back")
        assert pipeline.workers[0].poll() is None, pipeline.logs()
    finally:
        if not fault_server.running:
            fault_server.start()
        stop_all(pipeline)


def test_a_worker_that_gives_up_exits_non_zero(
    fault_server: FaultServer, fault_db: tuple[str, str], tmp_path: Path
):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url)
    try:
        proc = pipeline.start_worker(concurrency=1, args=("--outage-timeout", "3"))
        time.sleep(2)  # registered and listening
        fault_server.stop("fast")
        deadline = time.monotonic() + 90
        while "giving up (exit status 3)" not in pipeline.logs():
            assert time.monotonic() < deadline, pipeline.logs()
            assert proc.poll() is None, pipeline.logs()
            time.sleep(0.1)
        # It exits at once: no thread of it waits on the pool for a connection that cannot come
        # (it waited up to 30 s, the pool's timeout, for the lost-job watcher and maintenance).
        assert proc.wait(timeout=8) == 3, pipeline.logs()
    finally:
        fault_server.start()
        stop_all(pipeline)


IN_PROCESS = """
import os, time
from pathlib import Path
import flowstone as fs

MARKERS = Path(os.environ["FAULT_MARKERS"])

@fs.asset
def first() -> int:
    return 1

@fs.asset
def slow(first: int) -> int:
    if not (MARKERS / "resumed").exists():
        (MARKERS / "slow-started").touch()
        time.sleep(60)
    return first + 1

@fs.asset
def last(slow: int) -> int:
    return slow + 1

defs = fs.Definitions(assets=[first, slow, last])
runtime = fs.FlowStone(defs, database_url=os.environ["FAULT_DB_URL"], home=str(MARKERS / "home"))
"""


def test_a_killed_in_process_run_is_abandoned_then_resumed(
    fault_db: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    url, _ = fault_db
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("FAULT_DB_URL", url)
    monkeypatch.setenv("FAULT_MARKERS", str(markers))
    module = tmp_path / "inproc.py"
    module.write_text(IN_PROCESS + "\nruntime.materialize('last', with_upstream=True)\n")
    proc = subprocess.Popen([sys.executable, str(module)], cwd=tmp_path, env=dict(os.environ))
    try:
        eventually((markers / "slow-started").exists, timeout=60, what="the slow step")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    namespace: dict[str, Any] = {"__name__": "inproc_loaded"}
    exec(compile(IN_PROCESS, str(module), "exec"), namespace)  # noqa: S102 - the test's own module text
    rt: fs.FlowStone = namespace["runtime"]
    try:
        (run,) = rt.store.list_runs()
        assert run.status == "running"
        assert worker.abandon_runs(rt.services) == []  # within the grace period nothing is decided
        time.sleep(5.5)
        assert worker.abandon_runs(rt.services) == [run.run_id]
        steps = {s.asset: s for s in rt.store.run_steps(run.run_id)}
        assert (steps["first"].status, steps["slow"].status, steps["last"].status) == (
            "succeeded",
            "failed",
            "skipped",
        )
        assert steps["slow"].error is not None
        assert steps["slow"].error["type"] == "RunAbandonedError"
        assert rt.store.get_run(run.run_id).status == "failed"  # type: ignore[union-attr]
        (markers / "resumed").touch()
        result = rt.resume(run.run_id)
        assert result.status == "succeeded"
        assert rt.load("last") == 3
        assert {s.asset: s.attempt for s in rt.store.run_steps(run.run_id)} == {
            "first": 1,
            "slow": 2,
            "last": 1,
        }
    finally:
        rt.close()


BACKLOG = """
@fs.asset(queue="victim")
def victim(context: fs.AssetContext) -> int:
    (MARKERS / f"victim-{context.attempt}").touch()
    if context.attempt == 1:
        time.sleep(60)
    return 1

@fs.asset(partitions=fs.DailyPartitions(start="2000-01-01"))
def busy(context: fs.AssetContext) -> int:
    time.sleep(0.05)
    return 1

@fs.asset
def ticked() -> int:
    return 1

defs = fs.Definitions(
    assets=[victim, busy, ticked],
    schedules=[fs.Schedule(name="every_two_seconds", cron="* * * * * */2", selection="ticked")],
)
"""


def test_recovery_and_schedules_never_wait_behind_a_backlog(fault_db: tuple[str, str], tmp_path: Path):
    url, _ = fault_db
    pipeline = _pipeline(tmp_path, url, BACKLOG, options="automation_interval_s=1")
    try:
        doomed = pipeline.start_worker(concurrency=1, args=("--queues", "victim"))
        handle = pipeline.runtime.submit("victim")
        eventually((pipeline.markers / "victim-1").exists, timeout=60, what="the victim step")
        backlog = pipeline.runtime.backfill(
            "busy", start=date(2000, 1, 1), end=date(2000, 1, 1) + timedelta(days=2999)
        )
        assert backlog.status() == {"queued": 3000}
        ((backlog_at,),) = pipeline.sql("SELECT now()")
        pipeline.start_worker(concurrency=2)
        time.sleep(3)  # the busy worker is deep in the backlog
        killed_at = time.monotonic()
        doomed.send_signal(signal.SIGKILL)
        eventually((pipeline.markers / "victim-2").exists, timeout=30, what="the reclaim")
        reclaimed_after = time.monotonic() - killed_at
        # stalled_after_s (2) + recovery_interval_s (1) + 2 s
        assert reclaimed_after <= 5.0, reclaimed_after
        assert handle.wait(timeout=30).status == "succeeded"
        time.sleep(6)  # let the schedule tick a few times behind the backlog
        assert (
            pipeline.sql("SELECT count(*) FROM flowstone_materializations WHERE status = 'queued'")[0][0]
            > 1000
        )
        # ticks due while the backlog waits (the first evaluation also fires the ticks of the last
        # minute: its catch-up is not lateness)
        lateness = pipeline.sql(
            "SELECT extract(epoch FROM max(created_at - tick_at)), count(*) FROM flowstone_schedule_ticks "
            "WHERE tick_at > %s + interval '2 seconds'",
            (backlog_at,),
        )
        ((late_s, ticks),) = lateness
        assert ticks >= 3
        assert float(late_s) <= 1 + 2, late_s  # automation_interval_s + 2 s
    finally:
        stop_all(pipeline)


def _succeeded(pipeline: Pipeline, run_id: str) -> int:
    try:
        return int(
            pipeline.sql(
                "SELECT count(*) FROM flowstone_materializations WHERE run_id = %s AND status = 'succeeded'",
                (run_id,),
            )[0][0]
        )
    except psycopg.OperationalError:
        return 0


def _wait_quietly(pipeline: Pipeline, run_id: str, *, timeout: float) -> str:
    """The run's status once it is terminal, read with fresh connections (the test's own pool may
    hold connections the faults killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ((status,),) = pipeline.sql("SELECT status FROM flowstone_runs WHERE run_id = %s", (run_id,))
        except psycopg.OperationalError:
            status = "unknown"
        if status in ("succeeded", "failed", "cancelled"):
            return str(status)
        time.sleep(0.2)
    counts = pipeline.sql(
        "SELECT status, count(*) FROM flowstone_materializations WHERE run_id = %s GROUP BY status", (run_id,)
    )
    raise AssertionError(f"run {run_id} not finished after {timeout}s: {counts}\n{pipeline.logs()[-4000:]}")


def stop_all(pipeline: Pipeline) -> None:
    try:
        pipeline.stop()
    except Exception:  # noqa: BLE001 - the runtime's pool may hold dead connections
        for proc in pipeline.workers:
            if proc.poll() is None:
                proc.kill()
