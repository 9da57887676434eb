"""Approval gates (I13): waiting is a state with a deterministic resume, reject and timeout."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowstone as fs
from flowstone import cli, partition_keys
from tests.integration.queue_harness import Pipeline, eventually

U = partition_keys.UNPARTITIONED
CALLS: list[str] = []
FUTURE = datetime.now(UTC) + timedelta(days=2)


@fs.asset
def source() -> int:
    return 20


@fs.asset
def gated(context: fs.AssetContext, source: int) -> dict[str, object]:
    CALLS.append("gated-before")
    decision = context.require_approval(
        "ship it?", timeout=timedelta(hours=1), context_data={"rows": source}, on_timeout="reject"
    )
    CALLS.append("gated-after")
    return {"value": source + 1, "by": decision.decided_by, "reason": decision.reason}


@fs.asset
def after(gated: dict[str, object]) -> object:
    return gated["value"]


@fs.asset(
    approval=fs.ApprovalGate(message="declared gate", timeout=timedelta(minutes=5), on_timeout="approve")
)
def declared(source: int) -> int:
    CALLS.append("declared")
    return source * 2


@fs.asset
def failing_gate(context: fs.AssetContext) -> int:
    context.require_approval("fail me?", on_timeout="fail", timeout=timedelta(seconds=30))
    return 1


@fs.asset
def restricted(context: fs.AssetContext) -> int:
    context.require_approval("only bob", approvers=["bob"])
    return 1


@fs.asset
def swallowing(context: fs.AssetContext) -> int:
    try:
        context.require_approval("can it be swallowed?")
    except Exception:  # noqa: BLE001 - the test: an except Exception must not swallow the wait
        return -1
    return 1


DEFS = fs.Definitions(assets=[source, gated, after, declared, failing_gate, restricted, swallowing])


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[fs.FlowStone]:
    CALLS.clear()
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path, actor="runner") as rt:
        yield rt


def _pending(rt: fs.FlowStone) -> fs.Approval:
    (approval,) = rt.approvals.list()
    return approval


def test_i13_waiting_for_approval_is_a_state_not_an_error(runtime: fs.FlowStone):
    result = runtime.materialize("after", with_upstream=True, raise_on_error=False)
    assert result.status == "waiting_approval"
    assert result.waiting == [("gated", U)]
    assert result.errors == {}
    assert {s.asset: s.status for s in result.steps} == {
        "source": "succeeded",
        "gated": "waiting_approval",
        "after": "pending",
    }
    approval = _pending(runtime)
    assert (approval.status, approval.message, approval.context_data) == ("pending", "ship it?", {"rows": 20})
    assert approval.materialization_id == result.step("gated").id
    assert approval.timeout_at is not None
    with pytest.raises(fs.ApprovalPendingError, match=r"gated \[__unpartitioned__\]"):
        result.unwrap()
    with pytest.raises(fs.ApprovalPendingError):
        runtime.materialize("gated")  # raise_on_error: waiting is reported as ApprovalPendingError


def test_approve_then_resume_continues_in_process(runtime: fs.FlowStone):
    run = runtime.materialize("after", with_upstream=True, raise_on_error=False)
    approval = runtime.approvals.approve(_pending(runtime).id, by="alice", reason="looks right")
    assert (approval.status, approval.decided_by, approval.reason) == ("approved", "alice", "looks right")
    assert run.run_id in {r.run_id for r in runtime.store.list_runs()}
    resumed = runtime.resume(run.run_id)
    assert resumed.status == "succeeded"
    assert resumed.value("gated") == {"value": 21, "by": "alice", "reason": "looks right"}
    assert runtime.load("after") == 21
    assert CALLS == ["gated-before", "gated-before", "gated-after"]
    events = [(e.event, e.actor) for e in runtime.store.audit_events(run_id=run.run_id)]
    assert ("approval.requested", "runner") in events
    assert ("approval.approved", "alice") in events
    with pytest.raises(fs.ApprovalAlreadyDecidedError):
        runtime.approvals.reject(approval.id, by="bob")


def test_reject_ends_the_step_rejected_and_skips_downstream(runtime: fs.FlowStone):
    run = runtime.materialize("after", with_upstream=True, raise_on_error=False)
    runtime.approvals.reject(_pending(runtime).id, by="alice", reason="no")
    statuses = {s.asset: s.status for s in runtime.store.run_steps(run.run_id)}
    assert statuses == {"source": "succeeded", "gated": "rejected", "after": "skipped"}
    run_row = runtime.store.get_run(run.run_id)
    assert run_row is not None
    assert run_row.status == "failed"
    gated_row = runtime.store.get_step(run.run_id, "gated", U)
    assert gated_row is not None
    assert gated_row.error is not None
    assert gated_row.error["type"] == "ApprovalRejectedError"
    assert runtime.resume(run.run_id, raise_on_error=False).status == "failed"
    assert CALLS == ["gated-before"]


@pytest.mark.parametrize(
    ("asset", "expected_step", "expected_approval"),
    [
        ("gated", "rejected", "rejected"),
        ("declared", "queued", "approved"),
        ("failing_gate", "failed", "expired"),
    ],
)
def test_timeout_applies_each_policy_as_system(
    runtime: fs.FlowStone, asset, expected_step, expected_approval
):
    run = runtime.materialize(asset, with_upstream=True, raise_on_error=False)
    assert runtime.approvals.expire_due(now=datetime.now(UTC)) == []  # not due yet
    (decided,) = runtime.approvals.expire_due(now=FUTURE)
    assert (decided.status, decided.decided_by) == (expected_approval, "system")
    step = runtime.store.get_step(run.run_id, asset, U)
    assert step is not None
    assert step.status == expected_step
    with pytest.raises(fs.ApprovalAlreadyDecidedError):
        runtime.approvals.approve(decided.id, by="late")
    if expected_step == "queued":
        assert runtime.resume(run.run_id).value("declared") == 40
    if expected_step == "failed":
        assert step.error is not None
        assert step.error["type"] == "ApprovalTimedOutError"


def test_declarative_gate_asks_before_the_function_runs(runtime: fs.FlowStone):
    run = runtime.materialize("declared", with_upstream=True, raise_on_error=False)
    assert CALLS == []
    assert _pending(runtime).message == "declared gate"
    runtime.approvals.approve(_pending(runtime).id, by="alice")
    assert runtime.resume(run.run_id).value("declared") == 40
    assert CALLS == ["declared"]


def test_approvers_restrict_who_decides(runtime: fs.FlowStone):
    runtime.materialize("restricted", raise_on_error=False)
    approval = _pending(runtime)
    assert approval.approvers == ("bob",)
    with pytest.raises(fs.NotAllowedError, match="'alice' may not decide"):
        runtime.approvals.approve(approval.id, by="alice")
    with pytest.raises(fs.NotAllowedError):
        runtime.approvals.approve(approval.id, by="system")
    assert runtime.approvals.approve(approval.id, by="bob").status == "approved"
    with pytest.raises(fs.ApprovalNotFoundError):
        runtime.approvals.get(10_000_000)


def test_two_concurrent_deciders_exactly_one_wins(runtime: fs.FlowStone):
    runtime.materialize("gated", with_upstream=True, raise_on_error=False)
    approval_id = _pending(runtime).id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(name: str) -> None:
        barrier.wait()
        try:
            runtime.approvals.approve(approval_id, by=name)
            outcomes.append("won")
        except fs.ApprovalAlreadyDecidedError:
            outcomes.append("already decided")

    threads = [threading.Thread(target=decide, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["already decided", "won"]


def test_except_exception_cannot_swallow_the_wait(runtime: fs.FlowStone):
    result = runtime.materialize("swallowing", raise_on_error=False)
    assert result.waiting == [("swallowing", U)]


def test_memory_store_refuses_approvals_with_a_clear_error():
    rt = fs.FlowStone(DEFS, store="memory")
    result = rt.materialize("restricted", raise_on_error=False)
    row = result.step("restricted")
    assert row.status == "failed"
    assert row.error is not None
    assert "needs the Postgres store" in row.error["message"]


def test_cli_lists_and_decides(runtime: fs.FlowStone, database_url: str, capsys: pytest.CaptureFixture[str]):
    runtime.materialize("gated", with_upstream=True, raise_on_error=False)
    approval = _pending(runtime)
    runtime.close()
    defs_module = "tests.integration.test_approvals:DEFS"
    assert cli.main(["approvals", "list", "--defs", defs_module, "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "ship it?" in out
    assert str(approval.id) in out
    args = ["approvals", "approve", str(approval.id), "--by", "carol", "--reason", "fine"]
    assert cli.main([*args, "--defs", defs_module, "--database-url", database_url]) == 0
    assert "approved by carol" in capsys.readouterr().out
    assert cli.main([*args, "--defs", defs_module, "--database-url", database_url]) == 1
    assert "ApprovalAlreadyDecidedError" in capsys.readouterr().err


# -- queued runs, real workers -------------------------------------------------------------------

QUEUED = """
@fs.asset
def source() -> int:
    return 20

@fs.asset
def gated(context: fs.AssetContext, source: int) -> int:
    (MARKERS / f"asked-{context.attempt}").touch()
    context.require_approval("ship it?", timeout=None)
    return source + 1

@fs.asset
def after(gated: int) -> int:
    return gated * 10

@fs.asset
def quick(context: fs.AssetContext) -> int:
    context.require_approval("quick", timeout=fs_timedelta(seconds=1), on_timeout="approve")
    return 7

defs = fs.Definitions(assets=[source, gated, after, quick])
"""


@pytest.fixture
def pipeline(tmp_path: Path, database_url: str) -> Iterator[Pipeline]:
    with Pipeline(tmp_path, database_url, "from datetime import timedelta as fs_timedelta\n" + QUEUED) as p:
        yield p


@pytest.mark.slow
def test_queued_approve_resumes_on_a_worker_and_the_waiting_job_succeeded(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit("after", with_upstream=True)
    assert handle.wait(timeout=60).status == "waiting_approval", pipeline.logs()
    # The job that asked (gated's own, or the upstream's that continued with it, ADR 0013).
    job_of_gated = (
        "SELECT j.id, j.status, j.attempts, j.args FROM procrastinate_jobs AS j "
        "JOIN flowstone_materializations AS m ON m.job_id = j.id WHERE m.asset = 'gated'"
    )
    ((asked, status, attempts, _),) = pipeline.sql(job_of_gated)
    assert (status, attempts) == ("succeeded", 1)  # ended well: not failed, not retried
    (approval,) = pipeline.runtime.approvals.list()
    pipeline.runtime.approvals.approve(approval.id, by="alice")
    assert handle.wait(timeout=60).status == "succeeded", pipeline.logs()
    assert pipeline.runtime.load("after") == 210
    ((resumed, status, _, args),) = pipeline.sql(job_of_gated)
    assert resumed != asked
    assert status == "succeeded"
    # The continuation is gated's own job, with the same three-key args as any step's.
    assert args == {"run_id": handle.run_id, "asset": "gated", "partition": partition_keys.UNPARTITIONED}


@pytest.mark.slow
def test_queued_reject_skips_downstream(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit("after", with_upstream=True)
    assert handle.wait(timeout=60).status == "waiting_approval"
    (approval,) = pipeline.runtime.approvals.list()
    pipeline.runtime.approvals.reject(approval.id, by="alice", reason="no")
    assert handle.wait(timeout=30).status == "failed"
    assert handle.status() == {"rejected": 1, "skipped": 1, "succeeded": 1}


@pytest.mark.slow
def test_queued_redelivery_asks_twice_but_records_one_approval(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit("gated", with_upstream=True)
    assert handle.wait(timeout=60).status == "waiting_approval"
    # Force a redelivery: the step back to queued and its job delivered again, as after a crash.
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute("UPDATE flowstone_materializations SET status = 'queued' WHERE asset = 'gated'")
        conn.execute("UPDATE flowstone_runs SET status = 'running'")
        # (Its job may be the upstream's, which continued with it, ADR 0013: a job of its own.)
        args = {"run_id": handle.run_id, "asset": "gated", "partition": partition_keys.UNPARTITIONED}
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('flowstone', 'flowstone:run_step', 0, NULL, NULL, "
            "%s::jsonb, NULL)]::procrastinate_job_to_defer_v1[])",
            (json.dumps(args),),
        )
    eventually((pipeline.markers / "asked-2").exists, what="the step to ask again")
    assert handle.wait(timeout=60).status == "waiting_approval"
    assert pipeline.sql("SELECT count(*) FROM flowstone_approvals") == [(1,)]
    events = [e.event for e in pipeline.runtime.store.audit_events(run_id=handle.run_id)]
    assert events.count("approval.requested") == 1


@pytest.mark.slow
def test_queued_timeout_job_applies_the_policy(pipeline: Pipeline):
    pipeline.start_worker()
    handle = pipeline.runtime.submit("quick")
    assert handle.wait(timeout=60).status == "waiting_approval", pipeline.logs()
    # The timeout job was deferred for timeout_at (1 s later): it approves as `system`.
    eventually(lambda: handle.run().status == "succeeded", timeout=30, what="the timeout to approve")
    (approval,) = pipeline.runtime.approvals.list(status=None)
    assert (approval.status, approval.decided_by) == ("approved", "system")
    assert pipeline.runtime.load("quick") == 7


# -- lock order: the run first ---------------------------------------------------------------------

HOLD: dict[str, Any] = {}


@fs.asset
def held_gate(context: fs.AssetContext) -> int:
    HOLD["run_id"] = context.run_id
    HOLD["ready"].set()
    HOLD["go"].wait(timeout=30)
    context.require_approval("after the other request")
    return 1


def test_two_approval_requests_of_one_run_never_deadlock(database_url: str, tmp_path: Path):
    """An approval request inserts its approval row (a foreign key: a KEY SHARE lock on the run's
    row) and then finishes the run, which locks that row. When finishing took FOR UPDATE, two
    requests of one run taking them in that order deadlocked (each held the share lock the other's
    FOR UPDATE waited for). Since migration 0019 the run's lock is FOR NO KEY UPDATE, which a share
    lock does not block. The other request is played by a session holding the share lock: the
    runtime's request goes through while it is held (with FOR UPDATE it waited for the other's
    commit), then the other's own lock is granted at once."""
    HOLD.update(ready=threading.Event(), go=threading.Event())
    defs = fs.Definitions(assets=[held_gate])
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    with psycopg.connect(database_url, autocommit=True) as stats:
        before = stats.execute(deadlocks).fetchone()
    with fs.FlowStone(defs, database_url=database_url, home=tmp_path) as rt:
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.append(rt.materialize("held_gate", raise_on_error=False))
        )
        thread.start()
        assert HOLD["ready"].wait(timeout=30)
        with psycopg.connect(database_url) as other:
            other.execute("SET lock_timeout = '20s'")
            other.execute("SELECT 1 FROM flowstone_runs WHERE run_id = %s FOR KEY SHARE", (HOLD["run_id"],))
            HOLD["go"].set()
            thread.join(timeout=30)
            assert not thread.is_alive(), "the request waited for the other's share lock"
            (result,) = results
            assert result.status == "waiting_approval"
            other.execute(
                "SELECT 1 FROM flowstone_runs WHERE run_id = %s FOR NO KEY UPDATE", (HOLD["run_id"],)
            )
            other.commit()
    # Every session that could have been a deadlock's victim has ended (its statistics flushed).
    with psycopg.connect(database_url, autocommit=True) as stats:
        assert stats.execute(deadlocks).fetchone() == before
