"""What the operator commands and the web UI read (``sql/queries/reports.sql``), Postgres only:
runs with their step counts, a per-asset summary, an asset's partitions, live workers. Composed
into :class:`flowstone.store.postgres.PostgresStore` as ``store.reports``. Every query reads a
bounded number of rows through an index, or aggregates once over the table of partitions
(``report_assets``, migration 0014)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowstone.status import StepStatus
from flowstone.store import pg, records
from flowstone.store.pg import Q

__all__ = ["AssetSummary", "PartitionRow", "PartitionState", "PostgresReports", "RunRow"]


@dataclass(frozen=True, slots=True)
class RunRow:
    """A run with its steps counted by status."""

    run: records.Run
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class AssetSummary:
    """One asset: its partitions by the status of their newest step, how many ever succeeded, and
    when it last finished and last succeeded."""

    asset: str
    by_status: dict[str, int]
    succeeded_partitions: int
    last_finished_at: datetime | None
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class PartitionRow:
    """The newest step of one partition as a listing shows it, and when the partition last
    succeeded (``metadata``: the step's, when asked for, else empty)."""

    id: int
    run_id: str
    partition_key: str
    status: StepStatus
    duration_ms: float | None
    last_success_at: datetime | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition's newest step status and code version, and when it last succeeded."""

    partition_key: str
    status: StepStatus
    code_version: str | None
    last_success_at: datetime | None


class PostgresReports:
    """The read-only reports, on a Database."""

    def __init__(self, db: pg.Database) -> None:
        self.db = db

    def runs(
        self,
        *,
        limit: int,
        status: str | None = None,
        asset: str | None = None,
        since: datetime | None = None,
    ) -> list[RunRow]:
        """The newest runs first (at most ``limit``), filtered when the filters are given."""
        params = {"limit": limit, "status": status, "asset": asset, "since": since}
        with self.db.session("list runs") as conn:
            rows = conn.execute(Q("report_runs"), params).fetchall()
        return [RunRow(run=pg.run_from_row(r), counts=dict(r["counts"])) for r in rows]

    def assets(self, asset: str | None = None) -> dict[str, AssetSummary]:
        """A summary of every asset that has a step (only ``asset``, when given), by name."""
        with self.db.session("summarise assets") as conn:
            # Never a prepared (generic) plan: with the asset given, only a plan made for that
            # value reads its partitions through the index instead of every asset's.
            rows = conn.execute(Q("report_assets"), {"asset": asset}, prepare=False).fetchall()
        found: dict[str, AssetSummary] = {}
        for r in rows:
            prior = found.get(r["asset"])
            by_status = dict(prior.by_status) if prior else {}
            by_status[r["status"]] = r["partitions"]
            finished = [t for t in (r["last_finished_at"], prior.last_finished_at if prior else None) if t]
            found[r["asset"]] = AssetSummary(
                asset=r["asset"],
                by_status=by_status,
                succeeded_partitions=r["succeeded_partitions"],
                last_finished_at=max(finished) if finished else None,
                last_success_at=r["last_success_at"],
            )
        return found

    def partitions(
        self, asset: str, *, status: StepStatus | None = None, limit: int = 10_000, metadata: bool = False
    ) -> list[PartitionRow]:
        """The newest step of each partition of ``asset`` in key order (one status, when given;
        with its ``metadata`` when asked for)."""
        params = {"asset": asset, "status": status, "limit": limit, "metadata": metadata}
        with self.db.session("list partitions") as conn:
            rows = conn.execute(Q("report_partitions"), params).fetchall()
        return [
            PartitionRow(
                id=r["id"],
                run_id=str(r["run_id"]),
                partition_key=r["partition_key"],
                status=StepStatus(r["status"]),
                duration_ms=r["duration_ms"],
                last_success_at=r["last_success_at"],
                metadata=r["metadata"] or {},
            )
            for r in rows
        ]

    def partition_states(self, asset: str) -> list[PartitionState]:
        """Every partition of ``asset`` that has a step, in key order: its newest step's status and
        code version and its latest success (the partition grid; lighter than :meth:`partitions`)."""
        with self.db.session("read partition states") as conn:
            rows = conn.execute(Q("report_partition_states"), {"asset": asset}).fetchall()
        return [
            PartitionState(
                partition_key=r["partition_key"],
                status=StepStatus(r["status"]),
                code_version=r["code_version"],
                last_success_at=r["last_success_at"],
            )
            for r in rows
        ]

    def run_steps(self, run_id: str, *, limit: int) -> list[records.Materialization]:
        """At most ``limit`` steps of a run: those not succeeded first, then in id order."""
        params = {"run_id": pg.run_uuid(run_id), "limit": limit}
        with self.db.session("list a run's steps") as conn:
            rows = conn.execute(Q("report_run_steps"), params).fetchall()
        return [pg.materialization_from_row(r) for r in rows]

    def decided_approvals(self, *, limit: int) -> list[records.Approval]:
        """The latest decided approvals (at most ``limit``), newest decision first."""
        with self.db.session("list decided approvals") as conn:
            rows = conn.execute(Q("report_approvals_decided"), {"limit": limit}).fetchall()
        return [pg.approval_from_row(r) for r in rows]

    def live_workers(self, within_s: float) -> int:
        """How many Procrastinate workers sent a heartbeat in the last ``within_s`` seconds."""
        with self.db.session("count live workers") as conn:
            row = conn.execute(Q("report_workers"), {"within_s": within_s}).fetchone()
        return int(row["alive"]) if row else 0

    def run_approvals(self, run_id: str) -> list[records.Approval]:
        """The approvals of a run's steps, oldest first."""
        with self.db.session("list a run's approvals") as conn:
            rows = conn.execute(Q("report_run_approvals"), {"run_id": pg.run_uuid(run_id)}).fetchall()
        return [pg.approval_from_row(r) for r in rows]
