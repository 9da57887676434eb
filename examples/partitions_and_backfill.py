"""Daily partitions and backfills: in this process, and queued for a worker.

``partitions=fs.DailyPartitions(start=...)`` splits an asset into one partition per day. The asset
receives the day as ``context.partition`` (a ``datetime.date``) and its span as
``context.partition_time_window``; each day is materialized, versioned and queried on its own
(``partition_key`` ``"d:2025-01-03"`` in SQL). A partitioned asset reads the same partition of a
partitioned upstream asset.

A backfill materializes many partitions of one asset and skips those whose latest materialization
succeeded (``force=True`` redoes them):

- ``runtime.backfill_sync(...)`` runs them now, in this process (threads with ``max_workers``);
- ``runtime.backfill(...)`` only enqueues them (one Procrastinate job per partition, or per
  ``partitions_per_job``) and returns a handle; workers run them. Here one
  ``flowstone worker --one-shot`` subprocess works through the queue and exits.

This example uses ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres. Run it from the project
directory with ``python examples/partitions_and_backfill.py`` (the worker imports
``examples.partitions_and_backfill``). Run it again: every partition is then skipped.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import cast

import flowstone as fs

PROJECT = Path(__file__).resolve().parent.parent
FIRST, LAST = date(2025, 1, 1), date(2025, 1, 7)

days = fs.DailyPartitions(start="2025-01-01", end="2025-12-31")


@fs.asset(partitions=days)
def hourly_temperatures(context: fs.AssetContext) -> list[float]:
    """24 made-up readings, one per hour of the partition's day."""
    window = context.partition_time_window  # [00:00, next 00:00) of the day, UTC
    hours = int((window.end - window.start) / timedelta(hours=1))
    day = cast("date", context.partition)
    return [round(day.day / 2 + 4 * math.sin((h - 9) * math.pi / 12), 1) for h in range(hours)]


@fs.asset(partitions=days)
def daily_stats(hourly_temperatures: list[float]) -> dict[str, float]:
    """Min, max and mean of the same day's readings."""
    return {
        "min": min(hourly_temperatures),
        "max": max(hourly_temperatures),
        "mean": round(statistics.fmean(hourly_temperatures), 2),
    }


defs = fs.Definitions(assets=[hourly_temperatures, daily_stats])


def run_one_shot_worker(database_url: str) -> None:
    """``flowstone worker --one-shot``: run queued jobs until none is left, then exit."""
    command = [
        sys.executable, "-m", "flowstone.cli", "worker",
        "--defs", "examples.partitions_and_backfill:defs",
        "--one-shot", "--concurrency", "4", "--log-level", "warning",
    ]  # fmt: skip
    print("$ flowstone worker --defs examples.partitions_and_backfill:defs --one-shot --concurrency 4")
    # The worker must use the database this runtime decided on: pass it explicitly.
    env = dict(os.environ, FLOWSTONE_DATABASE_URL=database_url)
    subprocess.run(command, cwd=PROJECT, env=env, check=True, timeout=120)  # noqa: S603


def main() -> dict[str, dict[str, float]]:
    """One partition, an in-process backfill, a queued backfill run by a worker; return the stats."""
    with fs.FlowStone(defs) as runtime:
        # One partition, with its upstream partition: "2025-01-01" is parsed to date(2025, 1, 1).
        one = runtime.materialize("daily_stats", "2025-01-01", with_upstream=True)
        print(f"materialize daily_stats [2025-01-01]: {one.status} {one.value('daily_stats', FIRST)}")

        # In-process backfill of the upstream asset (2025-01-01 is already done: skipped).
        done = runtime.backfill_sync("hourly_temperatures", start=FIRST, end=LAST, max_workers=4)
        print(
            f"backfill_sync hourly_temperatures {FIRST}..{LAST}: {done.succeeded} succeeded, "
            f"{done.failed} failed, {done.skipped} skipped"
        )

        # Queued backfill of the downstream asset: enqueued now, run by a worker.
        handle = runtime.backfill("daily_stats", start=FIRST, end=LAST)
        queued = handle.status()
        print(f"backfill daily_stats {FIRST}..{LAST}: run {handle.run_id}, steps {queued}")
        if queued:
            run_one_shot_worker(runtime.require_database_url())
        else:
            print("nothing to queue: every partition already succeeded (force=True would redo them)")
        run = handle.wait(timeout=60)
        print(f"run {run.run_id}: {run.status} {handle.status()}")

        stats = {}
        for offset in range((LAST - FIRST).days + 1):
            day = FIRST + timedelta(days=offset)
            stats[day.isoformat()] = cast("dict[str, float]", runtime.load("daily_stats", day))
            print(f"  daily_stats [{day}] {stats[day.isoformat()]}")
        return stats


if __name__ == "__main__":
    main()
