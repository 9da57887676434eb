"""What both stores offer for data-aware assets (docs/data-aware.md): reading asset check results
(``store.checks``) and the keys of dynamic partitions (``store.partitions``), and the error of the
steps a failed blocking check skipped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from flowstone import errors
from flowstone.store import records

__all__ = ["CheckResults", "DynamicPartitionKeys", "check_skip_error"]


class CheckResults(Protocol):
    """Reading asset check results (``store.checks`` of both stores)."""

    def results(
        self,
        asset: str | None = None,
        *,
        check_name: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[records.CheckResult]:
        """Check results, newest first."""

    def latest(self, asset: str | None = None) -> list[records.CheckResult]:
        """The latest result of each check per asset and partition."""


class DynamicPartitionKeys(Protocol):
    """The keys of dynamic partitions definitions (``store.partitions`` of both stores), encoded."""

    def add(
        self,
        definition: str,
        keys: Sequence[str],
        *,
        actor: str | None = None,
        now: datetime | None = None,
        conn: Any = None,
    ) -> int:
        """Add keys (existing ones are kept); the number added."""

    def remove(self, definition: str, keys: Sequence[str]) -> int:
        """Remove keys; the number removed."""

    def list(self, definition: str) -> list[str]:
        """The keys in the order they were added."""

    def contains(self, definition: str, key: str) -> bool:
        """Whether ``definition`` has ``key``."""


def check_skip_error(done: records.Materialization, check: records.CheckOutcome) -> dict[str, Any]:
    """The error stored on steps skipped because ``done`` failed its blocking check ``check``."""
    return errors.CheckBlockedError(
        f"upstream step {done.asset} [{done.partition_key}] failed its blocking check {check.check_name!r}",
        run_id=done.run_id,
        context={
            "upstream_asset": done.asset,
            "upstream_partition_key": done.partition_key,
            "check": check.check_name,
        },
    ).to_dict()
