"""``flowstone_materializations`` (``sql/queries/materializations.sql``): one function per named
query, on the caller's connection. A step is one row: (asset, partition_key, run_id).

The statements that the step transactions pipeline (claim, inputs, success, release, failure)
return :class:`~flowstone.store.pg.Pending` results: the caller sends them all, then fetches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from flowstone.status import StepStatus
from flowstone.store import base, pg, records
from flowstone.store.pg import Conn, Pending, Q, Row

__all__ = [
    "materialization_abandon_run",
    "materialization_cancel_run",
    "materialization_claim",
    "materialization_copy_queued",
    "materialization_covered_keys",
    "materialization_end_waiting",
    "materialization_fail",
    "materialization_fail_unclaimed",
    "materialization_get",
    "materialization_get_many",
    "materialization_get_step",
    "materialization_history",
    "materialization_inputs",
    "materialization_latest",
    "materialization_latest_all",
    "materialization_mark_queued",
    "materialization_newest_all",
    "materialization_orphaned_claim",
    "materialization_plan",
    "materialization_ready",
    "materialization_recount_pending",
    "materialization_reopen",
    "materialization_resume_approved",
    "materialization_retry_later",
    "materialization_run_steps",
    "materialization_set_job",
    "materialization_set_jobs",
    "materialization_skip",
    "materialization_skip_blocked",
    "materialization_skip_reachable",
    "materialization_succeed",
    "materialization_succeeded_keys",
]

_row = pg.materialization_from_row
_one = pg.one_or_none(_row)


def _rows(cursor: Any) -> list[records.Materialization]:
    return [_row(r) for r in cursor.fetchall()]


# -- planning -----------------------------------------------------------------------------------


def materialization_plan(
    conn: Conn, run_id: str, steps: Sequence[records.PlannedStep], now: datetime | None
) -> None:
    """Plan steps ``pending``, each in its own batch."""
    if not steps:
        return
    conn.execute(
        Q("materialization_plan"),
        {
            "run_id": pg.run_uuid(run_id),
            "assets": [s.asset for s in steps],
            "keys": [s.partition_key for s in steps],
            "pending_upstream": [s.pending_upstream for s in steps],
            "code_versions": [s.code_version for s in steps],
            "now": now,
        },
    )


def materialization_copy_queued(
    conn: Conn,
    run_id: str,
    asset: str,
    *,
    code_version: str | None,
    batches: Sequence[Sequence[str]],
    job_ids: Sequence[int],
    now: datetime | None,
) -> int:
    """Write the steps of a bulk backfill ``queued`` with COPY, batch by batch with their jobs;
    returns the number of steps written."""
    at = now if now is not None else datetime.now(UTC)
    count = 0
    with conn.cursor().copy(Q("materialization_copy_queued")) as copy:
        for batch, job_id in zip(batches, job_ids, strict=True):
            for key in batch:
                copy.write_row((run_id, asset, key, StepStatus.QUEUED, batch[0], at, code_version, job_id))
                count += 1
    return count


def materialization_mark_queued(
    conn: Conn, run_id: str, ready: Sequence[base.StepKey], now: datetime | None
) -> list[base.BatchItem]:
    """Move planned steps from pending to queued, each in its own batch; the (asset, batch_key) of
    the rows that moved."""
    if not ready:
        return []
    rows = conn.execute(
        Q("materialization_mark_queued"),
        {
            "run_id": pg.run_uuid(run_id),
            "assets": [a for a, _ in ready],
            "keys": [k for _, k in ready],
            "batch_keys": [k for _, k in ready],
            "now": now,
        },
    ).fetchall()
    return [(r["asset"], r["batch_key"]) for r in rows]


def materialization_set_jobs(
    conn: Conn, run_id: str, items: Sequence[base.BatchItem], job_ids: Sequence[int]
) -> None:
    """Record the job id of every step of the given units of work."""
    conn.execute(
        Q("materialization_set_jobs"),
        {
            "run_id": pg.run_uuid(run_id),
            "assets": [a for a, _ in items],
            "batch_keys": [b for _, b in items],
            "job_ids": list(job_ids),
        },
    )


# -- the step state machine -------------------------------------------------------------------


def materialization_claim(
    conn: Conn,
    *,
    run_id: str,
    asset: str,
    batch_key: str,
    code_version: str | None,
    reclaim: bool,
    job_id: int | None,
    now: datetime | None,
) -> Pending[list[Row]]:
    """Claim the steps of one unit of work; the claimed rows with ``run_kind`` and ``run_config``."""
    cursor = conn.execute(
        Q("materialization_claim"),
        {
            "run_id": pg.run_uuid(run_id),
            "asset": asset,
            "batch_key": batch_key,
            "code_version": code_version,
            "reclaim": reclaim,
            "job_id": job_id,
            "now": now,
        },
    )
    return Pending(cursor, lambda c: c.fetchall())


def materialization_inputs(conn: Conn, run_id: str, wanted: Sequence[base.StepKey]) -> Pending[list[Row]]:
    """Per wanted (asset, key): this run's row, else the latest succeeded one, with its stored
    output (Postgres IO manager) when there is one."""
    cursor = conn.execute(
        Q("materialization_inputs"),
        {"run_id": pg.run_uuid(run_id), "assets": [a for a, _ in wanted], "keys": [k for _, k in wanted]},
    )
    return Pending(cursor, lambda c: c.fetchall())


def materialization_succeed(
    conn: Conn, items: Sequence[base.Success], actor: str, now: datetime | None, *, release: bool
) -> Pending[tuple[dict[int, records.Materialization], list[base.BatchItem]]]:
    """``running`` → ``succeeded`` for each item's attempt, with its lineage, audit event and
    (Postgres IO manager, value mode) output, in one statement; with ``release``, the fan-in (I14)
    of every item that no failed blocking check holds back, in the same statement. The rows that
    succeeded, by id (an attempt that lost its step is missing), and the units of work that became
    queued."""
    # rows-mode outputs go to the user's table (store.outputs.write_rows), not flowstone_outputs
    stored = [i.output if i.output is not None and i.output.format != "rows" else None for i in items]
    params = {
        "items": Jsonb(
            [
                {
                    "id": i.step.id,
                    "attempt": i.step.attempt,
                    "output_ref": dict(i.output_ref) if i.memoized_from is None else None,
                    "metadata": dict(i.metadata),
                    "output_format": o.format if o else None,
                    "output_value": o.value if o else None,
                    "memoized_from": i.memoized_from,
                    "lineage": [[upstream, name] for upstream, name in i.lineage],
                    "release": release and i.blocked_by is None,
                }
                for i, o in zip(items, stored, strict=True)
            ]
        ),
        "output_datas": [o.data if o else None for o in stored],
        "actor": actor,
        "now": now,
    }

    def fetch(cursor: Any) -> tuple[dict[int, records.Materialization], list[base.BatchItem]]:
        rows = cursor.fetchall()
        released = [(asset, batch_key) for asset, batch_key in rows[0]["released"]] if rows else []
        return {m.id: m for m in map(_row, rows)}, released

    return Pending(conn.execute(Q("materialization_succeed"), params), fetch)


def materialization_fail(
    conn: Conn, step: records.Materialization, error: Mapping[str, Any], actor: str, now: datetime | None
) -> records.Materialization | None:
    """``running`` → ``failed`` with the error and its audit event; ``None`` if the attempt lost it."""
    cursor = conn.execute(
        Q("materialization_fail"),
        {"id": step.id, "attempt": step.attempt, "error": Jsonb(dict(error)), "actor": actor, "now": now},
    )
    return _one(cursor)


def materialization_skip(
    conn: Conn, run_id: str, steps: Sequence[base.StepKey], error: Mapping[str, Any], now: datetime | None
) -> list[records.Materialization]:
    """Not-yet-started steps of a run → ``skipped``; the rows that changed."""
    cursor = conn.execute(
        Q("materialization_skip"),
        {
            "run_id": pg.run_uuid(run_id),
            "assets": [a for a, _ in steps],
            "keys": [k for _, k in steps],
            "error": Jsonb(dict(error)),
            "now": now,
        },
    )
    return _rows(cursor)


def materialization_skip_reachable(conn: Conn, failed: records.Materialization, now: datetime | None) -> None:
    """Every not-yet-started step reachable from ``failed`` through the step edges → ``skipped``."""
    conn.execute(
        Q("materialization_skip_reachable"),
        {
            "run_id": pg.run_uuid(failed.run_id),
            "asset": failed.asset,
            "partition_key": failed.partition_key,
            "error": Jsonb(base.skip_error(failed)),
            "now": now,
        },
    )


def materialization_retry_later(
    conn: Conn,
    step: records.Materialization,
    *,
    error: Mapping[str, Any],
    retry_in_s: float,
    actor: str,
    now: datetime | None,
) -> records.Materialization | None:
    """``running`` → ``queued`` keeping attempt and error, audited."""
    cursor = conn.execute(
        Q("materialization_retry_later"),
        {
            "id": step.id,
            "attempt": step.attempt,
            "error": Jsonb(dict(error)),
            "retry_in_s": retry_in_s,
            "actor": actor,
            "now": now,
        },
    )
    return _one(cursor)


def materialization_fail_unclaimed(
    conn: Conn,
    run_id: str,
    asset: str,
    partition_key: str,
    *,
    error: Mapping[str, Any],
    actor: str,
    now: datetime | None,
) -> records.Materialization | None:
    """An unfinished step whose job cannot even start → ``failed``; ``None`` when there is none."""
    cursor = conn.execute(
        Q("materialization_fail_unclaimed"),
        {
            "run_id": pg.run_uuid(run_id),
            "asset": asset,
            "partition_key": partition_key,
            "error": Jsonb(dict(error)),
            "actor": actor,
            "now": now,
        },
    )
    return _one(cursor)


def materialization_cancel_run(conn: Conn, run_id: str, now: datetime | None) -> list[Row]:
    """Every step of a run that has not started → ``cancelled``; their ids and job ids."""
    return conn.execute(
        Q("materialization_cancel_run"), {"run_id": pg.run_uuid(run_id), "now": now}
    ).fetchall()


def materialization_resume_approved(
    conn: Conn, materialization_id: int, now: datetime | None
) -> records.Materialization | None:
    """An approved step → ``queued`` again; the row, or ``None`` when it was not waiting."""
    cursor = conn.execute(Q("materialization_resume_approved"), {"id": materialization_id, "now": now})
    return _one(cursor)


def materialization_end_waiting(
    conn: Conn, materialization_id: int, status: StepStatus, error: Mapping[str, Any], now: datetime | None
) -> records.Materialization | None:
    """A rejected or timed-out step ends (``rejected`` or ``failed``) with its error."""
    cursor = conn.execute(
        Q("materialization_end_waiting"),
        {"id": materialization_id, "status": status, "error": Jsonb(dict(error)), "now": now},
    )
    return _one(cursor)


def materialization_orphaned_claim(
    conn: Conn, limit: int
) -> list[tuple[records.Materialization, str | None]]:
    """Claim (SKIP LOCKED) active steps whose job ended without them, with the job's status."""
    rows = conn.execute(Q("materialization_orphaned_claim"), {"limit": limit}).fetchall()
    return [(_row(r), r["job_status"]) for r in rows]


def materialization_set_job(conn: Conn, materialization_id: int, job_id: int) -> None:
    """Record the job of one step."""
    conn.execute(Q("materialization_set_job"), {"id": materialization_id, "job_id": job_id})


def materialization_abandon_run(
    conn: Conn, run_id: str, error: Mapping[str, Any], now: datetime | None
) -> list[records.Materialization]:
    """The active steps of an in-process run whose process is gone → ``failed``."""
    params = {"run_id": pg.run_uuid(run_id), "error": Jsonb(dict(error)), "now": now}
    return _rows(conn.execute(Q("materialization_abandon_run"), params))


def materialization_reopen(
    conn: Conn,
    run_id: str,
    *,
    statuses: Sequence[str],
    error_type: str | None,
    assets: Sequence[str] | None,
) -> list[records.Materialization]:
    """Steps of a run that did not succeed (and what is downstream of them) → ``pending``."""
    params = {
        "run_id": pg.run_uuid(run_id),
        "statuses": list(statuses),
        "error_type": error_type,
        "assets": list(assets) if assets is not None else None,
    }
    return _rows(conn.execute(Q("materialization_reopen"), params))


def materialization_recount_pending(conn: Conn, run_id: str) -> None:
    """Recompute ``pending_upstream`` of a run's pending steps from its step edges."""
    conn.execute(Q("materialization_recount_pending"), {"run_id": pg.run_uuid(run_id)})


def materialization_skip_blocked(
    conn: Conn, run_id: str, error: Mapping[str, Any], now: datetime | None
) -> list[records.Materialization]:
    """Pending steps downstream of a step that ended without success → ``skipped``."""
    params = {"run_id": pg.run_uuid(run_id), "error": Jsonb(dict(error)), "now": now}
    return _rows(conn.execute(Q("materialization_skip_blocked"), params))


def materialization_ready(conn: Conn, run_id: str) -> list[base.StepKey]:
    """The pending steps of a run with no upstream step left."""
    rows = conn.execute(Q("materialization_ready"), {"run_id": pg.run_uuid(run_id)}).fetchall()
    return [(r["asset"], r["partition_key"]) for r in rows]


# -- reading ------------------------------------------------------------------------------------


def materialization_get_step(
    conn: Conn, run_id: str, asset: str, partition_key: str
) -> records.Materialization | None:
    """The step row of (run, asset, partition), or ``None``."""
    cursor = conn.execute(
        Q("materialization_get_step"),
        {"run_id": pg.run_uuid(run_id), "asset": asset, "partition_key": partition_key},
    )
    return _one(cursor)


def materialization_get(conn: Conn, materialization_id: int) -> records.Materialization | None:
    """The row with this id, or ``None``."""
    return _one(conn.execute(Q("materialization_get"), {"id": materialization_id}))


def materialization_get_many(conn: Conn, ids: Sequence[int]) -> dict[int, records.Materialization]:
    """The rows with these ids, by id."""
    return {m.id: m for m in _rows(conn.execute(Q("materialization_get_many"), {"ids": list(ids)}))}


def materialization_latest(conn: Conn, asset: str, partition_key: str) -> records.Materialization | None:
    """The latest succeeded row of (asset, partition_key): ``finished_at DESC, id DESC`` (I8)."""
    return _one(conn.execute(Q("materialization_latest"), {"asset": asset, "partition_key": partition_key}))


def materialization_history(
    conn: Conn, asset: str, partition_key: str, limit: int
) -> list[records.Materialization]:
    """Rows of (asset, partition_key), newest id first."""
    params = {"asset": asset, "partition_key": partition_key, "limit": limit}
    return _rows(conn.execute(Q("materialization_history"), params))


def materialization_run_steps(conn: Conn, run_id: str) -> list[records.Materialization]:
    """Every step of a run, in id order."""
    return _rows(conn.execute(Q("materialization_run_steps"), {"run_id": pg.run_uuid(run_id)}))


def materialization_latest_all(conn: Conn, asset: str | None) -> list[records.Materialization]:
    """The latest succeeded row of every (asset, partition_key), optionally of one asset."""
    return _rows(conn.execute(Q("materialization_latest_all"), {"asset": asset}))


def materialization_newest_all(conn: Conn, asset: str) -> list[records.Materialization]:
    """The newest row (any status) of every partition of ``asset``."""
    return _rows(conn.execute(Q("materialization_newest_all"), {"asset": asset}))


def materialization_succeeded_keys(conn: Conn, asset: str, keys: Sequence[str]) -> set[str]:
    """Which of these keys of ``asset`` have a succeeded materialization."""
    rows = conn.execute(Q("materialization_succeeded_keys"), {"asset": asset, "keys": list(keys)})
    return {r["partition_key"] for r in rows.fetchall()}


def materialization_covered_keys(conn: Conn, asset: str, keys: Sequence[str]) -> set[str]:
    """Which of these keys of ``asset`` succeeded or are in flight."""
    rows = conn.execute(Q("materialization_covered_keys"), {"asset": asset, "keys": list(keys)})
    return {r["partition_key"] for r in rows.fetchall()}
