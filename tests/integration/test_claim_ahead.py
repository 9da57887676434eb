"""In-process chains claim the next step with the success before it, in its round trip (issue 14):
the claim is the usual one, so it takes only what that success made ready, the plan's order is
kept, and a claim that fails after the success committed leaves the success standing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowstone as fs
from flowstone import execution, partition_keys
from flowstone.store import records
from flowstone.store.base import ClaimAhead, Keep, Store, Success
from flowstone.store.postgres import PostgresStore
from tests.integration.fakes import RecordingJobs

U = partition_keys.UNPARTITIONED
REF = {"manager": "default", "uri": "memory://x", "version": "1"}
CALLS: list[str] = []


@fs.asset
def root() -> int:
    CALLS.append("root")
    return 1


@fs.asset
def left(root: int) -> int:
    CALLS.append("left")
    return root + 1


@fs.asset
def right(root: int) -> int:
    CALLS.append("right")
    return root + 2


@fs.asset
def both(left: int, right: int) -> int:
    CALLS.append("both")
    return left * right


@fs.asset
def last(both: int) -> int:
    CALLS.append("last")
    return both + 1


DEFS = fs.Definitions(assets=[root, left, right, both, last])


@pytest.fixture(params=["memory", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fs.FlowStone]:
    if request.param == "memory":
        rt = fs.FlowStone(DEFS, store="memory", actor="tester")
    else:
        rt = fs.FlowStone(DEFS, database_url=request.getfixturevalue("database_url"), home=tmp_path)
    with rt:
        yield rt


def test_a_run_claims_each_next_step_with_the_success_before_it_in_plan_order(
    runtime: fs.FlowStone, monkeypatch: pytest.MonkeyPatch
):
    claims: list[tuple[str, str]] = []
    claim = execution.StepRunner.claim

    def counted(self: execution.StepRunner, run_id: str, asset: Any, batch_key: str, **kwargs: Any) -> Any:
        claims.append((asset.name, batch_key))
        return claim(self, run_id, asset, batch_key, **kwargs)

    monkeypatch.setattr(execution.StepRunner, "claim", counted)
    CALLS.clear()
    result = runtime.materialize("last", with_upstream=True)
    assert result.success
    assert result.value("last") == 7
    # The plan's order, exactly: "right" was already waiting when "left" succeeded, and was
    # claimed with that success; "both" and "last" were made ready by the success before them.
    assert CALLS == ["root", "left", "right", "both", "last"]
    assert claims == [("root", U)]  # only the first step needed a claim of its own
    assert {(s.asset, s.status, s.attempt) for s in result.steps} == {
        (a, "succeeded", 1) for a in ("root", "left", "right", "both", "last")
    }
    assert [e.event for e in runtime.store.audit_events(run_id=result.run_id)].count(
        "materialization.succeeded"
    ) == 5


def _success(store: Store, run_id: str, asset: str, ahead: ClaimAhead | None) -> Any:
    step = store.start_step(run_id, asset, U)
    assert step is not None
    return store.complete_steps(
        [Success(step=step, output_ref=REF, metadata={}, lineage=[])], actor="t", claim_ahead=ahead
    )


def test_a_claim_ahead_takes_only_what_the_success_made_ready(store: Store):
    run_id = str(uuid.uuid4())
    store.create_run(
        records.NewRun(run_id=run_id, kind="materialize", selection=("c",), requested_by="t"),
        [
            records.PlannedStep("a", U),
            records.PlannedStep("b", U),
            records.PlannedStep("c", U, pending_upstream=2),
        ],
        edges=[(("a", U), ("c", U)), (("b", U), ("c", U))],
    )
    first = _success(store, run_id, "a", ClaimAhead("c", U, wanted=[("a", U), ("b", U)]))
    assert first.rows[0] is not None
    assert first.ahead is not None
    assert first.ahead.steps == []  # "b" has not succeeded yet: "c" stays pending
    c = store.get_step(run_id, "c", U)
    assert c is not None
    assert (c.status, c.attempt) == ("pending", 0)

    second = _success(store, run_id, "b", ClaimAhead("c", U, wanted=[("a", U), ("b", U)]))
    assert second.ahead is not None
    assert [(s.asset, s.status, s.attempt) for s in second.ahead.steps] == [("c", "running", 1)]
    assert second.released == [("c", U)]
    assert set(second.ahead.inputs) == {("a", U), ("b", U)}  # the inputs came with the claim
    assert all(in_run for _, in_run in second.ahead.inputs.values())


def test_a_claim_ahead_that_fails_after_the_commit_leaves_the_success_standing(database_url: str):
    store = PostgresStore(database_url)
    try:
        run_id = str(uuid.uuid4())
        store.create_run(
            records.NewRun(run_id=run_id, kind="materialize", selection=("a",), requested_by="t"),
            [records.PlannedStep("a", U)],
        )
        # No step "not-a-name" exists, so the claim inserts it, and the table's name check refuses
        # it: an error after the COMMIT, in the same pipeline.
        completed = _success(store, run_id, "a", ClaimAhead("not-a-name", U))
        assert completed.ahead is None  # the caller claims the usual way
        row = completed.rows[0]
        assert row is not None
        assert row.status == "succeeded"
        stored = store.get_step(run_id, "a", U)
        assert stored is not None
        assert (stored.status, stored.id) == ("succeeded", row.id)
        run = store.get_run(run_id)
        assert run is not None
        assert run.status == "succeeded"
        assert [s.asset for s in store.run_steps(run_id)] == ["a"]  # nothing else was written
    finally:
        store.close()


def test_a_success_that_keeps_a_step_for_its_job_claims_it_in_its_round_trip(database_url: str):
    store = PostgresStore(database_url)
    try:
        run_id = str(uuid.uuid4())
        store.create_run(
            records.NewRun(run_id=run_id, kind="submit", selection=("c",), requested_by="t"),
            [
                records.PlannedStep("a", U),
                records.PlannedStep("b", U, pending_upstream=1),
                records.PlannedStep("c", U, pending_upstream=1),
            ],
            edges=[(("a", U), ("b", U)), (("a", U), ("c", U))],
        )
        step = store.claim(run_id, "a", U, reclaim=True, job_id=77).steps[0]
        jobs = RecordingJobs()
        asked: list[tuple[str, str]] = []

        def claim_of(unit: tuple[str, str]) -> ClaimAhead:
            asked.append(unit)
            return ClaimAhead(unit[0], unit[1], wanted=[("a", U)])

        completed = store.complete_steps(
            [Success(step=step, output_ref=REF, metadata={}, lineage=[])],
            actor="t",
            jobs=jobs,
            keep=Keep(job_id=77, queue="flowstone", ahead=claim_of),
        )
        # "b" is kept for job 77 and claimed with the success, as the job's own; "c" gets a job.
        assert completed.continued == ("b", U)
        assert asked == [("b", U)]
        assert jobs.deferred == [("c", U)]
        assert completed.ahead is not None
        assert [(s.asset, s.status, s.attempt, s.job_id) for s in completed.ahead.steps] == [
            ("b", "running", 1, 77)
        ]
        assert set(completed.ahead.inputs) == {("a", U)}
        c = store.get_step(run_id, "c", U)
        assert c is not None
        assert (c.status, c.job_id) == ("queued", 1000)
    finally:
        store.close()
