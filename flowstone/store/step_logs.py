"""``flowstone_step_logs`` (``sql/queries/step_logs.sql``): the captured lines of materialization
attempts. One function per named query, on the caller's connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from flowstone.store import records
from flowstone.store.pg import Conn, Q, Row

__all__ = ["INSERT_CHUNK", "step_logs_async_commit", "step_logs_insert", "step_logs_of_run"]


def _clean(text: str) -> str:
    # Postgres text and jsonb refuse NUL characters; a line that printed one keeps a visible mark.
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _row(line: records.StepLogLine) -> dict[str, Any]:
    return {
        "materialization_id": line.materialization_id,
        "attempt": line.attempt,
        "seq": line.seq,
        "at": line.at.isoformat(),
        "stream": line.stream,
        "level": line.level,
        "logger": _clean(line.logger),
        "message": _clean(line.message),
        "extra": line.extra,
    }


INSERT_CHUNK = 5_000
"""Lines per statement: a flush of many chatty steps stays a few statements of bounded size."""


def step_logs_insert(conn: Conn, lines: Sequence[records.StepLogLine]) -> None:
    """Append ``lines`` (one statement per ``INSERT_CHUNK``); lines written before are left as they are."""
    for start in range(0, len(lines), INSERT_CHUNK):
        chunk = [_row(line) for line in lines[start : start + INSERT_CHUNK]]
        conn.execute(Q("step_logs_insert"), {"lines": Jsonb(chunk)})


def step_logs_async_commit(conn: Conn) -> None:
    """Let the current transaction commit without waiting for the WAL flush."""
    conn.execute(Q("step_logs_async_commit"))


def step_logs_of_run(
    conn: Conn,
    run_id: Any,
    *,
    asset: str | None,
    partition_key: str | None,
    after_id: int | None,
    max_lines: int,
) -> list[records.StepLog]:
    """The stored lines of a run, in step, attempt and line order."""
    params = {
        "run_id": run_id,
        "asset": asset,
        "partition_key": partition_key,
        "after_id": after_id,
        "max_lines": max_lines,
    }
    return [_from_row(row) for row in conn.execute(Q("step_logs_of_run"), params).fetchall()]


def _from_row(row: Row) -> records.StepLog:
    return records.StepLog(
        id=row["id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        line=records.StepLogLine(
            materialization_id=row["materialization_id"],
            attempt=row["attempt"],
            seq=row["seq"],
            at=row["at"],
            stream=row["stream"],
            level=row["level"],
            logger=row["logger"],
            message=row["message"],
            extra=dict(row["extra"]),
        ),
    )
