"""Rows-mode outputs in user tables and retention of Postgres outputs (I5, I8, I10, I11, I17).

These tests drive flowstone.store.outputs on plain psycopg connections, creating the
materialization rows with SQL, so they exercise exactly what the success transaction and the gc
command call.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pydantic
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from flowstone import errors
from flowstone.identifiers import QualifiedName
from flowstone.io.base import InputContext, OutputContext, PreparedOutput
from flowstone.io.postgres import PostgresIOManager
from flowstone.store import outputs
from flowstone.store.postgres import PostgresStore

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DAY = "d:2025-01-01"
EVENTS = QualifiedName("analytics", "daily_events")

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def conn(database_url: str) -> Iterator[Conn]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        c.execute("CREATE SCHEMA analytics")
        c.execute(
            """
            CREATE TABLE analytics.daily_events (
                partition_key text NOT NULL,
                event_id      integer NOT NULL,
                amount        numeric(10, 2),
                payload       jsonb,
                "select"      text,
                doubled       numeric GENERATED ALWAYS AS (amount * 2) STORED,
                row_id        bigint GENERATED ALWAYS AS IDENTITY
            )
            """
        )
        c.execute("CREATE TABLE analytics.by_day (day date NOT NULL, n integer NOT NULL)")
        yield c


class RowsStore:
    """What PostgresStore.read_rows is expected to do: outputs.read_rows on a pooled connection."""

    def __init__(self, url: str) -> None:
        self.url = url

    def read_output(self, materialization_id: int) -> None:
        return None

    def delete_output(self, materialization_id: int) -> None:
        return None

    def read_rows(self, table, partition_column, *, asset, partition_key, materialization_id):
        with psycopg.connect(self.url, autocommit=True) as c:
            return outputs.read_rows(
                c,
                table,
                partition_column,
                asset=asset,
                partition_key=partition_key,
                materialization_id=materialization_id,
            )


def _run(conn: Conn) -> uuid.UUID:
    run_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO flowstone_runs (run_id, selection, requested_by) VALUES (%s, %s, 'test')",
        (run_id, ["events"]),
    )
    return run_id


def _start(conn: Conn, asset: str = "events", key: str = DAY, run_id: uuid.UUID | None = None) -> int:
    row = conn.execute(
        "INSERT INTO flowstone_materializations (run_id, asset, partition_key, status, attempt, started_at) "
        "VALUES (%s, %s, %s, 'running', 1, %s) RETURNING id",
        (run_id or _run(conn), asset, key, T0),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def _succeed(conn: Conn, mid: int, finished_at: datetime) -> None:
    conn.execute(
        "UPDATE flowstone_materializations SET status = 'succeeded', finished_at = %s, output_ref = %s "
        "WHERE id = %s AND status = 'running'",
        (finished_at, Jsonb({"manager": "warehouse", "uri": f"x/{mid}", "version": str(mid)}), mid),
    )


def _prepare(manager: PostgresIOManager, mid: int, value: object, *, asset="events", key=DAY, partition=None):
    ctx = OutputContext(
        asset=asset,
        partition=partition,
        partition_key=key,
        run_id="r",
        materialization_id=mid,
        manager_key="warehouse",
    )
    return manager.prepare(ctx, value)


def _commit_success(
    conn: Conn, prepared: PreparedOutput, mid: int, finished_at: datetime, *, asset="events", key=DAY
) -> int | None:
    """The success transaction as the step runner will run it: status update, then the rows."""
    with conn.transaction():
        _succeed(conn, mid, finished_at)
        return outputs.write_rows(conn, prepared, materialization_id=mid, asset=asset, partition_key=key)


def _table(
    conn: Conn, table: str = "analytics.daily_events", order: str = "event_id"
) -> list[dict[str, Any]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY partition_key, {order}").fetchall()


def _status(conn: Conn, mid: int) -> str:
    row = conn.execute("SELECT status FROM flowstone_materializations WHERE id = %s", (mid,)).fetchone()
    assert row is not None
    return str(row["status"])


def _load(database_url: str, manager: PostgresIOManager, mid: int, *, key=DAY, type_hint=None):
    manager.bind(RowsStore(database_url))
    ref = _prepare(manager, mid, []).ref
    return manager.load(
        InputContext(asset="events", partition=None, partition_key=key, ref=ref, type_hint=type_hint)
    )


# -- rows mode ------------------------------------------------------------------------------------


def test_i10_rows_round_trip_through_the_user_table(conn, database_url):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    mid = _start(conn)
    rows = [
        {
            "event_id": 1,
            "amount": Decimal("1.50"),
            "payload": {"at": date(2025, 1, 1), "tags": ["a"]},
            "select": "x",
        },
        {"event_id": 2, "amount": None, "payload": None, "select": 'it\'s "quoted"; drop table y'},
    ]
    assert _commit_success(conn, _prepare(manager, mid, rows), mid, T0) == 2
    stored = _table(conn)
    assert [(r["partition_key"], r["event_id"], r["amount"], r["payload"], r["select"]) for r in stored] == [
        (DAY, 1, Decimal("1.50"), {"at": "2025-01-01", "tags": ["a"]}, "x"),
        (DAY, 2, None, None, 'it\'s "quoted"; drop table y'),
    ]
    assert stored[0]["doubled"] == Decimal("3.00")
    loaded = _load(database_url, manager, mid)
    assert sorted((r["event_id"], r["select"]) for r in loaded) == [
        (1, "x"),
        (2, 'it\'s "quoted"; drop table y'),
    ]
    assert all(r["partition_key"] == DAY for r in loaded)


def test_rows_load_applies_the_downstream_type(conn, database_url):
    class Event(pydantic.BaseModel):
        event_id: int
        amount: Decimal | None

    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    mid = _start(conn)
    _commit_success(conn, _prepare(manager, mid, [Event(event_id=3, amount=Decimal("2.25"))]), mid, T0)
    assert _load(database_url, manager, mid, type_hint=list[Event]) == [
        Event(event_id=3, amount=Decimal("2.25"))
    ]
    with pytest.raises(errors.OutputDecodeError, match="do not match the type"):
        _load(database_url, manager, mid, type_hint=list[int])


def test_a_new_materialization_replaces_only_its_partition(conn):
    manager = PostgresIOManager(schema="analytics", table="daily_events", mode="rows")
    first = _start(conn)
    _commit_success(conn, _prepare(manager, first, [{"event_id": 1}, {"event_id": 2}]), first, T0)
    other = _start(conn, key="d:2025-01-02")
    _commit_success(
        conn, _prepare(manager, other, [{"event_id": 9}], key="d:2025-01-02"), other, T0, key="d:2025-01-02"
    )
    second = _start(conn)
    assert (
        _commit_success(conn, _prepare(manager, second, [{"event_id": 3}]), second, T0 + timedelta(hours=1))
        == 1
    )
    assert [(r["partition_key"], r["event_id"]) for r in _table(conn)] == [(DAY, 3), ("d:2025-01-02", 9)]
    third = _start(conn)
    assert _commit_success(conn, _prepare(manager, third, []), third, T0 + timedelta(hours=2)) == 0
    assert [(r["partition_key"], r["event_id"]) for r in _table(conn)] == [("d:2025-01-02", 9)]


def test_a_typed_partition_column_receives_the_partition_value(conn, database_url):
    manager = PostgresIOManager(table="analytics.by_day", mode="rows", partition_column="day")
    mid = _start(conn)
    _commit_success(conn, _prepare(manager, mid, [{"n": 1}, {"n": 2}]), mid, T0)
    assert conn.execute("SELECT day, n FROM analytics.by_day ORDER BY n").fetchall() == [
        {"day": date(2025, 1, 1), "n": 1},
        {"day": date(2025, 1, 1), "n": 2},
    ]
    assert sorted(r["n"] for r in _load(database_url, manager, mid)) == [1, 2]
    unpartitioned = _start(conn, key="__unpartitioned__")
    with pytest.raises(errors.IOManagerError, match="use a text column"):
        _commit_success(
            conn, _prepare(manager, unpartitioned, [{"n": 1}]), unpartitioned, T0, key="__unpartitioned__"
        )
    assert _status(conn, unpartitioned) == "running"


def test_i11_a_failure_after_the_rows_leaves_neither_rows_nor_record(conn):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    old = _start(conn)
    _commit_success(conn, _prepare(manager, old, [{"event_id": 1}]), old, T0)
    new = _start(conn)

    def success_with_failing_lineage() -> None:
        with conn.transaction():
            _succeed(conn, new, T0 + timedelta(hours=1))
            written = outputs.write_rows(
                conn,
                _prepare(manager, new, [{"event_id": 2}]),
                materialization_id=new,
                asset="events",
                partition_key=DAY,
            )
            assert written == 1
            # The lineage insert of the same transaction fails (no such upstream materialization).
            conn.execute(
                "INSERT INTO flowstone_lineage (materialization_id, upstream_materialization_id, input_name) "
                "VALUES (%s, -1, 'numbers')",
                (new,),
            )

    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        success_with_failing_lineage()
    assert [r["event_id"] for r in _table(conn)] == [1]
    assert _status(conn, new) == "running"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"event_id": 1, "nope": 2}],
            "has no column\\(s\\) 'nope'; its columns are partition_key, event_id",
        ),
        ([{"event_id": 1, "doubled": 2}], "'doubled' are generated by the database"),
        ([{"event_id": 1, "row_id": 2}], "'row_id' are generated by the database"),
        ([{"event_id": "not a number"}], "invalid input syntax for type integer"),
        ([{"event_id": None}], 'null value in column "event_id"'),
        (
            [{"event_id": 1, "payload": {"x": float("nan")}}],
            "row 0, column 'payload' .*: the value is not JSON",
        ),
        ([{"event_id": 1, "payload": {"x": object()}}], "row 0, column 'payload' .*: the value is not JSON"),
    ],
)
def test_i17_refused_rows_are_clear_errors_and_roll_back(conn, rows, message):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    old = _start(conn)
    _commit_success(conn, _prepare(manager, old, [{"event_id": 1}]), old, T0)
    new = _start(conn)
    with pytest.raises(errors.IOManagerError, match=message) as info:
        _commit_success(conn, _prepare(manager, new, rows), new, T0 + timedelta(hours=1))
    assert not info.value.retryable
    assert [r["event_id"] for r in _table(conn)] == [1]
    assert _status(conn, new) == "running"


def test_missing_tables_and_views_are_refused(conn):
    conn.execute("CREATE VIEW analytics.v AS SELECT 1 AS partition_key")
    for table, message in [
        (QualifiedName("analytics", "missing"), "does not exist .* create it first"),
        (QualifiedName(None, "daily_events"), "daily_events does not exist"),  # not on search_path
        (QualifiedName("analytics", "v"), "is a view, not a table"),
    ]:
        with pytest.raises(errors.IOManagerError, match=message):
            outputs.table_columns(conn, table)
    assert list(outputs.table_columns(conn, EVENTS)) == [
        "partition_key",
        "event_id",
        "amount",
        "payload",
        "select",
        "doubled",
        "row_id",
    ]
    conn.execute("SET search_path TO analytics, public")
    assert "event_id" in outputs.table_columns(conn, QualifiedName(None, "daily_events"))


def test_i10_a_stale_writer_never_overwrites_the_latest_output(conn, database_url):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    newer = _start(conn)
    older = _start(conn)
    _commit_success(conn, _prepare(manager, newer, [{"event_id": 2}]), newer, T0 + timedelta(hours=1))
    # The older materialization commits later, but latest() orders by finished_at: it is not latest.
    assert _commit_success(conn, _prepare(manager, older, [{"event_id": 1}]), older, T0) is None
    assert [r["event_id"] for r in _table(conn)] == [2]
    with pytest.raises(errors.IOManagerError, match=f"no longer holds the output of materialization {older}"):
        _load(database_url, manager, older)
    assert [r["event_id"] for r in _load(database_url, manager, newer)] == [2]


def test_write_rows_refuses_to_run_outside_a_transaction(conn):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    mid = _start(conn)
    _succeed(conn, mid, T0)
    with pytest.raises(errors.StoreError, match="inside the success transaction"):
        outputs.write_rows(
            conn,
            _prepare(manager, mid, [{"event_id": 1}]),
            materialization_id=mid,
            asset="events",
            partition_key=DAY,
        )
    assert _table(conn) == []


def test_write_rows_does_nothing_when_the_success_update_did_not_apply(conn):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    mid = _start(conn)
    with conn.transaction():  # no succeeded row: the attempt lost the step
        assert (
            outputs.write_rows(
                conn,
                _prepare(manager, mid, [{"event_id": 1}]),
                materialization_id=mid,
                asset="events",
                partition_key=DAY,
            )
            is None
        )
    assert _table(conn) == []


def test_concurrent_writers_of_a_partition_are_serialized(conn, database_url):
    manager = PostgresIOManager(table="analytics.daily_events", mode="rows")
    first, second = _start(conn), _start(conn)
    result: dict[str, object] = {}

    def later_writer() -> None:
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as other:
            result["written"] = _commit_success(
                other, _prepare(manager, second, [{"event_id": 2}]), second, T0 + timedelta(hours=1)
            )

    with conn.transaction():
        _succeed(conn, first, T0)
        outputs.write_rows(
            conn,
            _prepare(manager, first, [{"event_id": 1}]),
            materialization_id=first,
            asset="events",
            partition_key=DAY,
        )
        thread = threading.Thread(target=later_writer)
        thread.start()
        with psycopg.connect(database_url, autocommit=True) as probe:
            deadline = time.monotonic() + 10
            waiting = 0
            while not waiting and time.monotonic() < deadline:
                # It waits on the partition's advisory lock, or before that on the partition's
                # row of flowstone_partition_status, which the first success holds (migration 0014).
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype IN ('advisory', 'transactionid') "
                    "AND NOT granted"
                ).fetchone()[0]
                time.sleep(0.02)
        assert waiting == 1, "the second writer did not wait for the first"
    thread.join(timeout=10)
    assert result["written"] == 1
    assert [r["event_id"] for r in _table(conn)] == [2]


def test_i5_identifiers_are_quoted_even_if_validation_were_bypassed(conn):
    # A table whose real name is hostile text: rendered through psycopg.sql.Identifier, it is one
    # name, and the canary table survives every statement composed with it.
    conn.execute("CREATE TABLE y (n integer)")
    conn.execute('CREATE TABLE analytics."x; drop table y; --" (partition_key text, "a""b" integer)')
    hostile = QualifiedName("analytics", "x; drop table y; --")
    mid = _start(conn)
    prepared = PreparedOutput(
        ref=_prepare(PostgresIOManager(table="t", mode="rows"), mid, []).ref,
        format="rows",
        rows_table=hostile,
        partition_column="partition_key",
        rows_columns=('a"b',),
        rows=((5,),),
    )
    assert _commit_success(conn, prepared, mid, T0) == 1
    assert outputs.read_rows(
        conn, hostile, "partition_key", asset="events", partition_key=DAY, materialization_id=mid
    ) == [{"partition_key": DAY, 'a"b': 5}]
    assert conn.execute("SELECT to_regclass('public.y') IS NOT NULL AS kept").fetchone() == {"kept": True}


# -- retention ------------------------------------------------------------------------------------


def _value_output(
    conn: Conn, asset: str, key: str, finished_at: datetime, run_id: uuid.UUID | None = None
) -> int:
    mid = _start(conn, asset, key, run_id)
    _succeed(conn, mid, finished_at)
    conn.execute(
        "INSERT INTO flowstone_outputs (materialization_id, asset, partition_key, format, value) "
        "VALUES (%s, %s, %s, 'jsonb', %s)",
        (mid, asset, key, Jsonb(mid)),
    )
    return mid


def _stored(conn: Conn) -> list[int]:
    return [
        r["materialization_id"]
        for r in conn.execute(
            "SELECT materialization_id FROM flowstone_outputs ORDER BY materialization_id"
        ).fetchall()
    ]


def test_gc_keeps_the_latest_n_per_asset_and_partition(conn, database_url):
    a1 = _value_output(conn, "a", "p", T0)
    a2 = _value_output(conn, "a", "p", T0 + timedelta(hours=2))
    a3 = _value_output(conn, "a", "p", T0 + timedelta(hours=1))
    a4 = _value_output(conn, "a", "p", T0 + timedelta(hours=2))  # ties a2 on finished_at: id decides
    b1 = _value_output(conn, "b", "p", T0)
    q1 = _value_output(conn, "a", "q", T0 + timedelta(days=9))
    failed = _start(conn, "a", "p")
    conn.execute(
        "UPDATE flowstone_materializations SET status = 'failed', finished_at = %s WHERE id = %s",
        (T0 + timedelta(days=30), failed),
    )

    plan = outputs.output_gc_plan(conn, keep_last=2)
    assert [(c.materialization_id, c.asset, c.partition_key) for c in plan] == [
        (a1, "a", "p"),
        (a3, "a", "p"),
    ]
    assert plan[0].output_ref == {"manager": "warehouse", "uri": f"x/{a1}", "version": str(a1)}
    assert [c.materialization_id for c in outputs.output_gc_plan(conn, keep_last=1)] == [a1, a2, a3]
    assert outputs.output_gc_plan(conn, keep_last=5) == []

    deleted = outputs.output_gc_delete(conn, [c.materialization_id for c in outputs.output_gc_plan(conn, 1)])
    assert deleted == [a1, a2, a3]
    assert _stored(conn) == [a4, b1, q1]
    # latest() and load() still work after gc.
    store = PostgresStore(database_url)
    try:
        for asset, key, mid in (("a", "p", a4), ("b", "p", b1), ("a", "q", q1)):
            latest = store.latest(asset, key)
            assert latest is not None
            assert latest.id == mid
            assert store.outputs.read_output(mid) == ("jsonb", mid, None)
    finally:
        store.close()


def test_gc_delete_never_removes_the_latest_output(conn):
    old = _value_output(conn, "a", "p", T0)
    latest = _value_output(conn, "a", "p", T0 + timedelta(hours=1))
    only = _value_output(conn, "b", "p", T0)
    assert outputs.output_gc_delete(conn, [latest, only, old, 12345]) == [old]
    assert _stored(conn) == [latest, only]
    assert outputs.output_gc_delete(conn, []) == []


def test_gc_leaves_runs_with_unfinished_steps_alone(conn):
    open_run = _run(conn)
    _value_output(conn, "a", "p", T0, run_id=open_run)  # kept, although not among the latest 1:
    _start(conn, "downstream", "p", open_run)  # a step of its run is still running and may read it
    done = _value_output(conn, "a", "p", T0 + timedelta(minutes=1))
    _value_output(conn, "a", "p", T0 + timedelta(hours=1))
    assert [c.materialization_id for c in outputs.output_gc_plan(conn, keep_last=1)] == [done]


@pytest.mark.parametrize("keep_last", [0, -1, True, 1.5, "2"])
def test_gc_keeps_at_least_one(conn, keep_last):
    with pytest.raises(errors.ConfigurationError, match="keep_last must be an integer of at least 1"):
        outputs.output_gc_plan(conn, keep_last)
