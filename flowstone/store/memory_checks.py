"""Asset check results of the memory store (``flowstone_check_results`` in Postgres), composed into
it as ``store.checks``; written under the store's lock by its success."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowstone.store import data_types, records

__all__ = ["MemoryChecks"]


class MemoryChecks:
    """Check results in a list, with the reads of :class:`flowstone.store.checks.PostgresChecks`."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._ids = itertools.count(1)
        self._rows: list[records.CheckResult] = []

    def record(
        self, row: records.Materialization, outcomes: Sequence[records.CheckOutcome], at: datetime
    ) -> dict[str, Any] | None:
        """Record the outcomes of ``row``'s checks (one per check and materialization). When a
        blocking check failed (severity error): the error of the steps downstream, skipped."""
        with self._lock:
            seen = {r.check_name for r in self._rows if r.materialization_id == row.id}
            for c in outcomes:
                if c.check_name in seen:
                    continue
                self._rows.append(
                    records.CheckResult(
                        id=next(self._ids),
                        materialization_id=row.id,
                        asset=row.asset,
                        partition_key=row.partition_key,
                        run_id=row.run_id,
                        check_name=c.check_name,
                        passed=c.passed,
                        severity=c.severity,
                        blocking=c.blocking,
                        description=c.description,
                        metadata=dict(c.metadata),
                        error=dict(c.error) if c.error is not None else None,
                        at=at,
                    )
                )
        blocked = next((c for c in outcomes if c.blocks), None)
        return data_types.check_skip_error(row, blocked) if blocked is not None else None

    def results(
        self,
        asset: str | None = None,
        *,
        check_name: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[records.CheckResult]:
        """Check results, newest first."""
        with self._lock:
            rows = [
                r
                for r in self._rows
                if (asset is None or r.asset == asset)
                and (check_name is None or r.check_name == check_name)
                and (run_id is None or r.run_id == run_id)
            ]
        return sorted(rows, key=lambda r: (r.at, r.id), reverse=True)[:limit]

    def latest(self, asset: str | None = None) -> list[records.CheckResult]:
        """The latest result of each check per asset and partition."""
        latest: dict[tuple[str, str, str], records.CheckResult] = {}
        for r in reversed(self.results(asset, limit=len(self._rows))):
            latest[(r.asset, r.check_name, r.partition_key)] = r
        return sorted(latest.values(), key=lambda r: (r.asset, r.check_name, r.partition_key))
