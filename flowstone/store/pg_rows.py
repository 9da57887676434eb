"""Row mapping, error translation and statement parameters shared by the Postgres store modules."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from flowstone import errors
from flowstone.store import base, records

__all__ = [
    "Conn",
    "Row",
    "keys_of",
    "lineage_from_row",
    "materialization_from_row",
    "maybe_transaction",
    "run_from_row",
    "run_uuid",
    "success_params",
    "translate_errors",
]

Row = dict[str, Any]
Conn = psycopg.Connection[Row]


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Map driver errors to FlowStone errors at the edge (STYLE.md §3)."""
    try:
        yield
    except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
        raise errors.StoreError(f"{action}: concurrent update, try again ({exc})", retryable=True) from exc
    except pg_errors.IntegrityError as exc:
        constraint = getattr(exc.diag, "constraint_name", None)
        raise errors.StoreError(
            f"{action}: the database refused it ({str(exc).strip()})",
            retryable=False,
            context={"constraint": constraint, "sqlstate": exc.sqlstate},
        ) from exc
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise errors.StoreError(
            f"{action}: database unavailable ({str(exc).strip()})", retryable=True
        ) from exc
    except psycopg.Error as exc:
        raise errors.StoreError(
            f"{action}: {str(exc).strip()}", retryable=False, context={"sqlstate": exc.sqlstate}
        ) from exc


def materialization_from_row(row: Row) -> records.Materialization:
    return records.Materialization(
        id=row["id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=row["status"],
        attempt=row["attempt"],
        pending_upstream=row["pending_upstream"],
        created_at=row["created_at"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        error=row["error"],
        metadata=row["metadata"],
        output_ref=row["output_ref"],
        code_version=row["code_version"],
        job_id=row["job_id"],
        output_deleted_at=row.get("output_deleted_at"),
    )


def run_from_row(row: Row) -> records.Run:
    return records.Run(
        run_id=str(row["run_id"]),
        kind=row["kind"],
        selection=tuple(row["selection"]),
        config=row["config"],
        tags=row["tags"],
        requested_by=row["requested_by"],
        status=row["status"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def lineage_from_row(row: Row, via: str) -> records.LineageRow:
    return records.LineageRow(
        depth=row["depth"],
        via_id=row[via],
        input_name=row["input_name"],
        id=row["id"],
        run_id=str(row["run_id"]),
        asset=row["asset"],
        partition_key=row["partition_key"],
        status=row["status"],
        finished_at=row["finished_at"],
    )


@contextmanager
def maybe_transaction(conn: Conn, needed: bool) -> Iterator[None]:
    if needed:
        with conn.transaction():
            yield
    else:
        yield


def success_params(item: base.Success, actor: str, now: datetime | None) -> dict[str, Any]:
    """Parameters of the ``materialization_succeed`` statement."""
    output = item.output
    return {
        "id": item.step.id,
        "attempt": item.step.attempt,
        "output_ref": Jsonb(dict(item.output_ref)),
        "metadata": Jsonb(dict(item.metadata)),
        "upstream_ids": [u for u, _ in item.lineage],
        "input_names": [n for _, n in item.lineage],
        "actor": actor,
        # rows-mode outputs go to the user's table (store.outputs.write_rows), not flowstone_outputs
        "output_format": output.format if output and output.format != "rows" else None,
        "output_value": output.value if output else None,
        "output_data": output.data if output else None,
        "now": now,
    }


def run_uuid(run_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(run_id)
    except ValueError:
        raise errors.StoreError(f"{run_id!r} is not a run id (a UUID)", retryable=False) from None


def keys_of(steps: Sequence[base.StepKey]) -> tuple[list[str], list[str]]:
    return [a for a, _ in steps], [k for _, k in steps]
