"""Schedule and sensor state (``sql/queries/automation.sql``), Postgres only: one function per
named query, on the caller's connection.

Each evaluation claims its state row with ``FOR UPDATE SKIP LOCKED`` (I18) inside the transaction
that submits its runs, so any number of workers can evaluate the same schedules and sensors
without firing anything twice (:mod:`flowstone.automation` composes them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from flowstone.store import pg
from flowstone.store.pg import Conn, Q, Row

__all__ = [
    "schedule_state_advance",
    "schedule_state_claim",
    "schedule_state_ensure",
    "schedule_state_list",
    "schedule_state_set_paused",
    "schedule_tick_insert",
    "schedule_tick_set_run",
    "sensor_request_insert",
    "sensor_request_set_run",
    "sensor_state_claim",
    "sensor_state_ensure",
    "sensor_state_list",
    "sensor_state_record",
    "sensor_state_record_error",
]


def schedule_state_ensure(conn: Conn, name: str, now: datetime | None) -> None:
    """Create the state row of a schedule if it has none."""
    conn.execute(Q("schedule_state_ensure"), {"name": name, "now": now})


def schedule_state_claim(conn: Conn, name: str) -> Row | None:
    """The state row of a schedule, locked for this transaction; ``None`` when another holds it."""
    return conn.execute(Q("schedule_state_claim"), {"name": name}).fetchone()


def schedule_tick_insert(conn: Conn, name: str, tick_at: datetime, now: datetime | None) -> bool:
    """Record a tick as fired; ``False`` when it had fired already."""
    params = {"name": name, "tick_at": tick_at, "now": now}
    return conn.execute(Q("schedule_tick_insert"), params).fetchone() is not None


def schedule_tick_set_run(conn: Conn, name: str, tick_at: datetime, run_id: str) -> None:
    """Link a fired tick to its run."""
    params = {"name": name, "tick_at": tick_at, "run_id": pg.run_uuid(run_id)}
    conn.execute(Q("schedule_tick_set_run"), params)


def schedule_state_advance(conn: Conn, name: str, last_tick_at: datetime, now: datetime | None) -> None:
    """Move the schedule's last evaluated tick forward."""
    conn.execute(Q("schedule_state_advance"), {"name": name, "last_tick_at": last_tick_at, "now": now})


def schedule_state_set_paused(conn: Conn, name: str, *, paused: bool, by: str, now: datetime | None) -> Row:
    """Pause or resume a schedule; returns its state row."""
    row = conn.execute(
        Q("schedule_state_set_paused"), {"name": name, "paused": paused, "by": by, "now": now}
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
    return row


def schedule_state_list(conn: Conn) -> list[Row]:
    """Every schedule state row."""
    return conn.execute(Q("schedule_state_list")).fetchall()


def sensor_state_ensure(conn: Conn, name: str, now: datetime | None) -> None:
    """Create the state row of a sensor if it has none."""
    conn.execute(Q("sensor_state_ensure"), {"name": name, "now": now})


def sensor_state_claim(conn: Conn, name: str) -> Row | None:
    """The state row of a sensor, locked for this transaction; ``None`` when another holds it."""
    return conn.execute(Q("sensor_state_claim"), {"name": name}).fetchone()


def sensor_request_insert(conn: Conn, name: str, key: str, now: datetime | None) -> bool:
    """Record a keyed run request; ``False`` when the key was requested before."""
    params = {"name": name, "key": key, "now": now}
    return conn.execute(Q("sensor_request_insert"), params).fetchone() is not None


def sensor_request_set_run(conn: Conn, name: str, key: str, run_id: str) -> None:
    """Link a keyed request to its run."""
    params = {"name": name, "key": key, "run_id": pg.run_uuid(run_id)}
    conn.execute(Q("sensor_request_set_run"), params)


def sensor_state_record(conn: Conn, name: str, cursor: str | None, now: datetime | None) -> None:
    """Record a successful evaluation and the new cursor."""
    conn.execute(Q("sensor_state_record"), {"name": name, "cursor": cursor, "now": now})


def sensor_state_record_error(conn: Conn, name: str, error: dict[str, Any], now: datetime | None) -> None:
    """Record a failed evaluation (the cursor stays)."""
    conn.execute(Q("sensor_state_record_error"), {"name": name, "error": Jsonb(error), "now": now})


def sensor_state_list(conn: Conn) -> list[Row]:
    """Every sensor state row."""
    return conn.execute(Q("sensor_state_list")).fetchall()
