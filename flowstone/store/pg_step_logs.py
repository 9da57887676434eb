"""Step logs on Postgres: captured lines are written in batches, never one round trip per line.

While a step runs, its capture is *tracked*: a background thread (started at the first tracked
capture) writes what every tracked capture holds at least every ``flush_interval_s`` seconds, in
one transaction per flush (a statement per 5,000 lines). What a step captured last is written with
its outcome: inside the success transaction (``joins_success``), or by the step pipeline just
before a failure is recorded. A worker killed with SIGKILL therefore loses at most the last
interval of its running steps' lines. Composed into
:class:`flowstone.store.postgres.PostgresStore` as ``store.logs``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from flowstone import errors
from flowstone.store import base, pg, records, step_logs

__all__ = ["PostgresStepLogs"]

logger = logging.getLogger("flowstone.logs")


class PostgresStepLogs:
    """``flowstone_step_logs`` on a Database, with the periodic flush of running steps."""

    joins_success = True

    def __init__(self, db: pg.Database, *, flush_interval_s: float = 1.0) -> None:
        self.db = db
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush at a time; `untrack` waits for it
        self._tracked: dict[int, base.LogSource] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def write(self, lines: Sequence[records.StepLogLine]) -> None:
        """Write ``lines`` now, in one transaction that commits asynchronously."""
        if not lines:
            return
        with self.db.session("write step logs") as conn, pg.one_trip(conn):
            step_logs.step_logs_async_commit(conn)
            step_logs.step_logs_insert(conn, lines)

    def track(self, source: base.LogSource) -> None:
        """Flush ``source`` every interval until :meth:`untrack`."""
        with self._lock:
            self._tracked[id(source)] = source
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="flowstone-step-logs", daemon=True)
                self._thread.start()

    def untrack(self, source: base.LogSource) -> None:
        """Stop flushing ``source``; waits for a flush in progress, so that what it took from the
        source is written before the caller records the step's outcome."""
        with self._lock:
            self._tracked.pop(id(source), None)
        with self._write_lock:
            pass

    def flush(self) -> int:
        """Write what the tracked sources hold now; the number of lines written."""
        with self._write_lock:
            with self._lock:
                sources = list(self._tracked.values())
            lines = [line for source in sources for line in source.take()]
            if lines:
                self.write(lines)
            return len(lines)

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
        with self.db.session("read step logs") as conn:
            return step_logs.step_logs_of_run(
                conn,
                pg.run_uuid(run_id),
                asset=asset,
                partition_key=partition_key,
                after_id=after_id,
                max_lines=max_lines,
            )

    def close(self) -> None:
        """Stop the flushing thread after a last flush."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._flush_logged()
        self._flush_logged()

    def _flush_logged(self) -> None:
        # Logging writes nothing about a step's outcome (I12): a failed flush loses those lines,
        # says so once per outage, and the step goes on.
        try:
            self.flush()
        except errors.StoreError as exc:
            if not self._failing:
                logger.warning("could not write step logs (%s); lines of running steps are lost", exc)
            self._failing = True
        else:
            self._failing = False
