"""``flowstone_run_finish`` (migration 0018): the one place a run's status is computed. It locks the
run's row in a statement of its own, so of two last steps ending together the second sees the
first's success and finishes the run; with ``commit_async`` the caller's transaction commits
asynchronously only while the run goes on (ADR 0013)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from flowstone import partition_keys
from flowstone.store import records
from flowstone.store.postgres import PostgresStore

U = partition_keys.UNPARTITIONED
SUCCEED = (
    "UPDATE flowstone_materializations SET status = 'succeeded', finished_at = now(), "
    "output_ref = '{}' WHERE id = %s"
)
FINISH = "SELECT status FROM flowstone_run_finish(%s, 'tester', NULL, %s)"


@pytest.fixture
def running(database_url: str) -> Iterator[tuple[str, dict[str, int]]]:
    """A run whose two steps "a" and "b" (no edge between them) are both running."""
    store = PostgresStore(database_url)
    try:
        run_id = str(uuid.uuid4())
        store.create_run(
            records.NewRun(run_id=run_id, kind="materialize", selection=("a", "b"), requested_by="t"),
            [records.PlannedStep("a", U), records.PlannedStep("b", U)],
        )
        ids = {}
        for asset in ("a", "b"):
            step = store.start_step(run_id, asset, U)
            assert step is not None
            ids[asset] = step.id
        yield run_id, ids
    finally:
        store.close()


def _status(url: str, run_id: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM flowstone_runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_two_last_steps_ending_together_finish_the_run(
    database_url: str, running: tuple[str, dict[str, int]]
):
    run_id, ids = running
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        first.execute(SUCCEED, (ids["a"],))
        # "b" is still running: the run goes on, and the first holds the run's row until it commits.
        assert first.execute(FINISH, (run_id, False)).fetchall() == []
        second.execute(SUCCEED, (ids["b"],))
        result: list[object] = []
        waiter = threading.Thread(
            target=lambda: result.append(second.execute(FINISH, (run_id, False)).fetchall())
        )
        waiter.start()
        waiter.join(timeout=1)
        assert waiter.is_alive()  # the second waits for the run's row
        first.commit()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        # Its status was computed after the wait, seeing the first's committed success.
        assert result == [[("succeeded",)]]
        second.commit()
    assert _status(database_url, run_id) == "succeeded"


def test_the_success_commits_asynchronously_only_while_the_run_goes_on(
    database_url: str, running: tuple[str, dict[str, int]]
):
    run_id, ids = running
    with psycopg.connect(database_url) as conn:
        conn.execute(SUCCEED, (ids["a"],))
        assert conn.execute(FINISH, (run_id, True)).fetchall() == []
        assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("off",)
        conn.commit()
        # The setting was the transaction's own.
        assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("on",)
        conn.execute(SUCCEED, (ids["b"],))
        assert conn.execute(FINISH, (run_id, True)).fetchall() == [("succeeded",)]
        # The run ended in this transaction: it commits durably (flushing the asynchronous ones).
        assert conn.execute("SELECT current_setting('synchronous_commit')").fetchone() == ("on",)
        conn.commit()
        audit = conn.execute(
            "SELECT details FROM flowstone_audit_log WHERE run_id = %s AND event = 'run.finished'", (run_id,)
        ).fetchall()
        assert audit == [({"status": "succeeded"},)]


TOUCH = "UPDATE flowstone_materializations SET attempt = attempt WHERE id = %s"


def test_run_finish_takes_no_key_lock_so_foreign_key_checks_cannot_deadlock_it(
    database_url: str, running: tuple[str, dict[str, int]]
):
    """Migration 0019. A transaction that updates one of the run's steps a second time runs that
    row's foreign-key check, which takes KEY SHARE on the run's row (PostgreSQL checks the key of a
    row the transaction itself wrote). Two such transactions each hold KEY SHARE; with FOR UPDATE in
    ``flowstone_run_finish`` each then waited for the other's share lock: a deadlock (seen when the
    run's lock was taken last, after the deferred jobs' updates). FOR NO KEY UPDATE does not
    conflict with KEY SHARE: the first goes on, the second waits only for the first's commit."""
    run_id, ids = running
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        for conn, asset in ((first, "a"), (second, "b")):
            conn.execute(TOUCH, (ids[asset],))
            conn.execute(TOUCH, (ids[asset],))  # the second update of the row: its key checked
        first.execute("SET LOCAL lock_timeout = '5s'")  # FOR UPDATE: LockNotAvailable here
        assert first.execute(FINISH, (run_id, False)).fetchall() == []
        result: list[object] = []
        waiter = threading.Thread(
            target=lambda: result.append(second.execute(FINISH, (run_id, False)).fetchall())
        )
        waiter.start()
        waiter.join(timeout=1)
        assert waiter.is_alive()  # run_finish still excludes run_finish: it waits for the first
        first.commit()
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        assert result == [[]]  # both steps still running: the run goes on
        second.commit()
    assert _status(database_url, run_id) == "running"
