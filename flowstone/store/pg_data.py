"""The Postgres store's components for data-aware assets (docs/data-aware.md), built together."""

from __future__ import annotations

from flowstone.store import checks, dynamic_partitions, pg

__all__ = ["components"]


def components(db: pg.Database) -> tuple[checks.PostgresChecks, dynamic_partitions.PostgresDynamicPartitions]:
    """``store.checks`` (check results) and ``store.partitions`` (dynamic partition keys)."""
    return checks.PostgresChecks(db), dynamic_partitions.PostgresDynamicPartitions(db)
