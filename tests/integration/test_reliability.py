"""Regression tests of the 0.3 reliability issue that need no fault injection: one-transaction
backfills, approval edge cases, truthful error classes, exact values, rows-mode typed loads, gc of
orphaned versions, and steps whose job ended without them (the fault suite is tests/faults/)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pydantic
import pytest

import flowstone as fs
from flowstone import errors, partition_keys
from flowstone.queue import client, jobs, worker
from flowstone.store import transitions
from flowstone.store.memory import MemoryStore
from flowstone.store.postgres import PostgresStore
from flowstone.store.records import NewRun
from tests import pg
from tests.integration.queue_harness import Pipeline, eventually

DAILY = fs.DailyPartitions(start="2025-01-01")
U = partition_keys.UNPARTITIONED


@fs.asset(partitions=DAILY)
def daily(context: fs.AssetContext) -> int:
    return 1


@fs.asset
def gated(context: fs.AssetContext) -> int:
    context.require_approval("ship it?", timeout=timedelta(hours=1))
    return 1


@fs.asset(partitions=DAILY)
def gated_daily(context: fs.AssetContext) -> int:
    context.require_approval("ship it?", timeout=timedelta(hours=1))
    return 1


@fs.asset
def awkward() -> dict[str, object]:
    return {"zeta": 1e16, "alpha": -0.0, "mid": 2**70, "tiny": 5e-324}


DEFS = fs.Definitions(assets=[daily, gated, gated_daily, awkward])


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path, actor="tester") as rt:
        yield rt


# -- a queued backfill is one transaction ---------------------------------------------------


def test_a_backfill_that_fails_part_way_leaves_nothing(
    runtime: fs.FlowStone, database_url: str, monkeypatch: pytest.MonkeyPatch
):
    calls = []
    original = transitions.enqueue_batches

    def fail_on_the_third_chunk(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure in the third chunk")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "BACKFILL_CHUNK", 10)
    monkeypatch.setattr(transitions, "enqueue_batches", fail_on_the_third_chunk)
    with pytest.raises(RuntimeError, match="third chunk"):
        runtime.backfill("daily", start=date(2025, 1, 1), end=date(2025, 2, 19))
    for table in ("flowstone_runs", "flowstone_materializations", "procrastinate_jobs"):
        assert pg.count(database_url, f"SELECT count(*) FROM {table}") == 0, table


def test_a_backfill_reports_progress_inside_its_one_transaction(
    runtime: fs.FlowStone, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(client, "BACKFILL_CHUNK", 10)
    seen: list[tuple[int, int]] = []
    handle = runtime.backfill(
        "daily", start=date(2025, 1, 1), end=date(2025, 1, 25), progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(10, 25), (20, 25), (25, 25)]
    assert handle.status() == {"queued": 25}


# -- approvals: timeout jobs, cancel, backfill_sync, an explicit store -------------------------


def _job_status(database_url: str, job_id: int) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_decision_cancels_the_approval_timeout_job(runtime: fs.FlowStone, database_url: str):
    runtime.materialize("gated", raise_on_error=False)
    (approval,) = runtime.approvals.list()
    assert approval.timeout_job_id is not None
    assert _job_status(database_url, approval.timeout_job_id) == "todo"
    runtime.approvals.approve(approval.id, by="alice")
    assert _job_status(database_url, approval.timeout_job_id) == "cancelled"


def test_cancel_covers_steps_waiting_for_approval(runtime: fs.FlowStone, database_url: str):
    result = runtime.materialize("gated", raise_on_error=False)
    (approval,) = runtime.approvals.list()
    assert runtime.run(result.run_id).cancel() == 1
    step = result.step("gated")
    assert runtime.store.get_step(result.run_id, "gated", U).status == "cancelled"  # type: ignore[union-attr]
    assert step.status == "waiting_approval"
    withdrawn = runtime.approvals.get(approval.id)
    assert (withdrawn.status, withdrawn.decided_by) == ("withdrawn", "tester")
    assert _job_status(database_url, approval.timeout_job_id or 0) == "cancelled"
    assert runtime.store.get_run(result.run_id).status == "cancelled"  # type: ignore[union-attr]
    with pytest.raises(errors.ApprovalAlreadyDecidedError, match="withdrawn"):
        runtime.approvals.approve(approval.id, by="alice")


def test_backfill_sync_counts_steps_waiting_for_approval_apart(runtime: fs.FlowStone):
    result = runtime.backfill_sync("gated_daily", start=date(2025, 1, 1), end=date(2025, 1, 3))
    assert (result.succeeded, result.failed, result.waiting) == (0, 0, 3)
    assert result.errors == {}


def test_a_sync_backfill_approved_continues_in_process_not_on_workers(
    runtime: fs.FlowStone, database_url: str
):
    result = runtime.backfill_sync("gated_daily", partitions=[date(2025, 1, 1)])
    (approval,) = runtime.approvals.list()
    runtime.approvals.approve(approval.id, by="alice")
    # only the timeout job exists: no step job was deferred for an in-process run
    assert (
        pg.count(
            database_url, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'flowstone:run_step'"
        )
        == 0
    )
    assert result.run_id is not None
    assert runtime.resume(result.run_id).success


def test_an_explicit_postgres_store_decides_approvals(database_url: str, tmp_path: Path):
    store = PostgresStore(database_url)
    with fs.FlowStone(DEFS, store=store, home=tmp_path, actor="runner") as rt:
        result = rt.materialize("gated", raise_on_error=False)
        (approval,) = rt.approvals.list()
        assert rt.approvals.approve(approval.id, by="alice").status == "approved"
        assert rt.resume(result.run_id).success


# -- truthful errors and one key limit everywhere ------------------------------------------


def test_a_partition_key_too_long_for_the_index_is_refused_everywhere():
    long_value = "x" * partition_keys.MAX_KEY_BYTES
    message = f"is {partition_keys.MAX_KEY_BYTES + 2} bytes long; a partition key is at most"
    with pytest.raises(errors.DefinitionError, match=message):
        fs.StaticPartitions([long_value])  # refused when the definition is made
    with pytest.raises(errors.InvalidPartitionError, match=message):
        partition_keys.encode(long_value)
    with pytest.raises(errors.InvalidPartitionError, match=message):
        partition_keys.decode("s:" + long_value)
    memory = MemoryStore()
    run_id = str(uuid.uuid4())
    memory.create_run(
        NewRun(run_id=run_id, kind=fs.RunKind.MATERIALIZE, selection=("a",), requested_by="t"), []
    )
    with pytest.raises(errors.InvalidPartitionError, match=message):
        memory.start_step(run_id, "a", "s:" + long_value)
    with pytest.raises(pydantic.ValidationError):
        jobs.JobArgs(run_id=run_id, asset="a", partition="s:" + long_value)


def test_a_database_limit_is_not_retryable(database_url: str):
    store = PostgresStore(database_url)
    try:
        with store.transaction("make a table") as conn:
            conn.execute("CREATE TABLE huge_keys (k text PRIMARY KEY)")
        with pytest.raises(errors.StoreError) as info:
            _insert_huge_key(store)
        assert info.value.retryable is False
        assert info.value.context["sqlstate"].startswith("54")
        assert "a database limit was exceeded" in info.value.message
    finally:
        store.close()


def _insert_huge_key(store: PostgresStore) -> None:
    with store.transaction("index a huge key") as conn:
        conn.execute("INSERT INTO huge_keys VALUES (%s)", (_random_text(),))


def _random_text() -> str:
    import secrets  # noqa: PLC0415 - incompressible text: TOAST cannot shrink it below the limit

    return secrets.token_hex(8000)


# -- values load back equal and of the same type ------------------------------------------


def test_values_round_trip_exactly_through_the_postgres_io_manager(runtime: fs.FlowStone):
    memory = fs.FlowStone(DEFS, store="memory")
    expected = memory.materialize("awkward").value("awkward")
    runtime.materialize("awkward")
    loaded = runtime.load("awkward")
    assert loaded == expected
    assert isinstance(loaded, dict)
    assert list(loaded) == ["zeta", "alpha", "mid", "tiny"]  # key order kept
    assert type(loaded["zeta"]) is float
    assert math.copysign(1.0, loaded["alpha"]) == -1.0  # -0.0 stays negative
    assert type(loaded["mid"]) is int


# -- steps whose job ended without them ------------------------------------------------------


def test_a_queued_step_whose_job_ended_gets_a_new_job(runtime: fs.FlowStone, database_url: str):
    handle = runtime.submit("daily", [date(2025, 1, 1)])
    (step,) = handle.steps()
    assert step.job_id is not None
    with psycopg.connect(database_url, autocommit=True) as conn:  # the job ended; the step did not
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (step.job_id,))
    assert worker.settle_orphans(runtime.services) == 1
    (again,) = handle.steps()
    assert again.status == "queued"
    assert again.job_id is not None
    assert again.job_id != step.job_id
    assert _job_status(database_url, again.job_id) == "todo"
    assert worker.settle_orphans(runtime.services) == 0


def test_a_running_step_whose_job_ended_is_retried_then_fails_clearly(
    runtime: fs.FlowStone, database_url: str
):
    handle = runtime.submit("daily", [date(2025, 1, 1)])
    (step,) = handle.steps()
    for attempt in range(1, 6):
        claimed = runtime.store.start_step(handle.run_id, "daily", step.partition_key)
        assert claimed is not None
        assert claimed.attempt == attempt
        row = runtime.store.get_step(handle.run_id, "daily", step.partition_key)
        assert row is not None
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (row.job_id,))
        worker.settle_orphans(runtime.services)
        row = runtime.store.get_step(handle.run_id, "daily", step.partition_key)
        assert row is not None
        if row.status == "failed":
            break
        assert row.status == "queued"
    assert row.status == "failed"
    assert row.attempt == 1 + 3  # the policy's one attempt, plus three for database faults
    assert row.error is not None
    assert row.error["type"] == "StepLostError"
    assert "ended (failed) without recording the step's outcome" in row.error["message"]
    assert handle.run().status == "failed"


# -- the queue keeps batch-mates of an approved step alone ------------------------------------


BATCH_BODY = """
import datetime

@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01"))
def batched(context: fs.AssetContext) -> int:
    if context.partition == datetime.date(2025, 1, 1):
        context.require_approval("first?")
    else:
        (MARKERS / f"start-{context.partition}-{context.attempt}").touch()
        time.sleep(3)
    return 1

defs = fs.Definitions(assets=[batched])
"""


@pytest.mark.slow
def test_approving_the_first_partition_of_a_batch_runs_only_that_step(database_url: str, tmp_path: Path):
    pipeline = Pipeline(tmp_path, database_url, BATCH_BODY)
    try:
        pipeline.start_worker(concurrency=2)
        handle = pipeline.runtime.backfill(
            "batched", start=date(2025, 1, 1), end=date(2025, 1, 3), partitions_per_job=3
        )
        eventually(lambda: len(pipeline.runtime.approvals.list()) == 1, what="the approval request")
        eventually(lambda: len(list(pipeline.markers.glob("start-*"))) == 2, what="batch-mates running")
        (approval,) = pipeline.runtime.approvals.list()
        pipeline.runtime.approvals.approve(approval.id, by="alice")
        run = handle.wait(timeout=60)
        assert run.status == "succeeded"
        assert sorted(p.name for p in pipeline.markers.glob("start-*")) == [
            "start-2025-01-02-1",
            "start-2025-01-03-1",
        ]
        assert {s.partition_key: s.attempt for s in handle.steps()} == {
            "d:2025-01-01": 2,
            "d:2025-01-02": 1,
            "d:2025-01-03": 1,
        }
    finally:
        pipeline.stop()


def test_gc_collects_versions_no_committed_row_references(database_url: str, tmp_path: Path):
    storage = tmp_path / "out"
    defs = fs.Definitions(assets=[daily], io_managers={"default": fs.FilesystemIOManager(storage)})
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        result = rt.materialize("daily", date(2025, 1, 1))
        row = result.step("daily", date(2025, 1, 1))
        manager = rt.io_managers["default"]
        assert isinstance(manager, fs.FilesystemIOManager)
        # an attempt that stored its version, then never recorded its success
        orphan = manager.path_for("daily", row.partition_key, f"{row.id}-2")
        orphan.write_text("1")
        dry = rt.gc(dry_run=True)
        assert dry.orphans == {"default": 1}
        assert orphan.exists()
        report = rt.gc()
        assert report.orphans == {"default": 1}
        assert not orphan.exists()
        assert rt.load("daily", date(2025, 1, 1)) == 1  # the committed version stays


def test_gc_keeps_a_version_a_running_step_may_still_read(database_url: str, tmp_path: Path):
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path) as rt:
        first = rt.materialize("daily", date(2025, 1, 1)).step("daily", date(2025, 1, 1))
        # a step starts (it looks up the latest version: `first`), then a newer version commits
        reader = rt.submit("daily", [date(2025, 1, 2)])
        claimed = rt.store.start_step(reader.run_id, "daily", "d:2025-01-02")
        assert claimed is not None
        time.sleep(0.01)
        rt.materialize("daily", date(2025, 1, 1))
        assert rt.gc().planned == 0  # `first` was superseded after the reader started
        assert rt.store.get_materialization(first.id).output_deleted_at is None  # type: ignore[union-attr]
        rt.store.fail_terminal(claimed, error={"type": "X"}, actor="t")
        assert rt.gc().planned == 1  # nothing runs any more


def test_a_step_whose_upstream_has_not_succeeded_cannot_be_claimed(database_url: str, tmp_path: Path):
    """A worker continuing a chain claims the downstream step its success released; when a server
    crash loses that (asynchronous) success, the step is still pending behind a running upstream
    and the claim must take nothing (the sweep retries the upstream, whose success releases it)."""

    @fs.asset
    def up() -> int:
        return 1

    @fs.asset
    def down(up: int) -> int:
        return up + 1

    with fs.FlowStone(fs.Definitions([up, down]), database_url=database_url, home=tmp_path) as rt:
        handle = rt.submit("down", with_upstream=True)  # no worker: up queued, down pending
        store = rt.store
        assert isinstance(store, PostgresStore)
        claimed = store.claim(handle.run_id, "up", partition_keys.UNPARTITIONED)
        assert [s.asset for s in claimed.steps] == ["up"]  # up is running, as after a lost success
        assert store.claim(handle.run_id, "down", partition_keys.UNPARTITIONED).steps == []
        assert handle.status() == {"pending": 1, "running": 1}


LOST_BODY = """
@fs.asset
def lonely() -> int:
    return 7

defs = fs.Definitions(assets=[lonely])
"""


@pytest.mark.slow
@pytest.mark.parametrize("loops", [1, 2])
def test_a_job_a_live_worker_fetched_without_reading_the_reply_is_handed_back(
    database_url: str, tmp_path: Path, loops: int
):
    """A fetch commits 'doing' for the worker and the reply is lost with its connection (a
    connection killed at that moment): the worker is alive and heartbeating, so stalled-job
    recovery never takes the job, and its step waited for ever. The worker compares what Postgres
    says it is doing with what it runs and hands the job back; with two fetch loops in the process
    (two Procrastinate workers), the job of the second loop's worker too."""
    pipeline = Pipeline(tmp_path, database_url, LOST_BODY)
    try:
        handle = pipeline.runtime.submit("lonely")
        ((job_id,),) = pipeline.sql(
            "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 hour' "
            "WHERE status = 'todo' RETURNING id"
        )
        pipeline.start_worker(args=("--fetch-loops", str(loops)))
        eventually(
            lambda: len(pipeline.sql("SELECT id FROM procrastinate_workers")) == loops,
            what=f"{loops} worker(s) registered",
        )
        ((worker_id,),) = pipeline.sql("SELECT max(id) FROM procrastinate_workers")
        # What a fetch whose reply never arrived leaves behind.
        pipeline.sql(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s, scheduled_at = NULL "
            "WHERE id = %s RETURNING id",
            (worker_id, job_id),
        )
        assert handle.wait(timeout=30).status == "succeeded", pipeline.logs()
        assert "handed back 1 job(s) this worker was not running" in pipeline.logs()
        assert pipeline.runtime.load("lonely") == 7
    finally:
        pipeline.stop()
