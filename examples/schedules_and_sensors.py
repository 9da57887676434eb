"""Schedules and sensors: runs that start without a person, each exactly once.

A ``fs.Schedule`` fires on a cron in a timezone. Each tick submits one queued run, here of
yesterday's partition (``fs.PartitionFromTick(-1)``). A tick fires once, whoever evaluates it
(its row in ``flowstone_schedule_ticks`` is committed with its run), and ticks missed for longer
than ``max_lateness`` are skipped rather than fired late.

A sensor (``@fs.sensor``) is a function evaluated every ``interval_s`` seconds. It returns
``fs.RunRequest`` objects and keeps a durable ``cursor``, committed together with the runs it
submits. A request with a ``key`` is submitted once per sensor, even when an evaluation is
replayed after a crash. ``fs.AutomationCondition.on_missing("asset")`` is a ready-made sensor that
requests missing partitions.

Workers evaluate both on their own (a periodic task, every 10 s by default). Here the evaluation
is driven by hand with ``runtime.schedules.tick(now=...)`` and ``runtime.sensors.tick(now=...)``,
so the example travels through June 2025 in a second. The submitted runs are then executed by a
worker run *in this process* until the queue is empty (``procrastinate_app.run_worker``).

This example uses ``FLOWSTONE_DATABASE_URL``, else the embedded Postgres. Run it with
``python examples/schedules_and_sensors.py``. Run it again and nothing fires: those ticks and
those files were handled already, and that state lives in Postgres.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import flowstone as fs

BERLIN = ZoneInfo("Europe/Berlin")
days = fs.DailyPartitions(start="2025-01-01")


@fs.asset(partitions=days)
def sales_report(context: fs.AssetContext) -> str:
    """Built every night for the day that just ended."""
    return f"sales report for {context.partition}"


@fs.asset(partitions=days)
def imported_orders(context: fs.AssetContext) -> str:
    """Loads the order file of one day, when the sensor sees it arrive."""
    return f"loaded orders-{context.partition}.csv"


nightly = fs.Schedule(
    "nightly_sales_report",
    "sales_report",
    cron="0 2 * * *",  # 02:00 every day...
    timezone="Europe/Berlin",  # ...Berlin wall-clock time (DST handled)
    partition=fs.PartitionFromTick(-1),  # the run of the tick on June 2 builds June 1
)

# When each file lands in the (pretend) bucket the sensor watches.
UPLOADS = {
    "orders-2025-06-01.csv": datetime(2025, 6, 2, 6, 0, tzinfo=UTC),
    "orders-2025-06-02.csv": datetime(2025, 6, 3, 6, 0, tzinfo=UTC),
    "orders-2025-06-03.csv": datetime(2025, 6, 4, 6, 0, tzinfo=UTC),
}


@fs.sensor("imported_orders", interval_s=60)
def new_order_files(context: fs.SensorContext) -> list[fs.RunRequest]:
    """Request one run per file that arrived since the cursor (the newest arrival seen)."""
    seen_until = datetime.fromisoformat(context.cursor) if context.cursor else None
    arrived = sorted(
        (at, name)
        for name, at in UPLOADS.items()
        if at <= context.now and (seen_until is None or at > seen_until)
    )
    if arrived:
        context.set_cursor(arrived[-1][0].isoformat())  # committed with the runs below
    return [
        fs.RunRequest(partition=date.fromisoformat(name[7:17]), key=name, tags={"file": name})
        for _, name in arrived
    ]


defs = fs.Definitions(assets=[sales_report, imported_orders], schedules=[nightly], sensors=[new_order_files])


def main() -> dict[str, list[str]]:
    """Evaluate the schedule and the sensor at chosen times, run what they submitted, and return
    the run ids by schedule or sensor name."""
    submitted: dict[str, list[str]] = {"nightly_sales_report": [], "new_order_files": []}
    with fs.FlowStone(defs) as runtime:
        tick = datetime(2025, 6, 2, 2, 0, tzinfo=BERLIN)
        for now in (tick + timedelta(seconds=5), tick + timedelta(seconds=40), tick + timedelta(days=1)):
            fired = runtime.schedules.tick(now=now)
            print(f"schedules.tick(now={now:%Y-%m-%d %H:%M:%S%z}) -> {_describe(runtime, fired)}")
            submitted["nightly_sales_report"] += fired.get("nightly_sales_report", [])
        for status in runtime.schedules.list(now=tick + timedelta(days=1, seconds=1)):
            print(f"  {status.name}: {status.ticks} tick(s), next at {status.next_tick_at}")

        t0 = datetime(2025, 6, 3, 7, 0, tzinfo=UTC)
        for now in (t0, t0 + timedelta(seconds=30), t0 + timedelta(days=1)):
            requested = runtime.sensors.tick(now=now)
            print(f"sensors.tick(now={now:%Y-%m-%d %H:%M:%S%z}) -> {_describe(runtime, requested)}")
            submitted["new_order_files"] += requested.get("new_order_files", [])
        for state in runtime.sensors.list():
            print(f"  {state.name}: cursor {state.cursor}, {state.requests} request(s)")

        if not any(submitted.values()):
            print("nothing fired: these ticks and files were handled by an earlier run")
            return submitted
        # The runs are queued: a worker in this process runs them and stops when none is left.
        runtime.procrastinate_app.run_worker(wait=False, concurrency=2)
        for run_id in (r for runs in submitted.values() for r in runs):
            run = runtime.run(run_id).wait(timeout=30)
            (step,) = runtime.store.run_steps(run_id)
            print(f"run {run_id[:8]} {run.status}: {runtime.load(step.asset, step.partition)!r}")
    return submitted


def _describe(runtime: fs.FlowStone, fired: dict[str, list[str]]) -> str:
    """'name: asset [partition], ...' for the runs just submitted, or 'nothing'."""
    parts = [
        f"{name}: {step.asset} [{step.partition}]"
        for name, runs in fired.items()
        for run_id in runs
        for step in runtime.store.run_steps(run_id)
    ]
    return ", ".join(parts) or "nothing"


if __name__ == "__main__":
    main()
