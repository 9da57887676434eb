"""``flowstone_check_results`` (``sql/queries/checks.sql``): asset check results, written in the
transaction that records their asset's success; composed into the Postgres store as
``store.checks`` for reading."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg.types.json import Jsonb

from flowstone.store import base, data_types, pg, records
from flowstone.store.pg import Conn, Q

__all__ = [
    "PostgresChecks",
    "check_result_from_row",
    "check_result_insert",
    "check_skip_downstream",
]


def check_result_insert(conn: Conn, items: Sequence[base.Success], now: datetime | None) -> None:
    """Record the check outcomes of these successes (only of attempts that succeeded in this
    transaction)."""
    rows = [(item.step, c) for item in items for c in item.checks]
    if not rows:
        return
    conn.execute(
        Q("check_result_insert"),
        {
            "ids": [step.id for step, _ in rows],
            "attempts": [step.attempt for step, _ in rows],
            "names": [c.check_name for _, c in rows],
            "passed": [c.passed for _, c in rows],
            "severities": [c.severity for _, c in rows],
            "blocking": [c.blocking for _, c in rows],
            "descriptions": [c.description for _, c in rows],
            "metadata": [Jsonb(dict(c.metadata)) for _, c in rows],
            "errors": [Jsonb(dict(c.error)) if c.error is not None else None for _, c in rows],
            "now": now,
        },
    )


def check_skip_downstream(
    conn: Conn, step: records.Materialization, check: records.CheckOutcome, now: datetime | None
) -> None:
    """Instead of the fan-in: skip what is downstream of ``step``, naming the blocking ``check``."""
    conn.execute(
        Q("check_skip_downstream"),
        {
            "run_id": pg.run_uuid(step.run_id),
            "asset": step.asset,
            "partition_key": step.partition_key,
            "step_id": step.id,
            "attempt": step.attempt,
            "error": Jsonb(data_types.check_skip_error(step, check)),
            "now": now,
        },
    )


def check_result_from_row(row: pg.Row) -> records.CheckResult:
    """A ``flowstone_check_results`` row as a record."""
    return records.CheckResult(
        id=row["id"],
        materialization_id=row["materialization_id"],
        asset=row["asset"],
        partition_key=row["partition_key"],
        run_id=str(row["run_id"]),
        check_name=row["check_name"],
        passed=row["passed"],
        severity=row["severity"],
        blocking=row["blocking"],
        description=row["description"],
        metadata=row["metadata"],
        error=row["error"],
        at=row["at"],
    )


class PostgresChecks:
    """Reading check results on a Database."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def results(
        self,
        asset: str | None = None,
        *,
        check_name: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[records.CheckResult]:
        """Check results, newest first."""
        params = {
            "asset": asset,
            "check_name": check_name,
            "run_id": pg.run_uuid(run_id) if run_id is not None else None,
            "limit": limit,
        }
        return [
            check_result_from_row(r) for r in self.db.all("read check results", "check_results_list", params)
        ]

    def latest(self, asset: str | None = None) -> list[records.CheckResult]:
        """The latest result of each check per asset and partition."""
        rows = self.db.all("read check results", "check_results_latest", {"asset": asset})
        return [check_result_from_row(r) for r in rows]
