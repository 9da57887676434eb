"""The Postgres store's reads of steps, lineage and the audit log (a part of
:class:`flowstone.store.postgres.PostgresStore`): each takes a pooled connection and calls the
module of its table."""

from __future__ import annotations

from collections.abc import Sequence

from flowstone.store import audit, lineage, pg, records
from flowstone.store import materializations as mat

__all__ = ["PostgresReads"]


class PostgresReads:
    """Reads of :class:`flowstone.store.base.Store` that only query (mixed into ``PostgresStore``)."""

    db: pg.Database

    def latest(self, asset: str, partition_key: str) -> records.Materialization | None:
        with self.db.session("read latest") as conn:
            return mat.materialization_latest(conn, asset, partition_key)

    def latest_all(self, asset: str | None = None) -> list[records.Materialization]:
        with self.db.session("read latest") as conn:
            return mat.materialization_latest_all(conn, asset)

    def newest_all(self, asset: str) -> list[records.Materialization]:
        with self.db.session("read newest") as conn:
            return mat.materialization_newest_all(conn, asset)

    def history(self, asset: str, partition_key: str, *, limit: int = 20) -> list[records.Materialization]:
        with self.db.session("read history") as conn:
            return mat.materialization_history(conn, asset, partition_key, limit)

    def succeeded_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        if not partition_keys:
            return set()
        with self.db.session("read succeeded partitions") as conn:
            return mat.materialization_succeeded_keys(conn, asset, partition_keys)

    def covered_keys(self, asset: str, partition_keys: Sequence[str]) -> set[str]:
        if not partition_keys:
            return set()
        with self.db.session("read covered partitions") as conn:
            return mat.materialization_covered_keys(conn, asset, partition_keys)

    def lineage_upstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self.db.session("read lineage") as conn:
            return lineage.lineage_upstream(conn, materialization_id, max_depth)

    def lineage_downstream(self, materialization_id: int, *, max_depth: int) -> list[records.LineageRow]:
        with self.db.session("read lineage") as conn:
            return lineage.lineage_downstream(conn, materialization_id, max_depth)

    def audit_events(self, *, run_id: str | None = None, limit: int = 1000) -> list[records.AuditEvent]:
        with self.db.session("read audit log") as conn:
            return audit.audit_list(conn, run_id, limit)
