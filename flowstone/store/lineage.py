"""``flowstone_lineage`` (``sql/queries/lineage.sql``): walks over the exact materializations read.

The edges themselves are written by the success statement (``materialization_succeed``).
"""

from __future__ import annotations

from flowstone.status import StepStatus
from flowstone.store import records
from flowstone.store.pg import Conn, Q, Row

__all__ = ["lineage_downstream", "lineage_upstream"]


def _row(row: Row, via: str) -> records.LineageRow:
    return records.LineageRow(
        depth=row["depth"],
        via_id=row[via],
        input_name=row["input_name"],
        id=row["id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=StepStatus(row["status"]),
        finished_at=row["finished_at"],
        also_via=tuple(row["also_via"]),
    )


def lineage_upstream(conn: Conn, materialization_id: int, max_depth: int) -> list[records.LineageRow]:
    """Materializations read (transitively) by this one: each once, at its nearest depth."""
    rows = conn.execute(Q("lineage_upstream"), {"id": materialization_id, "max_depth": max_depth})
    return [_row(r, "reader_id") for r in rows.fetchall()]


def lineage_downstream(conn: Conn, materialization_id: int, max_depth: int) -> list[records.LineageRow]:
    """Materializations that read (transitively) this one: each once, at its nearest depth."""
    rows = conn.execute(Q("lineage_downstream"), {"id": materialization_id, "max_depth": max_depth})
    return [_row(r, "source_id") for r in rows.fetchall()]
