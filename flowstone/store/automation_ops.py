"""Schedule and sensor state (Postgres only): each evaluation claims its state row with
``FOR UPDATE SKIP LOCKED`` (I18) inside the transaction that submits its runs, so any number of
workers can evaluate the same schedules and sensors without firing anything twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from flowstone.store import sqlfiles

__all__ = [
    "claim_schedule",
    "claim_sensor",
    "list_schedules",
    "list_sensors",
    "record_sensor",
    "record_sensor_error",
    "record_sensor_request",
    "record_tick",
    "set_paused",
]

Q = sqlfiles.query
Row = dict[str, Any]
Conn = psycopg.Connection[Row]


def claim_schedule(conn: Conn, name: str, now: datetime | None) -> Row | None:
    """The state row of a schedule, locked for this transaction; ``None`` when another holds it."""
    conn.execute(Q("schedule_state_ensure"), {"name": name, "now": now})
    return conn.execute(Q("schedule_state_claim"), {"name": name}).fetchone()


def record_tick(conn: Conn, name: str, tick_at: datetime, now: datetime | None) -> bool:
    """Record a tick as fired; False when it had fired already."""
    return (
        conn.execute(Q("schedule_tick_insert"), {"name": name, "tick_at": tick_at, "now": now}).fetchone()
        is not None
    )


def link_tick(conn: Conn, name: str, tick_at: datetime, run_id: str) -> None:
    """Link a fired tick to its run."""
    conn.execute(Q("schedule_tick_set_run"), {"name": name, "tick_at": tick_at, "run_id": run_id})


def advance_schedule(conn: Conn, name: str, last_tick_at: datetime, now: datetime | None) -> None:
    """Move the schedule's last evaluated tick forward."""
    conn.execute(Q("schedule_state_advance"), {"name": name, "last_tick_at": last_tick_at, "now": now})


def set_paused(conn: Conn, name: str, *, paused: bool, by: str, now: datetime | None) -> Row:
    """Pause or resume a schedule; returns its state row."""
    row = conn.execute(
        Q("schedule_state_set_paused"), {"name": name, "paused": paused, "by": by, "now": now}
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
    return row


def list_schedules(conn: Conn) -> list[Row]:
    """Every schedule state row."""
    return conn.execute(Q("schedule_state_list")).fetchall()


def claim_sensor(conn: Conn, name: str, now: datetime | None) -> Row | None:
    """The state row of a sensor, locked for this transaction; ``None`` when another holds it."""
    conn.execute(Q("sensor_state_ensure"), {"name": name, "now": now})
    return conn.execute(Q("sensor_state_claim"), {"name": name}).fetchone()


def record_sensor_request(conn: Conn, name: str, key: str, now: datetime | None) -> bool:
    """Record a keyed run request; False when the key was requested before."""
    return (
        conn.execute(Q("sensor_request_insert"), {"name": name, "key": key, "now": now}).fetchone()
        is not None
    )


def link_sensor_request(conn: Conn, name: str, key: str, run_id: str) -> None:
    """Link a keyed request to its run."""
    conn.execute(Q("sensor_request_set_run"), {"name": name, "key": key, "run_id": run_id})


def record_sensor(conn: Conn, name: str, cursor: str | None, now: datetime | None) -> None:
    """Record a successful evaluation and the new cursor."""
    conn.execute(Q("sensor_state_record"), {"name": name, "cursor": cursor, "now": now})


def record_sensor_error(conn: Conn, name: str, error: dict[str, Any], now: datetime | None) -> None:
    """Record a failed evaluation (the cursor stays)."""
    conn.execute(Q("sensor_state_record_error"), {"name": name, "error": Jsonb(error), "now": now})


def list_sensors(conn: Conn) -> list[Row]:
    """Every sensor state row."""
    return conn.execute(Q("sensor_state_list")).fetchall()
