"""Data-aware reads and writes of the runtime: ``runtime.check_results(...)`` (asset checks) and
``runtime.partitions`` (dynamic partition keys). Small values handed the store they need."""

from __future__ import annotations

from flowstone import errors
from flowstone.store import base as store_base
from flowstone.store import records

__all__ = ["CheckResults"]


class CheckResults:
    """``runtime.check_results(asset=None, check=None, run_id=None, latest=False, limit=100)``: the
    recorded results of asset checks, newest first; ``latest=True``: the latest result of each
    check per asset and partition."""

    def __init__(self, store: store_base.Store) -> None:
        self._store = store

    def __call__(
        self,
        asset: str | None = None,
        *,
        check: str | None = None,
        run_id: str | None = None,
        latest: bool = False,
        limit: int = 100,
    ) -> list[records.CheckResult]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise errors.ConfigurationError(f"limit must be a positive integer, not {limit!r}")
        if latest:
            rows = self._store.checks.latest(asset)
            return [r for r in rows if check is None or r.check_name == check][:limit]
        return self._store.checks.results(asset, check_name=check, run_id=run_id, limit=limit)
