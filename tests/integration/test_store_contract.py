"""One contract, two stores: every test runs against the memory store and the Postgres store (I8)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flowstone import errors, partition_keys
from flowstone.store import records
from flowstone.store.base import Store

T0 = datetime(2025, 1, 1, tzinfo=UTC)
U = partition_keys.UNPARTITIONED
REF = {"manager": "default", "uri": "memory://x", "version": "1"}


def new_run(store: Store, steps=(), *, kind="materialize", now=T0) -> str:
    run_id = str(uuid.uuid4())
    store.create_run(
        records.NewRun(run_id=run_id, kind=kind, selection=("a",), requested_by="tester"),
        [records.PlannedStep(asset=a, partition_key=k) for a, k in steps],
        now=now,
    )
    return run_id


def succeed(store: Store, run_id: str, asset: str, key: str = U, *, now=T0, lineage=()):
    step = store.start_step(run_id, asset, key, now=now)
    assert step is not None
    done = store.succeed_step(step, output_ref=REF, metadata={"n": 1}, lineage=lineage, actor="t", now=now)
    assert done is not None
    return done


def test_create_run_plans_pending_steps_and_audits(store: Store):
    run_id = new_run(store, [("a", U), ("b", "i:1")])
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.kind, run.selection, run.requested_by) == (
        "running",
        "materialize",
        ("a",),
        "tester",
    )
    steps = store.run_steps(run_id)
    assert [(s.asset, s.partition_key, s.status, s.attempt) for s in steps] == [
        ("a", U, "pending", 0),
        ("b", "i:1", "pending", 0),
    ]
    assert [e.event for e in store.audit_events(run_id=run_id)] == ["run.requested"]
    assert store.get_run(str(uuid.uuid4())) is None


def test_start_step_is_a_guarded_upsert(store: Store):
    run_id = new_run(store, [("a", U)])
    first = store.start_step(run_id, "a", U, code_version="v1", now=T0)
    assert first is not None
    assert (first.status, first.attempt, first.code_version, first.started_at) == ("running", 1, "v1", T0)
    assert store.start_step(run_id, "a", U) is None  # running, no reclaim
    again = store.start_step(run_id, "a", U, reclaim=True)
    assert again is not None
    assert again.attempt == 2
    # an unplanned step is created running
    other = store.start_step(run_id, "z", "s:x")
    assert other is not None
    assert (other.status, other.attempt) == ("running", 1)


def test_succeed_writes_output_lineage_and_audit_once(store: Store):
    run_id = new_run(store, [("a", U), ("b", U)])
    a = succeed(store, run_id, "a")
    step = store.start_step(run_id, "b", U, now=T0)
    assert step is not None
    later = T0 + timedelta(seconds=2)
    done = store.succeed_step(
        step, output_ref=REF, metadata={"rows": 3}, lineage=[(a.id, "a")], actor="alice", now=later
    )
    assert done is not None
    assert (done.status, done.output_ref, done.metadata, done.finished_at) == (
        "succeeded",
        REF,
        {"rows": 3},
        later,
    )
    assert done.duration_ms == 2000.0
    # the same attempt cannot succeed twice, nor restart
    assert store.succeed_step(step, output_ref=REF, metadata={}, lineage=[], actor="x") is None
    assert store.start_step(run_id, "b", U) is None
    assert store.start_step(run_id, "b", U, reclaim=True) is None
    upstream = store.lineage_upstream(done.id, max_depth=10)
    assert [(r.depth, r.asset, r.id, r.via_id, r.input_name) for r in upstream] == [
        (1, "a", a.id, done.id, "a")
    ]
    events = [(e.event, e.actor) for e in store.audit_events(run_id=run_id)]
    assert events.count(("materialization.succeeded", "alice")) == 1


def test_lineage_to_an_unknown_row_is_refused_and_nothing_changes(store: Store):
    run_id = new_run(store, [("a", U)])
    step = store.start_step(run_id, "a", U)
    assert step is not None
    with pytest.raises(errors.StoreError):
        store.succeed_step(step, output_ref=REF, metadata={}, lineage=[(10_000_000, "x")], actor="t")
    after = store.get_step(run_id, "a", U)
    assert after is not None
    assert after.status == "running"
    assert store.latest("a", U) is None


def test_fail_records_error_and_skips_downstream_in_one_go(store: Store):
    run_id = new_run(store, [("a", U), ("b", U), ("c", U)])
    step = store.start_step(run_id, "a", U)
    assert step is not None
    error = errors.ExecutionError("boom", asset="a").to_dict()
    failed = store.fail_step(step, error=error, skip=[("b", U), ("c", U)], actor="t")
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", error)
    statuses = {s.asset: s.status for s in store.run_steps(run_id)}
    assert statuses == {"a": "failed", "b": "skipped", "c": "skipped"}
    skipped = store.get_step(run_id, "b", U)
    assert skipped is not None
    assert skipped.error is not None
    assert skipped.error["type"] == "DependencyFailedError"
    assert store.fail_step(step, error=error, skip=[], actor="t") is None  # recorded once
    events = [e.event for e in store.audit_events(run_id=run_id)]
    assert events.count("materialization.failed") == 1


def test_i8_latest_is_deterministic_when_finish_times_tie(store: Store):
    ids = []
    for _ in range(3):
        run_id = new_run(store, [("a", "d:2025-01-01")])
        ids.append(succeed(store, run_id, "a", "d:2025-01-01", now=T0).id)
    for _ in range(5):
        latest = store.latest("a", "d:2025-01-01")
        assert latest is not None
        assert latest.id == max(ids)
    # a later finish wins over a higher id
    run_id = new_run(store, [("a", "d:2025-01-01")])
    late = succeed(store, run_id, "a", "d:2025-01-01", now=T0 + timedelta(hours=1))
    run_id = new_run(store, [("a", "d:2025-01-01")])
    succeed(store, run_id, "a", "d:2025-01-01", now=T0 - timedelta(hours=1))
    latest = store.latest("a", "d:2025-01-01")
    assert latest is not None
    assert latest.id == late.id
    assert [m.id for m in store.latest_all("a")] == [late.id]
    history = store.history("a", "d:2025-01-01", limit=2)
    assert [m.id for m in history] == sorted((m.id for m in history), reverse=True)
    assert len(history) == 2


def test_find_inputs_prefers_this_run_then_latest_succeeded(store: Store):
    old_run = new_run(store, [("a", U), ("a", "i:1")])
    old = succeed(store, old_run, "a")
    run_id = new_run(store, [("a", "i:1"), ("b", U)])
    found = store.find_inputs(run_id, [("a", U), ("a", "i:1"), ("missing", U)])
    assert found[("a", U)] == (old, False)
    in_run, flag = found[("a", "i:1")]
    assert (in_run.run_id, in_run.status, flag) == (run_id, "pending", True)
    assert ("missing", U) not in found
    assert store.find_inputs(run_id, []) == {}


def test_finish_run_computes_status_and_audits_once(store: Store):
    run_id = new_run(store, [("a", U), ("b", U)])
    assert store.finish_run(run_id, actor="t") is None  # still active: status unchanged
    succeed(store, run_id, "a")
    succeed(store, run_id, "b")
    finished = store.finish_run(run_id, actor="t", now=T0)
    assert finished is not None
    assert (finished.status, finished.finished_at) == ("succeeded", T0)
    assert store.finish_run(run_id, actor="t") is None
    assert [e.event for e in store.audit_events(run_id=run_id)].count("run.finished") == 1

    failing = new_run(store, [("a", U), ("b", U)])
    step = store.start_step(failing, "a", U)
    assert step is not None
    store.fail_step(step, error={"type": "X"}, skip=[("b", U)], actor="t")
    result = store.finish_run(failing, actor="t")
    assert result is not None
    assert result.status == "failed"


def test_lineage_walks_respect_depth(store: Store):
    run_id = new_run(store, [("a", U), ("b", U), ("c", U)])
    a = succeed(store, run_id, "a")
    b = succeed(store, run_id, "b", lineage=[(a.id, "a")])
    c = succeed(store, run_id, "c", lineage=[(b.id, "b"), (a.id, "a")])
    # each row once, at its nearest depth: a is read by c directly and through b
    up = store.lineage_upstream(c.id, max_depth=10)
    assert [(r.depth, r.asset, r.id, r.via_id, r.input_name) for r in up] == [
        (1, "a", a.id, c.id, "a"),
        (1, "b", b.id, c.id, "b"),
    ]
    assert store.lineage_upstream(c.id, max_depth=1) == up
    down = store.lineage_downstream(a.id, max_depth=10)
    assert [(r.depth, r.asset, r.id, r.via_id, r.input_name) for r in down] == [
        (1, "b", b.id, a.id, "a"),
        (1, "c", c.id, a.id, "a"),
    ]
    assert store.lineage_upstream(a.id, max_depth=10) == []
    assert store.lineage_downstream(c.id, max_depth=10) == []

    # a row on several paths: once, at its nearest depth, via the smallest id on the level below
    #   s ─┬─ y ──────── x
    #      └─ w ── z ──┘        (z also reads x; z's id is the smallest of all)
    paths_run = new_run(store, [("z", U), ("x", U), ("y", U), ("w", U), ("s", U)])
    x = succeed(store, paths_run, "x")
    z = succeed(store, paths_run, "z", lineage=[(x.id, "in_x")])
    y = succeed(store, paths_run, "y", lineage=[(x.id, "in_x")])
    w = succeed(store, paths_run, "w", lineage=[(z.id, "in_z")])
    s = succeed(store, paths_run, "s", lineage=[(y.id, "in_y"), (w.id, "in_w")])
    assert z.id < x.id < y.id < w.id < s.id
    up = store.lineage_upstream(s.id, max_depth=10)
    # x is at depth 2 through y, and at depth 3 through w and z: listed once, at 2, via y (the
    # only row on level 1 that reads it), not via z (a smaller id, on level 2)
    assert [(r.depth, r.asset, r.id, r.via_id, r.input_name) for r in up] == [
        (1, "w", w.id, s.id, "in_w"),
        (1, "y", y.id, s.id, "in_y"),
        (2, "x", x.id, y.id, "in_x"),
        (2, "z", z.id, w.id, "in_z"),
    ]
    assert store.lineage_upstream(s.id, max_depth=1) == up[:2]
    assert store.lineage_upstream(s.id, max_depth=2) == up
    down = store.lineage_downstream(x.id, max_depth=10)
    # s reads x through y (depth 2) and through z and w (depth 3): once, at 2, via y
    assert [(r.depth, r.asset, r.id, r.via_id, r.input_name) for r in down] == [
        (1, "y", y.id, x.id, "in_x"),
        (1, "z", z.id, x.id, "in_x"),
        (2, "s", s.id, y.id, "in_y"),
        (2, "w", w.id, z.id, "in_z"),
    ]
    assert store.lineage_downstream(x.id, max_depth=1) == down[:2]
    # two rows on the level below read the same row: the smaller id is named
    other_run = new_run(store, [("p", U), ("q", U), ("r", U), ("t", U)])
    p = succeed(store, other_run, "p")
    q1 = succeed(store, other_run, "q", lineage=[(p.id, "in_p")])
    q2 = succeed(store, other_run, "r", lineage=[(p.id, "in_p")])
    t = succeed(store, other_run, "t", lineage=[(q2.id, "in_r"), (q1.id, "in_q")])
    assert q1.id < q2.id
    up = store.lineage_upstream(t.id, max_depth=10)
    assert [(n.depth, n.asset, n.via_id, n.input_name) for n in up] == [
        (1, "q", t.id, "in_q"),
        (1, "r", t.id, "in_r"),
        (2, "p", q1.id, "in_p"),
    ]
    down = store.lineage_downstream(p.id, max_depth=10)
    assert [(n.depth, n.asset, n.via_id, n.input_name) for n in down] == [
        (1, "q", p.id, "in_p"),
        (1, "r", p.id, "in_p"),
        (2, "t", q1.id, "in_q"),
    ]


def test_succeeded_keys_and_skip_steps(store: Store):
    run_id = new_run(store, [("a", "i:1"), ("a", "i:2"), ("a", "i:3")])
    succeed(store, run_id, "a", "i:1")
    assert store.succeeded_keys("a", ["i:1", "i:2", "i:9"]) == {"i:1"}
    skipped = store.skip_steps(run_id, [("a", "i:1"), ("a", "i:2")], error={"type": "X"})
    assert [s.partition_key for s in skipped] == ["i:2"]


def test_runs_list_newest_first(store: Store):
    first = new_run(store, now=T0)
    second = new_run(store, now=T0 + timedelta(seconds=1))
    assert [r.run_id for r in store.list_runs(limit=2)] == [second, first]


@pytest.mark.parametrize("key", [U, "d:2025-01-01", "s:a|b"])
def test_i7_concurrent_upserts_never_duplicate(store: Store, key: str):
    run_id = new_run(store)
    barrier = threading.Barrier(8)
    results: list[records.Materialization | None] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        row = store.start_step(run_id, "a", key)
        with lock:
            results.append(row)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    steps = store.run_steps(run_id)
    assert len(steps) == 1
    assert steps[0].attempt == 1


def test_i7_concurrent_successes_of_one_attempt_commit_once(store: Store):
    run_id = new_run(store, [("a", U)])
    step = store.start_step(run_id, "a", U)
    assert step is not None
    barrier = threading.Barrier(8)
    results: list[records.Materialization | None] = []

    def finish() -> None:
        barrier.wait()
        results.append(store.succeed_step(step, output_ref=REF, metadata={}, lineage=[], actor="t"))

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert [e.event for e in store.audit_events(run_id=run_id)].count("materialization.succeeded") == 1


def test_newest_all_shows_the_newest_row_of_any_status(store: Store):
    run_id = new_run(store, [("a", "s:b"), ("a", "s:a")])
    succeed(store, run_id, "a", "s:b")
    later = new_run(store, [("a", "s:b")])
    step = store.start_step(later, "a", "s:b")
    assert step is not None
    store.fail_step(step, error={"type": "X"}, skip=[], actor="t")
    newest = store.newest_all("a")
    assert [(m.partition_key, m.status, m.run_id) for m in newest] == [
        ("s:a", "pending", run_id),
        ("s:b", "failed", later),
    ]
    assert store.newest_all("nothing") == []
