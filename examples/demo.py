"""FlowStone end to end in under a minute (``make demo``).

The pipeline: a shop's daily orders, fetched through a resource and turned into daily KPIs, which
are published only after a person approves. Every asset is partitioned by day::

    raw_orders -> clean_orders -> revenue ----> daily_kpis -> published_kpis (approval gate)
                               \\-> order_count -/

What the demo does, each step with the API or the command a user would type:

1. ``flowstone db upgrade``: Procrastinate's schema and FlowStone's migrations (idempotent).
2. Starts a worker subprocess: ``flowstone worker --defs examples.demo:defs --concurrency 4``.
3. Submits a run of ``published_kpis`` (with its upstream) for 2025-01-08: it goes through the
   diamond and stops at the approval gate, waiting (a state, not an error).
4. Meanwhile, backfills the pipeline up to ``daily_kpis`` for the 7 days before, with a live
   progress display: one run of 35 steps, each step queued when its upstream steps succeeded.
5. Approves the gate from the command line: ``flowstone approvals approve ID --by demo``; the
   worker finishes the run.
6. Prints the status table (``flowstone status``) and the lineage of the published KPIs
   (``flowstone lineage published_kpis --partition 2025-01-08``).
7. Stops the worker with SIGTERM (it finishes its jobs and exits).

Without configuration it uses the embedded Postgres in ``$FLOWSTONE_HOME`` (default
``./.flowstone``), which keeps running afterwards (``flowstone db stop`` stops it); with
``FLOWSTONE_DATABASE_URL`` it uses that server. Every run of the demo submits new runs, so it can
run any number of times. Run it from the project directory: ``python examples/demo.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import flowstone as fs
from flowstone.cli import ProgressBar  # the progress display of `flowstone backfill`

PROJECT = Path(__file__).resolve().parent.parent
DEFS_SPEC = "examples.demo:defs"  # how the worker and the CLI find these definitions
RUN_DAY = date(2025, 1, 8)
BACKFILL_DAYS = [RUN_DAY - timedelta(days=n) for n in range(7, 0, -1)]  # 2025-01-01 .. 2025-01-07

FINISHED = ("succeeded", "failed", "skipped", "rejected", "cancelled")  # step statuses that are final

daily = fs.DailyPartitions(start="2025-01-01")
Order = dict[str, Any]


# -- the resource: a (pretend) shop API client, configured in Definitions ------------------------


class ShopClient:
    """Deterministic fake orders instead of HTTP calls."""

    def __init__(self, orders_per_day: int, latency_s: float) -> None:
        self.orders_per_day = orders_per_day
        self.latency_s = latency_s

    def orders(self, day: date) -> list[Order]:
        time.sleep(self.latency_s)  # the network
        return [
            {
                "id": f"{day:%Y%m%d}-{n:03d}",
                "amount": Decimal((day.day * 37 + n * 53) % 120 - 10) + Decimal("0.99"),
                "test": n % 17 == 0,
            }
            for n in range(self.orders_per_day)
        ]


class ShopApi(fs.Resource):
    """Settings of the shop API; ``setup`` builds the client each step receives."""

    orders_per_day: int = 40
    latency_s: float = 0.1

    def setup(self) -> ShopClient:
        return ShopClient(self.orders_per_day, self.latency_s)


# -- the assets: a diamond, partitioned by day, with an approval gate at the end ------------------


@fs.asset(partitions=daily, resources=["shop"])
def raw_orders(context: fs.AssetContext) -> list[Order]:
    """The day's orders, from the shop API."""
    shop = cast("ShopClient", context.resources["shop"])
    return shop.orders(cast("date", context.partition))


@fs.asset(partitions=daily)
def clean_orders(context: fs.AssetContext, raw_orders: list[Order]) -> list[Order]:
    """Without test orders and refunds."""
    kept = [o for o in raw_orders if not o["test"] and o["amount"] > 0]
    context.add_metadata(dropped=len(raw_orders) - len(kept))
    return kept


@fs.asset(partitions=daily)
def revenue(clean_orders: list[Order]) -> Decimal:
    """The day's revenue."""
    return sum((o["amount"] for o in clean_orders), Decimal(0))


@fs.asset(partitions=daily)
def order_count(clean_orders: list[Order]) -> int:
    """The day's number of orders."""
    return len(clean_orders)


@fs.asset(partitions=daily)
def daily_kpis(revenue: Decimal, order_count: int) -> dict[str, object]:
    """Where the diamond joins: runs once both branches succeeded."""
    average = (revenue / order_count).quantize(Decimal("0.01")) if order_count else Decimal(0)
    return {"revenue": revenue, "orders": order_count, "average_order": average}


@fs.asset(
    partitions=daily,
    approval=fs.ApprovalGate(message="Publish the daily KPIs to the dashboard?", timeout=timedelta(hours=1)),
)
def published_kpis(context: fs.AssetContext, daily_kpis: dict[str, object]) -> dict[str, object]:
    """Runs only after someone approved (the gate asks before the function runs)."""
    return {"day": context.partition, **daily_kpis}


defs = fs.Definitions(
    assets=[raw_orders, clean_orders, revenue, order_count, daily_kpis, published_kpis],
    resources={"shop": ShopApi()},
)


# -- the demo -----------------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"== {title}")


def flowstone_cli(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``flowstone ARGS`` (as ``python -m flowstone.cli``), echo and return its output."""
    say("$ flowstone " + " ".join(args))
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "flowstone.cli", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    for line in (done.stdout + done.stderr).splitlines():
        say(f"  {line}")
    if done.returncode != 0:
        raise SystemExit(f"flowstone {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def watch(handle: fs.RunHandle, label: str, worker: subprocess.Popen[bytes], timeout: float = 40) -> fs.Run:
    """Show a live progress bar of a queued run until all its steps are done; return the run."""
    bar = ProgressBar(label)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited (status {worker.returncode}) before the run was done")
        counts = handle.status()  # steps by status, e.g. {"succeeded": 12, "queued": 4, "pending": 19}
        finished = sum(n for status, n in counts.items() if status in FINISHED)
        bar(finished, sum(counts.values()))
        if finished == sum(counts.values()):
            break
        time.sleep(0.1)
    return handle.wait(timeout=max(1.0, deadline - time.monotonic()))


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``flowstone worker`` in the background, its log (stderr) in ``log_path``."""
    command = ["worker", "--defs", DEFS_SPEC, "--concurrency", "4"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    say(f"$ flowstone {' '.join(command)} 2> {log_path} &")
    with log_path.open("w") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "flowstone.cli", *command], cwd=PROJECT, env=env, stderr=log
        )
    say(f"worker pid {worker.pid}")
    return worker


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM: the worker finishes the jobs it runs and exits. Its exit status."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def main() -> int:
    started = time.monotonic()
    step("1. migrate the database")
    flowstone_cli("db", "upgrade")

    runtime = fs.FlowStone(defs)
    # Every process of the demo uses the database this runtime decided on.
    env = dict(os.environ, FLOWSTONE_DATABASE_URL=runtime.require_database_url())

    step("2. start a worker")
    log_path = Path(runtime.settings.home) / "demo-worker.log"
    worker = start_worker(env, log_path)
    try:
        step(f"3. submit a run of published_kpis [{RUN_DAY}] with its upstream")
        run = runtime.submit("published_kpis", [RUN_DAY], with_upstream=True, tags={"demo": "run"})
        say(f"run {run.run_id}: {run.status()}")

        step(f"4. backfill the pipeline up to daily_kpis for {BACKFILL_DAYS[0]} .. {BACKFILL_DAYS[-1]}")
        # runtime.backfill() enqueues the missing partitions of ONE asset; to rebuild a pipeline for a
        # range of days, submit the selection with its upstream for each day: one run, 7 x 5 steps.
        backfill = runtime.submit("daily_kpis", BACKFILL_DAYS, with_upstream=True, tags={"demo": "backfill"})
        done = watch(backfill, f"backfill {len(BACKFILL_DAYS)} days", worker)
        say(f"run {backfill.run_id}: {done.status} {backfill.status()}")

        step("5. the run waits at the approval gate: approve it from the command line")
        waiting = run.wait(timeout=30)
        say(f"run {run.run_id}: {waiting.status} {run.status()}")
        (approval,) = [a for a in runtime.approvals.list() if a.run_id == run.run_id]
        flowstone_cli("approvals", "list", "--defs", DEFS_SPEC, env=env)
        flowstone_cli("approvals", "approve", str(approval.id), "--by", "demo", "--defs", DEFS_SPEC, env=env)
        finished = run.wait(timeout=30)  # the worker runs the approved step
        say(f"run {run.run_id}: {finished.status} {run.status()}")
        say(f"published_kpis [{RUN_DAY}] = {runtime.load('published_kpis', RUN_DAY)}")

        step("6. status and lineage")
        flowstone_cli("status", "--defs", DEFS_SPEC, env=env)
        flowstone_cli("lineage", "published_kpis", "--partition", str(RUN_DAY), "--defs", DEFS_SPEC, env=env)
    except BaseException:
        say(f"-- the demo failed; the end of the worker's log ({log_path}):")
        for line in log_path.read_text().splitlines()[-30:]:
            say(f"   {line}")
        raise
    finally:
        step("7. stop the worker")
        say(f"worker stopped (exit status {stop_worker(worker)}); its log: {log_path}")
        runtime.close()

    ok = done.status == "succeeded" and finished.status == "succeeded"
    say()
    say(f"demo {'succeeded' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
