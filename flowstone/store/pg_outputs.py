"""The outputs the Postgres IO manager stores, as the store offers them: reading, deleting,
rows-mode tables, and retention. Composed into :class:`flowstone.store.postgres.PostgresStore` as
``store.outputs``; the Postgres IO manager is bound to it.

Outputs fetched with a step's inputs (one round trip with the claim) are kept for the thread that
claimed the step and served from there: an output is immutable while its row is the one read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowstone.identifiers import QualifiedName
from flowstone.store import outputs, pg, records

__all__ = ["PostgresOutputs"]


class PostgresOutputs:
    """``flowstone_outputs`` and rows-mode user tables, on a :class:`~flowstone.store.pg.Database`."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db
        self._prefetch = threading.local()

    def keep(self, rows: Sequence[pg.Row], *, more: bool = False) -> None:
        """Keep the outputs that came with an input lookup for this thread's next loads. A claim
        starts the set afresh (bounded: one unit of work's inputs); a later lookup for the rest of
        the claimed batch adds to it."""
        found = {
            r["id"]: (r["output_format"], r["output_value"], r["output_data"])
            for r in rows
            if r["output_format"]
        }
        self._prefetch.outputs = {**getattr(self._prefetch, "outputs", {}), **found} if more else found

    def read_output(self, materialization_id: int) -> tuple[str, object, bytes | None] | None:
        """(format, JSON value, bytes) of a stored output, or ``None``."""
        prefetched: dict[int, tuple[str, object, bytes | None]] = getattr(self._prefetch, "outputs", {})
        hit = prefetched.pop(materialization_id, None)
        if hit is not None:
            return hit
        with self.db.session("read output") as conn:
            return outputs.output_get(conn, materialization_id)

    def delete_output(self, materialization_id: int) -> None:
        """Remove a stored output (idempotent)."""
        with self.db.session("delete output") as conn:
            outputs.output_delete(conn, materialization_id)

    def read_rows(
        self,
        table: QualifiedName,
        partition_column: str,
        *,
        asset: str,
        partition_key: str,
        materialization_id: int,
    ) -> list[dict[str, Any]]:
        """The rows a rows-mode Postgres IO manager wrote for a materialization."""
        with self.db.session("read rows") as conn:
            return outputs.read_rows(
                conn,
                table,
                partition_column,
                asset=asset,
                partition_key=partition_key,
                materialization_id=materialization_id,
            )

    def table_types(self, table: QualifiedName) -> dict[str, str]:
        """The columns of a user table, in table order, with their types as Postgres prints them
        (``numeric(10,2)``, ``timestamp with time zone``, ``text[]``): a frame loaded from
        rows-mode rows gets these types, not ones guessed from the values."""
        with self.db.session("read table columns") as conn:
            return {name: column.data_type for name, column in outputs.table_columns(conn, table).items()}

    def gc_plan(self, keep_last: int) -> list[records.GcCandidate]:
        """The outputs retention no longer needs (see :func:`outputs.output_gc_plan`)."""
        with self.db.session("plan gc") as conn:
            return outputs.output_gc_plan(conn, keep_last)

    def delete_stored(self, ids: Sequence[int]) -> list[int]:
        """Delete stored ``flowstone_outputs`` rows that retention no longer needs."""
        with self.db.transaction("delete outputs") as conn:
            return outputs.output_gc_delete(conn, ids)

    def mark_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        """Record that gc deleted these output versions."""
        with self.db.session("record gc") as conn:
            outputs.output_mark_deleted(conn, ids, now)
