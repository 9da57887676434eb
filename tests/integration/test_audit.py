"""The audit log: who acted (``FLOWSTONE_ACTOR``) and which events a run writes, on both stores."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import flowstone as fs
from flowstone import partition_keys

U = partition_keys.UNPARTITIONED


@fs.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@fs.asset(partitions=fs.DailyPartitions(start="2025-01-01", end="2025-01-05"))
def daily(numbers: list[int]) -> int:
    return sum(numbers)


@fs.asset
def broken(numbers: list[int]) -> int:
    raise RuntimeError("kaput")


@fs.asset
def after_broken(broken: int) -> int:
    return broken + 1


@fs.asset
def nan_context() -> int:
    raise fs.ResourceError("the ratio is not a number", context={"ratio": float("nan")})


@fs.asset
def nul_message() -> int:
    raise ValueError("bad byte \x00 in the input")


DEFS = fs.Definitions(assets=[numbers, daily, broken, after_broken, nan_context, nul_message])

MakeRuntime = Callable[..., fs.FlowStone]


@pytest.fixture(params=["memory", "postgres"])
def make_runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeRuntime]:
    """Builds runtimes on one store kind; the actor is left to the environment unless given."""
    made: list[fs.FlowStone] = []

    def make(**kwargs: object) -> fs.FlowStone:
        if request.param == "memory":
            rt = fs.FlowStone(DEFS, store="memory", **kwargs)  # type: ignore[arg-type]
        else:
            url = request.getfixturevalue("database_url")
            rt = fs.FlowStone(DEFS, database_url=url, home=tmp_path, **kwargs)  # type: ignore[arg-type]
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def _sql_events(rt: fs.FlowStone, run_id: str) -> list[tuple[str, str]] | None:
    """(event, actor) straight from flowstone_audit_log, for the Postgres store."""
    if rt.database_url is None:
        return None
    with psycopg.connect(rt.database_url) as conn:
        rows = conn.execute(
            "SELECT event, actor FROM flowstone_audit_log WHERE run_id = %s ORDER BY id", (run_id,)
        ).fetchall()
    return [(str(e), str(a)) for e, a in rows]


def test_audit_events_carry_the_actor_from_flowstone_actor(
    make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FLOWSTONE_ACTOR", "carol")
    rt = make_runtime()
    assert rt.actor == "carol"
    result = rt.materialize("daily", partition="2025-01-02", with_upstream=True)
    backfill = rt.backfill_sync("daily", start="2025-01-03", end="2025-01-04")
    for run_id in (result.run_id, backfill.run_id):
        assert run_id is not None
        events = rt.store.audit_events(run_id=run_id)
        assert len(events) >= 3
        assert {e.actor for e in events} == {"carol"}
        run = rt.store.get_run(run_id)
        assert run is not None
        assert run.requested_by == "carol"
        sql = _sql_events(rt, run_id)
        if sql is not None:
            assert sql == [(e.event, e.actor) for e in events]


def test_an_explicit_actor_wins_over_flowstone_actor(
    make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FLOWSTONE_ACTOR", "carol")
    rt = make_runtime(actor="dave")
    result = rt.materialize("numbers")
    assert {e.actor for e in rt.store.audit_events(run_id=result.run_id)} == {"dave"}


def test_the_audit_log_of_a_failed_run_in_id_order(
    make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("FLOWSTONE_ACTOR", "erin")
    rt = make_runtime()
    result = rt.materialize(["broken", "after_broken"], with_upstream=True, raise_on_error=False)
    assert result.status == "failed"
    events = rt.store.audit_events(run_id=result.run_id)
    # the skipped step (after_broken) writes no event of its own: its row holds the reason
    assert [(e.event, e.asset, e.partition_key) for e in events] == [
        ("run.requested", None, None),
        ("materialization.succeeded", "numbers", U),
        ("materialization.failed", "broken", U),
        ("run.finished", None, None),
    ]
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {e.actor for e in events} == {"erin"}
    assert {e.run_id for e in events} == {result.run_id}
    assert [e.at for e in events] == sorted(e.at for e in events)
    requested, succeeded, failed, finished = events
    assert requested.materialization_id is None
    assert succeeded.materialization_id == result.step("numbers").id
    assert succeeded.details == {"attempt": 1}
    assert failed.materialization_id == result.step("broken").id
    assert failed.details == {"attempt": 1, "error_type": "ExecutionError"}
    assert finished.details == {"status": "failed"}
    assert result.step("after_broken").status == "skipped"
    sql = _sql_events(rt, result.run_id)
    if sql is not None:
        assert sql == [(e.event, "erin") for e in events]


def test_a_failure_whose_error_is_awkward_json_is_still_recorded_memory():
    """The memory store keeps the error as a Python dict: the failure is recorded and audited."""
    rt = fs.FlowStone(DEFS, store="memory", actor="tester")
    for name in ("nan_context", "nul_message"):
        result = rt.materialize(name, raise_on_error=False)
        assert result.step(name).status == "failed"
        events = [e.event for e in rt.store.audit_events(run_id=result.run_id)]
        assert events == ["run.requested", "materialization.failed", "run.finished"]


@pytest.mark.parametrize("name", ["nan_context", "nul_message"])
def test_a_failure_whose_error_is_awkward_json_is_still_recorded_postgres(
    database_url: str, tmp_path: Path, name: str
):
    """jsonb refuses NaN and U+0000: the error is stored with them made text (NaN as "nan", NUL as
    the four characters \\x00), so the failure, its event and the run's end are all recorded."""
    with fs.FlowStone(DEFS, database_url=database_url, home=tmp_path, actor="tester") as rt:
        result = rt.materialize(name, raise_on_error=False)
        assert result.step(name).status == "failed"
        events = [e.event for e in rt.store.audit_events(run_id=result.run_id)]
        assert events == ["run.requested", "materialization.failed", "run.finished"]
        run = rt.store.get_run(result.run_id)
        assert run is not None
        assert run.status == "failed"
        row = rt.store.get_step(result.run_id, name, U)
        assert row is not None
        assert row.status == "failed"
        assert row.error is not None
        if name == "nan_context":
            assert row.error["type"] == "ResourceError"
            assert row.error["context"] == {"ratio": "nan"}
        else:
            assert row.error["type"] == "ExecutionError"
            assert row.error["message"] == "ValueError: bad byte \\x00 in the input"
            assert "\\x00" in row.error["context"]["traceback"]
            assert "\\u0000" not in json.dumps(row.error)  # no NUL anywhere (json.dumps escapes it)


def test_host_code_appends_its_own_audit_events(make_runtime: MakeRuntime):
    rt = make_runtime(actor="deployer")
    run_id = rt.materialize("numbers").run_id
    event_id = rt.audit.record("deploy.finished", details={"version": "1.2.3"}, run_id=run_id)
    events = rt.audit.events(run_id=run_id)
    mine = [e for e in events if e.event == "deploy.finished"]
    assert len(mine) == 1
    assert (mine[0].id, mine[0].actor, mine[0].details) == (event_id, "deployer", {"version": "1.2.3"})
    assert events[-1].id == event_id  # appended after FlowStone's own events, read with them
    for bad in ("Deploy finished", "deploy..finished", "", "deploy.finished!"):
        with pytest.raises(fs.ConfigurationError, match="dotted lower-case words"):
            rt.audit.record(bad)
