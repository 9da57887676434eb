"""Lifecycle events: stable, documented names sent through Python :mod:`logging`.

Every event is one record of the logger ``flowstone.events`` (at INFO; at DEBUG the frequent
``step.started``, ``io.loaded`` and ``io.stored``) whose
``extra`` holds ``event`` (the name) and the fields of :data:`CATALOGUE` that apply (run id, asset,
partition key, attempt, duration in milliseconds, ...). Any log pipeline can select them by
``record.event``; :class:`JsonFormatter` prints one JSON object per record
(``flowstone worker --log-format json``). Events describe what happened; they never record it
(the step pipeline does, I12), and nothing is built when the logger is disabled.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["CATALOGUE", "JsonFormatter", "emit", "logger"]

logger = logging.getLogger("flowstone.events")

CATALOGUE: dict[str, str] = {
    "run.started": "a run was created (run_id, kind, selection, steps)",
    "run.finished": "a run ended: its last step, a cancel or the sweep (+ status, duration_ms)",
    "step.started": "a step attempt was claimed and starts (run_id, asset, partition, attempt)",
    "step.succeeded": "a step attempt's success was recorded (+ duration_ms)",
    "step.memoized": "memoization skipped a step, reusing a materialization (+ memoized_from)",
    "step.failed": "a step attempt failed for good (+ duration_ms, error_type, error)",
    "step.retrying": "a step attempt failed and will be retried (+ retry_in_s, error_type, error)",
    "io.loaded": "an input was loaded (+ input, upstream_asset, upstream_partition, duration_ms)",
    "io.stored": "an output was stored or prepared (+ io_manager, duration_ms)",
    "approval.requested": "a step asked for an approval and now waits for it (+ request: its message)",
    "approval.decided": "an approval was decided, or its timeout applied (+ approval_id, status, by)",
}
"""Every event name with what it means and the fields it carries beyond its location."""

_DEBUG = frozenset({"step.started", "io.loaded", "io.stored"})


def emit(event: str, **fields: Any) -> None:
    """Log the event ``event`` (a name of :data:`CATALOGUE`) with its fields as ``extra``."""
    # Never above INFO, failures included: an unconfigured process (the CLI) prints none of them
    # through logging's last resort. The frequent ones are DEBUG: a worker at INFO does not pay
    # for three records per step.
    level = logging.DEBUG if event in _DEBUG else logging.INFO
    if not logger.isEnabledFor(level):
        return
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    logger.log(level, "%s %s", event, shown, extra={"event": event, **fields})


_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the record's
    ``extra`` fields (an event's ``event`` and fields among them) and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)
