"""Step logs of the memory store: kept in the process, in a list, with the same reads as Postgres."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

from flowstone.store import base, records

__all__ = ["MemoryStepLogs"]


class MemoryStepLogs:
    """Lines stored at once (nothing to batch); ``step_of`` finds a materialization by id."""

    joins_success = False

    def __init__(self, step_of: Callable[[int], records.Materialization | None]) -> None:
        self._step_of = step_of
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._lines: list[records.StepLog] = []

    def write(self, lines: Sequence[records.StepLogLine]) -> None:
        """Store ``lines``."""
        with self._lock:
            for line in lines:
                step = self._step_of(line.materialization_id)
                if step is not None:
                    found = records.StepLog(
                        next(self._ids), step.run_id, step.asset, step.partition_key, line
                    )
                    self._lines.append(found)

    def track(self, source: base.LogSource) -> None:
        """Nothing to do: lines are written when the step ends."""

    def untrack(self, source: base.LogSource) -> None:
        """Nothing to do."""

    def read(
        self,
        run_id: str,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        after_id: int | None = None,
        max_lines: int = 100_000,
    ) -> list[records.StepLog]:
        """See :meth:`flowstone.store.base.StepLogs.read`."""
        with self._lock:
            found = [
                log
                for log in self._lines
                if log.run_id == run_id
                and (asset is None or log.asset == asset)
                and (partition_key is None or log.partition_key == partition_key)
                and log.id > (after_id or 0)
            ]
        found.sort(key=lambda log: (log.line.materialization_id, log.line.attempt, log.line.seq))
        return found[:max_lines]
