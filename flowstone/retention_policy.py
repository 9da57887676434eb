"""A retention policy as declared in code: ``fs.Retention(...)`` given to ``FlowStone(retention=...)``
and applied by :func:`flowstone.prune.prune` (``flowstone db prune`` and the workers' maintenance)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flowstone import errors

__all__ = ["Retention"]


@dataclass(frozen=True)
class Retention:
    """A retention policy. ``runs_days``: finished runs older than this go (with their steps,
    edges, stored outputs and approvals), except the versions kept below; ``assets`` overrides
    ``runs_days`` per asset (``{"raw_events": 7}``); ``keep_last_per_partition``: succeeded
    versions of each partition that keep their output and are never pruned; ``jobs_days``: ended
    Procrastinate jobs older than this go with their events (``None``: kept); ``logs_days``: step
    log lines older than this go (``None``: kept as long as their step)."""

    runs_days: float = 90
    keep_last_per_partition: int = 3
    jobs_days: float | None = 7
    logs_days: float | None = 30
    assets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        days = [self.runs_days, *(v for v in (self.jobs_days, self.logs_days) if v is not None)]
        days += list(self.assets.values())
        if any(isinstance(d, bool) or not isinstance(d, int | float) or d < 0 for d in days):
            raise errors.ConfigurationError("retention periods are numbers of days >= 0")
        if not isinstance(self.keep_last_per_partition, int) or self.keep_last_per_partition < 1:
            raise errors.ConfigurationError("keep_last_per_partition must be at least 1 (latest() needs one)")
