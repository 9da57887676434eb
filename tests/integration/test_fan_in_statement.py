"""The fan-in (I14) is part of the success statement: the successes of one transaction lower the
count of unfinished upstream steps of each step downstream of them by the number of its upstream
steps that ended there, and queue it when that reaches zero, in the same statement (issue 14: one
statement fewer per step)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import psycopg
import pytest

from flowstone import partition_keys
from flowstone.identifiers import QualifiedName
from flowstone.io.base import OutputRef, PreparedOutput
from flowstone.store import records
from flowstone.store.base import Store, Success
from flowstone.store.postgres import PostgresStore
from tests.integration.fakes import RecordingJobs

U = partition_keys.UNPARTITIONED
REF = {"manager": "default", "uri": "memory://x", "version": "1"}


def _plan(store: Store) -> str:
    """a[x], a[y] -> c; a[x] -> d: c waits for both a steps, d for one."""
    run_id = str(uuid.uuid4())
    x, y = partition_keys.encode("x"), partition_keys.encode("y")
    store.create_run(
        records.NewRun(run_id=run_id, kind="materialize", selection=("c", "d"), requested_by="t"),
        [
            records.PlannedStep("a", x),
            records.PlannedStep("a", y),
            records.PlannedStep("c", U, pending_upstream=2),
            records.PlannedStep("d", U, pending_upstream=1),
        ],
        edges=[(("a", x), ("c", U)), (("a", y), ("c", U)), (("a", x), ("d", U))],
    )
    return run_id


def _started(store: Store, run_id: str, *keys: str) -> list[Success]:
    items = []
    for key in keys:
        step = store.start_step(run_id, "a", partition_keys.encode(key))
        assert step is not None
        items.append(Success(step=step, output_ref=REF, metadata={}, lineage=[]))
    return items


def test_i14_one_success_of_two_upstream_steps_releases_their_join_once(store: Store) -> None:
    run_id = _plan(store)
    completed = store.complete_steps(_started(store, run_id, "x", "y"), actor="t")
    assert all(row is not None for row in completed.rows)
    assert sorted(completed.released) == [("c", U), ("d", U)]
    for asset in ("c", "d"):
        step = store.get_step(run_id, asset, U)
        assert step is not None
        assert (step.status, step.pending_upstream) == ("queued", 0)


def test_i14_a_join_waits_for_its_upstream_step_of_a_later_success(store: Store) -> None:
    run_id = _plan(store)
    first = store.complete_steps(_started(store, run_id, "x"), actor="t")
    assert first.released == [("d", U)]
    c = store.get_step(run_id, "c", U)
    assert c is not None
    assert (c.status, c.pending_upstream) == ("pending", 1)
    second = store.complete_steps(_started(store, run_id, "y"), actor="t")
    assert second.released == [("c", U)]


def test_i14_an_attempt_that_lost_its_step_releases_nothing(store: Store) -> None:
    run_id = _plan(store)
    [item] = _started(store, run_id, "x")
    # the same step with the attempt after its own: another attempt holds it now
    stale = Success(
        step=dataclasses.replace(item.step, attempt=item.step.attempt + 1),
        output_ref=REF,
        metadata={},
        lineage=[],
    )
    completed = store.complete_steps([stale], actor="t")
    assert completed.rows == [None]
    assert completed.released == []
    d = store.get_step(run_id, "d", U)
    assert d is not None
    assert (d.status, d.pending_upstream) == ("pending", 1)


def _sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The start of every statement the connections execute from now on."""
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def counted(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(" ".join(str(query).split())[:40] if isinstance(query, str) else "composed")
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counted)
    return sent


def test_a_queued_success_takes_its_runs_lock_last(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A success that defers jobs reads the released steps mid-pipeline (a round trip) and defers
    their jobs; its run's row lock (flowstone_run_finish) comes after that, right before the
    COMMIT, so concurrent successes of the run do not wait on each other across those round trips."""
    store = PostgresStore(database_url)
    try:
        run_id = _plan(store)
        items = _started(store, run_id, "x")
        jobs = RecordingJobs()
        sent = _sent(monkeypatch)
        completed = store.complete_steps(items, actor="t", jobs=jobs)
        monkeypatch.undo()
        assert jobs.deferred == [("d", U)]
        assert completed.released == [("d", U)]
        finish = next(i for i, q in enumerate(sent) if "flowstone_run_finish" in q)
        assert finish == len(sent) - 2, sent
        assert sent[-1] == "COMMIT"
        assert any(q.startswith("UPDATE flowstone_materializations") for q in sent[2:finish]), sent
    finally:
        store.close()


def test_a_success_and_its_fan_in_are_one_statement(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PostgresStore(database_url)
    try:
        run_id = _plan(store)
        items = _started(store, run_id, "x")
        sent = _sent(monkeypatch)
        completed = store.complete_steps(items, actor="t")
        monkeypatch.undo()
        assert completed.released == [("d", U)]
        # BEGIN, the success with its fan-in, the run's finish, COMMIT
        assert [q.split()[0] for q in sent] == ["BEGIN", "WITH", "SELECT", "COMMIT"], sent
    finally:
        store.close()


def test_a_queued_success_with_rows_for_a_user_table_defers_what_it_released(database_url: str) -> None:
    # Rows for a user table go by COPY, outside a pipeline: the success's rows are read before the
    # COPY, and the released steps' jobs must still come from that same (once-read) result.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fan_in_rows (partition_key text, n integer)")
    store = PostgresStore(database_url)
    try:
        run_id = _plan(store)
        [item] = _started(store, run_id, "x")
        rows = PreparedOutput(
            ref=OutputRef(manager="rows", uri="postgres://fan_in_rows", version=str(item.step.id)),
            format="rows",
            rows_table=QualifiedName("public", "fan_in_rows"),
            partition_column="partition_key",
            rows_columns=("n",),
            rows=((1,),),
        )
        jobs = RecordingJobs()
        completed = store.complete_steps([dataclasses.replace(item, output=rows)], actor="t", jobs=jobs)
        assert completed.rows[0] is not None
        assert completed.rows[0].status == "succeeded"
        assert completed.released == [("d", U)]
        assert jobs.deferred == [("d", U)]
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT partition_key, n FROM fan_in_rows").fetchall() == [
                (partition_keys.encode("x"), 1)
            ]
    finally:
        store.close()
