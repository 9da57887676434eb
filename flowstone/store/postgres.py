"""The Postgres store: one method per named query (``sql/queries/*.sql``), errors translated here."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from flowstone import errors
from flowstone.identifiers import QualifiedName
from flowstone.store import base, pg_rows, records, sqlfiles
from flowstone.store import outputs as store_outputs

if TYPE_CHECKING:
    from flowstone.io.base import PreparedOutput

__all__ = ["PostgresStore", "materialization_from_row", "success_params", "translate_errors"]

# Shared with the queue and approval store modules, which import them from here.
materialization_from_row = pg_rows.materialization_from_row
success_params = pg_rows.success_params
translate_errors = pg_rows.translate_errors
run_from_row = pg_rows.run_from_row
lineage_from_row = pg_rows.lineage_from_row
maybe_transaction = pg_rows.maybe_transaction
run_uuid = pg_rows.run_uuid
keys_of = pg_rows.keys_of

Q = sqlfiles.query
Row = dict[str, Any]
Conn = psycopg.Connection[Row]


def _assets_keys(wanted: Sequence[base.StepKey]) -> dict[str, list[str]]:
    return {"assets": [a for a, _ in wanted], "keys": [k for _, k in wanted]}


class PostgresStore(base.Store):
    """Metadata in Postgres through a small connection pool (autocommit; explicit transactions)."""

    kind = "postgres"

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._max = max(1, max_connections)
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._prefetch = threading.local()  # outputs fetched with a step's inputs, per thread

    def _get_pool(self) -> psycopg_pool.ConnectionPool[Conn]:
        with self._lock:
            if self._pool is None:
                pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._max,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    connection_class=psycopg.Connection[Row],
                    open=False,
                    name="flowstone-store",
                )
                with translate_errors("connect"):
                    pool.open(wait=True, timeout=30)
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled autocommit connection (use ``conn.transaction()`` for several statements)."""
        with self._get_pool().connection() as conn:
            yield conn

    def close(self) -> None:
        """Close the pool; the store reopens it if used again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _one(self, action: str, name: str, params: Mapping[str, Any]) -> Row | None:
        with translate_errors(action), self.connection() as conn:
            return conn.execute(Q(name), params).fetchone()

    def _all(self, action: str, name: str, params: Mapping[str, Any]) -> list[Row]:
        with translate_errors(action), self.connection() as conn:
            return conn.execute(Q(name), params).fetchall()

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[base.StepKey, base.StepKey]] = (),
        now: datetime | None = None,
    ) -> records.Run:
        with translate_errors("create run"), self.connection() as conn, conn.transaction():
            self.insert_run(conn, run, steps, edges=edges, now=now)
        created = self.get_run(run.run_id)
        if created is None:  # pragma: no cover - the insert above committed or raised
            raise errors.StoreError(f"run {run.run_id} vanished after insert")
        return created

    def insert_run(
        self,
        conn: Conn,
        run: records.NewRun,
        steps: Sequence[records.PlannedStep],
        *,
        edges: Sequence[tuple[base.StepKey, base.StepKey]] = (),
        now: datetime | None = None,
    ) -> None:
        """Insert a run, its planned steps, their edges and the audit event on ``conn`` (caller's
        transaction)."""
        run_key = run_uuid(run.run_id)
        conn.execute(
            Q("run_insert"),
            {
                "run_id": run_key,
                "kind": run.kind,
                "selection": list(run.selection),
                "config": Jsonb(run.config),
                "tags": Jsonb(run.tags),
                "requested_by": run.requested_by,
                "status": run.status,
                "now": now,
            },
        )
        with conn.cursor() as cur:
            cur.executemany(
                Q("materialization_plan"),
                [
                    {
                        "run_id": run_key,
                        "asset": s.asset,
                        "partition_key": s.partition_key,
                        "pending_upstream": s.pending_upstream,
                        "code_version": s.code_version,
                        "now": now,
                    }
                    for s in steps
                ],
            )
        if edges:
            with conn.cursor() as cur:
                cur.executemany(
                    Q("step_edges_insert"),
                    [
                        {
                            "run_id": run_key,
                            "upstream_asset": up[0],
                            "upstream_partition_key": up[1],
                            "asset": down[0],
                            "partition_key": down[1],
                        }
                        for up, down in edges
                    ],
                )
        conn.execute(
            Q("audit_insert"),
            self._audit_params(
                "run.requested",
                actor=run.requested_by,
                run_id=run.run_id,
                details={
                    "kind": run.kind,
                    "selection": list(run.selection),
                    # a bulk backfill writes its steps after the run (COPY): count from its tags
                    "steps": len(steps) or int(run.tags.get("partitions", 0)),
                },
                now=now,
            ),
        )

    def get_run(self, run_id: str) -> records.Run | None:
        row = self._one("read run", "run_get", {"run_id": run_uuid(run_id)})
        return run_from_row(row) if row else None

    def list_runs(self, *, limit: int = 20) -> list[records.Run]:
        return [run_from_row(r) for r in self._all("list runs", "run_list", {"limit": limit})]

    def finish_run(self, run_id: str, *, actor: str, now: datetime | None = None) -> records.Run | None:
        row = self._one("finish run", "run_finish", {"run_id": run_uuid(run_id), "actor": actor, "now": now})
        return run_from_row(row) if row else None

    # -- steps --------------------------------------------------------------------------------

    def start_step(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        code_version: str | None = None,
        reclaim: bool = False,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        row = self._one(
            "start step",
            "materialization_start",
            {
                "run_id": run_uuid(run_id),
                "asset": asset,
                "partition_key": partition_key,
                "code_version": code_version,
                "reclaim": reclaim,
                "now": now,
            },
        )
        return materialization_from_row(row) if row else None

    def start_step_with_inputs(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        wanted: Sequence[base.StepKey],
        code_version: str | None = None,
        reclaim: bool = False,
        now: datetime | None = None,
    ) -> tuple[records.Materialization | None, dict[base.StepKey, tuple[records.Materialization, bool]]]:
        """The claim and the input lookup in one pipelined round trip; the stored outputs of the
        inputs (Postgres IO manager) come along and are kept for this thread's next loads."""
        run_key = run_uuid(run_id)
        with translate_errors("start step"), self.connection() as conn, conn.pipeline():
            claim = conn.execute(
                Q("materialization_start"),
                {
                    "run_id": run_key,
                    "asset": asset,
                    "partition_key": partition_key,
                    "code_version": code_version,
                    "reclaim": reclaim,
                    "now": now,
                },
            )
            inputs = (
                conn.execute(Q("materialization_inputs"), {"run_id": run_key, **_assets_keys(wanted)})
                if wanted
                else None
            )
            row = claim.fetchone()
            rows = inputs.fetchall() if inputs is not None else []
        return (materialization_from_row(row) if row else None), self._found(rows)

    def _found(self, rows: Sequence[Row]) -> dict[base.StepKey, tuple[records.Materialization, bool]]:
        prefetched = {
            r["id"]: (r["output_format"], r["output_value"], r["output_data"])
            for r in rows
            if r["output_format"]
        }
        self._prefetch.outputs = prefetched
        return {
            (r["asset"], r["partition_key"]): (materialization_from_row(r), bool(r["in_run"])) for r in rows
        }

    def get_step(self, run_id: str, asset: str, partition_key: str) -> records.Materialization | None:
        row = self._one(
            "read step",
            "materialization_get_step",
            {"run_id": run_uuid(run_id), "asset": asset, "partition_key": partition_key},
        )
        return materialization_from_row(row) if row else None

    def get_materialization(self, materialization_id: int) -> records.Materialization | None:
        row = self._one("read materialization", "materialization_get", {"id": materialization_id})
        return materialization_from_row(row) if row else None

    def find_inputs(
        self, run_id: str, wanted: Sequence[base.StepKey]
    ) -> dict[base.StepKey, tuple[records.Materialization, bool]]:
        if not wanted:
            return {}
        rows = self._all(
            "find inputs", "materialization_inputs", {"run_id": run_uuid(run_id), **_assets_keys(wanted)}
        )
        return self._found(rows)

    def succeed_step(
        self,
        step: records.Materialization,
        *,
        output_ref: Mapping[str, Any],
        metadata: Mapping[str, Any],
        lineage: Sequence[tuple[int, str]],
        actor: str,
        output: PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        # One statement (data-modifying CTEs) is one transaction in autocommit mode: the status,
        # the lineage edges, the audit event and a flowstone_outputs value commit together or not
        # at all (I11). Rows for a user table need a few statements: an explicit transaction.
        rows_mode = output is not None and output.format == "rows"
        with (
            translate_errors("record success"),
            self.connection() as conn,
            maybe_transaction(conn, rows_mode),
        ):
            return self.succeed_step_on(
                conn,
                step,
                output_ref=output_ref,
                metadata=metadata,
                lineage=lineage,
                actor=actor,
                output=output,
                now=now,
            )

    def succeed_step_on(
        self,
        conn: Conn,
        step: records.Materialization,
        *,
        output_ref: Mapping[str, Any],
        metadata: Mapping[str, Any],
        lineage: Sequence[tuple[int, str]],
        actor: str,
        output: PreparedOutput | None = None,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        """The success statement on ``conn``, inside the caller's transaction."""
        item = base.Success(step, output_ref, metadata, lineage, output)
        row = conn.execute(Q("materialization_succeed"), success_params(item, actor, now)).fetchone()
        if row is None:
            return None
        if output is not None and output.format == "rows":
            store_outputs.write_rows(
                conn, output, materialization_id=step.id, asset=step.asset, partition_key=step.partition_key
            )
        return materialization_from_row(row)

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
        with translate_errors("read rows"), self.connection() as conn:
            return store_outputs.read_rows(
                conn,
                table,
                partition_column,
                asset=asset,
                partition_key=partition_key,
                materialization_id=materialization_id,
            )

    # -- retention ------------------------------------------------------------------------------

    def gc_candidates(self, keep_last: int) -> list[store_outputs.GcCandidate]:
        with translate_errors("plan gc"), self.connection() as conn:
            return store_outputs.gc_plan(conn, keep_last)

    def delete_postgres_outputs(self, ids: Sequence[int]) -> list[int]:
        with translate_errors("delete outputs"), self.connection() as conn, conn.transaction():
            return store_outputs.gc_delete_postgres_outputs(conn, ids)

    def mark_outputs_deleted(self, ids: Sequence[int], *, now: datetime | None = None) -> None:
        if ids:
            with translate_errors("record gc"), self.connection() as conn:
                conn.execute(Q("output_mark_deleted"), {"ids": list(ids), "now": now})

    def read_output(self, materialization_id: int) -> tuple[str, object, bytes | None] | None:
        """(format, JSON value, bytes) of a stored output, or ``None``. Outputs fetched with the
        inputs of this thread's current step are served without another round trip (outputs are
        immutable while their row is the one read)."""
        prefetched: dict[int, tuple[str, object, bytes | None]] = getattr(self._prefetch, "outputs", {})
        hit = prefetched.pop(materialization_id, None)
        if hit is not None:
            return hit
        row = self._one("read output", "output_get", {"id": materialization_id})
        if row is None:
            return None
        return row["format"], row["value"], row["data"]

    def delete_output(self, materialization_id: int) -> None:
        """Remove a stored output (idempotent)."""
        with translate_errors("delete output"), self.connection() as conn:
            conn.execute(Q("output_delete"), {"id": materialization_id})

    def fail_step(
        self,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        skip: Sequence[base.StepKey],
        actor: str,
        now: datetime | None = None,
    ) -> records.Materialization | None:
        with translate_errors("record failure"), self.connection() as conn, conn.transaction():
            failed = self._fail_on(conn, step, error=error, actor=actor, now=now)
            if failed is None:
                return None
            if skip:
                self._skip_on(conn, step.run_id, skip, error=base.skip_error(failed), now=now)
            return failed

    @staticmethod
    def _fail_on(
        conn: Conn,
        step: records.Materialization,
        *,
        error: Mapping[str, Any],
        actor: str,
        now: datetime | None,
    ) -> records.Materialization | None:
        """The failure statement (``failed`` + audit) on ``conn``; ``None`` if the attempt lost the step."""
        row = conn.execute(
            Q("materialization_fail"),
            {"id": step.id, "attempt": step.attempt, "error": Jsonb(dict(error)), "actor": actor, "now": now},
        ).fetchone()
        return materialization_from_row(row) if row else None

    def _skip_on(
        self,
        conn: Conn,
        run_id: str,
        steps: Sequence[base.StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None,
    ) -> list[records.Materialization]:
        assets, keys = keys_of(steps)
        rows = conn.execute(
            Q("materialization_skip"),
            {
                "run_id": run_uuid(run_id),
                "assets": assets,
                "keys": keys,
                "error": Jsonb(dict(error)),
                "now": now,
            },
        ).fetchall()
        return [materialization_from_row(r) for r in rows]

    def skip_steps(
        self,
        run_id: str,
        steps: Sequence[base.StepKey],
        *,
        error: Mapping[str, Any],
        now: datetime | None = None,
    ) -> list[records.Materialization]:
        if not steps:
            return []
        with translate_errors("skip steps"), self.connection() as conn:
            return self._skip_on(conn, run_id, steps, error=error, now=now)

    def step_edges(self, run_id: str) -> list[tuple[base.StepKey, base.StepKey]]:
        rows = self._all("read step edges", "step_edges_of_run", {"run_id": run_uuid(run_id)})
        return [
            ((r["upstream_asset"], r["upstream_partition_key"]), (r["asset"], r["partition_key"]))
            for r in rows
        ]

    def run_steps(self, run_id: str) -> list[records.Materialization]:
        rows = self._all("read run steps", "materialization_run_steps", {"run_id": run_uuid(run_id)})
        return [materialization_from_row(r) for r in rows]

    # -- queries ------------------------------------------------------------------------------

    def latest(self, asset: str, partition_key: str) -> records.Materialization | None:
        row = self._one(
            "read latest", "materialization_latest", {"asset": asset, "partition_key": partition_key}
        )
        return materialization_from_row(row) if row else None

    def latest_all(self, asset: str | None = None) -> list[records.Materialization]:
        rows = self._all("read latest", "materialization_latest_all", {"asset": asset})
        return [materialization_from_row(r) for r in rows]

    def newest_all(self, asset: str) -> list[records.Materialization]:
        rows = self._all("read newest", "materialization_newest_all", {"asset": asset})
        return [materialization_from_row(r) for r in rows]

    def history(self, asset: str, partition_key: str, *, limit: int = 20) -> list[records.Materialization]:
        rows = self._all(
            "read history",
            "materialization_history",
            {"asset": asset, "partition_key": partition_key, "limit": limit},
        )
        return [materialization_from_row(r) for r in rows]

    def succeeded_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        if not partition_keys:
            return set()
        rows = self._all(
            "read succeeded partitions",
            "materialization_succeeded_keys",
            {"asset": asset, "keys": list(partition_keys)},
        )
        return {r["partition_key"] for r in rows}

    def covered_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        if not partition_keys:
            return set()
        rows = self._all(
            "read covered partitions",
            "materialization_covered_keys",
            {"asset": asset, "keys": list(partition_keys)},
        )
        return {r["partition_key"] for r in rows}

    def lineage_upstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        rows = self._all(
            "read lineage", "lineage_upstream", {"id": materialization_id, "max_depth": max_depth}
        )
        return [lineage_from_row(r, "reader_id") for r in rows]

    def lineage_downstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        rows = self._all(
            "read lineage", "lineage_downstream", {"id": materialization_id, "max_depth": max_depth}
        )
        return [lineage_from_row(r, "source_id") for r in rows]

    # -- audit --------------------------------------------------------------------------------

    @staticmethod
    def _audit_params(
        event: str,
        *,
        actor: str,
        run_id: str | None = None,
        materialization_id: int | None = None,
        asset: str | None = None,
        partition_key: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        return {
            "event": event,
            "actor": actor,
            "run_id": run_uuid(run_id) if run_id else None,
            "materialization_id": materialization_id,
            "asset": asset,
            "partition_key": partition_key,
            "details": Jsonb(dict(details or {})),
            "now": now,
        }

    def audit(
        self,
        event: str,
        *,
        actor: str,
        run_id: str | None = None,
        materialization_id: int | None = None,
        asset: str | None = None,
        partition_key: str | None = None,
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        row = self._one(
            "write audit event",
            "audit_insert",
            self._audit_params(
                event,
                actor=actor,
                run_id=run_id,
                materialization_id=materialization_id,
                asset=asset,
                partition_key=partition_key,
                details=details,
                now=now,
            ),
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns a row
            raise errors.StoreError("audit insert returned nothing")
        return int(row["id"])

    def audit_events(self, *, run_id: str | None = None, limit: int = 1000) -> list[records.AuditEvent]:
        rows = self._all(
            "read audit log",
            "audit_list",
            {"run_id": run_uuid(run_id) if run_id else None, "limit": limit},
        )
        return [
            records.AuditEvent(
                id=r["id"],
                at=r["at"],
                event=r["event"],
                actor=r["actor"],
                run_id=str(r["run_id"]) if r["run_id"] else None,
                materialization_id=r["materialization_id"],
                asset=r["asset"],
                partition_key=r["partition_key"],
                details=r["details"],
            )
            for r in rows
        ]
